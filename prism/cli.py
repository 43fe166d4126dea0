"""The `prism` command: run sweeps, watch them live, read their results.

    prism run train.py -p lr=loguniform:1e-4:1e-1 -p layers=1,2,3 --trials 20 --objective loss:min
    prism run train.py -p lr=loguniform:1e-4:1e-1 --objective loss --sampler tpe --trials 50 \
        --prune asha --target 0.05 --max-duration 3600
    prism run sweep.toml          a spec file (TOML, YAML or JSON; see prism.specfile)
    prism watch ID                the live display again, or one line per event
    prism show ID                 the trial table and the best trial
    prism sweeps                  the latest sweeps
    prism logs ID N [--follow]    a trial's stdout and stderr
    prism artifacts ID N [-o DIR] a trial's files, or download them
    prism cancel ID

It talks gRPC to the gateway (PRISM_ADDRESS, default 127.0.0.1:8080; the orchestrator's own
port works too) with the token from PRISM_API_TOKEN, PRISM_API_TOKEN_FILE or, failing both,
$PRISM_DATA_DIR/api_token (what `make up` generates). Every read takes --json.

Exit status:
    0   done: the sweep finished and no trial failed (or the command did what it said): every
        trial succeeded, or was pruned, or was cancelled by the sweep's target or deadline
    1   the service answered with an error (no such sweep, a refused token, a failure of its own)
    2   usage: a wrong command line or spec file, or a spec the service refused as invalid
    3   the service could not be reached, or did not answer in time
    4   the sweep finished with trials that failed, or with no trial succeeded
    5   the sweep was cancelled
    130 interrupted: detached from the sweep, which runs on
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from google.protobuf import timestamp_pb2
from rich.console import Console
from rich.live import Live
from rich.text import Text

from prism import display, specfile
from prism.client import (
    ApiError,
    Client,
    DeadlineExceeded,
    Event,
    InvalidArgument,
    Unavailable,
    UnsafeArtifactName,
    spec_message,
)
from prism.environ import env
from prism.v1 import orchestrator_pb2

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_TRIALS_FAILED, EXIT_CANCELLED, EXIT_DETACHED = 4, 5, 130
# Tables' width when the output is not a terminal.
WIDE = 200
DETACHED = (
    "detached from sweep {id}: it runs on. Re-attach: prism watch {id}  Stop it: prism cancel {id}"
)


class Usage(Exception):
    """A wrong command line; exit status 2."""


def print_json(value: Any) -> None:
    # ASCII only: a trial's C1 controls or bidi marks reach the terminal as \u escapes.
    print(json.dumps(value, indent=2))


def event_json(event: Event) -> dict[str, Any]:
    """An event as the HTTP API shows it (`GET /v1/sweeps/{id}/events`)."""
    return {
        "seq": event.seq,
        "kind": event.kind,
        "trialIndex": -1 if event.trial_index is None else event.trial_index,
        "data": event.data,
        "time": _timestamp(event.time),
        "final": event.final,
        "sweepState": event.sweep_state,
    }


def _timestamp(seconds: float) -> str:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(round(seconds * 1e6))
    return stamp.ToJsonString()


# Why a sweep stopped before its last trial on purpose (its target reached, its deadline
# passed): the trials the stop cancelled did not fail.
STOPPED_ON_PURPOSE = ("target_reached", "deadline")


def sweep_status(sweep: orchestrator_pb2.Sweep) -> int:
    """The exit status a finished sweep gives: a pruned trial was stopped on purpose, as
    was one a target or deadline cancelled; neither is a failure. A sampler that failed
    is, whatever the trials did."""
    if sweep.state == "cancelled":
        return EXIT_CANCELLED
    if sweep.stop_reason == "search_failed":
        return EXIT_TRIALS_FAILED
    if sweep.state != "done":
        return EXIT_TRIALS_FAILED if sweep.state == "error" else EXIT_OK
    if sweep.counts.succeeded + sweep.counts.pruned == sweep.counts.total:
        return EXIT_OK
    stopped = sweep.stop_reason in STOPPED_ON_PURPOSE
    failed = [
        t
        for t in sweep.trials
        if t.outcome not in ("succeeded", "pruned") and not (stopped and t.outcome == "cancelled")
    ]
    return EXIT_TRIALS_FAILED if failed or not sweep.trials else EXIT_OK


# Following a sweep.


def follow(prism: Client, sweep_id: str, out: Console, args: argparse.Namespace) -> int:
    """Watch the sweep to its end (live, as lines, or as JSON lines) and print its summary;
    Ctrl-C detaches, leaving it running."""
    try:
        if args.json:
            for event in prism.watch(sweep_id):
                print(json.dumps(event_json(event)), flush=True)
            return sweep_status(prism.get(sweep_id, all_trials=True))
        progress = display.Progress(prism.get(sweep_id))
        live = out.is_terminal and not args.plain
        if live:
            with Live(progress, console=out, refresh_per_second=4):
                for event in prism.watch(sweep_id):
                    _keep_up(prism, progress, event)
        else:
            for event in prism.watch(sweep_id):
                _keep_up(prism, progress, event)
                line = progress.line(event)
                if line is not None:
                    out.print(Text(line), soft_wrap=True)
        final = prism.get(sweep_id, all_trials=True)
    except KeyboardInterrupt:
        out.print(Text(DETACHED.format(id=sweep_id)), style="yellow", soft_wrap=True)
        return EXIT_DETACHED
    for text in [] if live else display.summary(final):  # the live display's last frame has it
        out.print(text, soft_wrap=True)
    out.print(Text(f"trials: prism show {sweep_id}", style="dim"))
    return sweep_status(final)


def _keep_up(prism: Client, progress: display.Progress, event: Any) -> None:
    index = progress.apply(event)
    if index is None:
        return
    try:
        progress.finished(prism.trial(progress.sweep_id, index))
    except (Unavailable, DeadlineExceeded):
        pass  # the service is restarting: the watch reconnects, the summary reads it all


# The commands.


def run(prism: Client, args: argparse.Namespace, out: Console) -> int:
    spec = build_spec(args)
    try:
        message = spec_message(spec)
    except InvalidArgument as error:
        raise Usage(f"{args.target}: {error.message}") from None
    sweep = prism.create(message, request_id=args.request_id or "")
    if args.detach:
        if args.json:
            print_json(display.struct(sweep))
        else:
            print(sweep.id)
        return EXIT_OK
    return follow(prism, sweep.id, out, args)


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The spec `prism run` sends, from a script and flags or from a spec file."""
    target = Path(args.target)
    limits = {
        "wallSeconds": args.wall,
        "memoryMb": args.memory,
        "cpus": args.cpus,
    }
    flags = {
        "task": args.task,
        "maxParallel": args.max_parallel,
        "retries": args.retries,
        "maxDurationSeconds": args.max_duration,
        "objective": args.objective,
        "target": args.target_value,
        "requirements": args.requirement,
        "limits": limits,
    }
    searching = (args.sampler, args.prune, args.prune_metric, args.step_key)
    if target.suffix in specfile.SPEC_SUFFIXES:
        given = (args.trials, args.seed, *searching)
        if args.param or args.prune_setting or any(g is not None for g in given):
            raise specfile.SpecError(
                "-p, --trials, --seed, --sampler and --prune (with its --prune-metric, "
                "--prune-setting and --step-key) go with a script; a spec file has them"
            )
        return specfile.overridden(specfile.load(target), flags)
    if target.suffix != ".py":
        raise specfile.SpecError(
            f"{args.target}: expected a trial script (.py) or a spec file "
            f"({', '.join(specfile.SPEC_SUFFIXES)})"
        )
    spec: dict[str, Any] = {"task": f"run {target.name}", "script": specfile.read_script(target)}
    space = specfile.parameters(args.param, args.trials, args.seed, args.sampler)
    if space is not None:
        spec["parameters"] = space
    if args.sampler is not None:
        if not args.objective:
            raise specfile.SpecError("--sampler learns from the objective: give --objective")
        spec["search"] = specfile.search(args.sampler, args.trials, args.seed)
    if args.prune is not None:
        if args.sampler is None:
            raise specfile.SpecError(
                "--prune stops the trials of an adaptive search: give --sampler too "
                "(--sampler grid for listed values)"
            )
        spec["earlyStopping"] = specfile.early_stopping(
            args.prune, args.prune_metric, args.step_key, args.prune_setting
        )
    elif args.prune_setting or args.prune_metric is not None or args.step_key is not None:
        raise specfile.SpecError("--prune-metric, --prune-setting and --step-key go with --prune")
    return specfile.overridden(spec, flags)


def watch(prism: Client, args: argparse.Namespace, out: Console) -> int:
    return follow(prism, args.sweep_id, out, args)


def show(prism: Client, args: argparse.Namespace, out: Console) -> int:
    sweep = prism.get(args.sweep_id, all_trials=True)
    if args.json:
        print_json(display.struct(sweep))
        return EXIT_OK
    out.print(display.trials_table(sweep))
    for line in display.summary(sweep):
        out.print(line, soft_wrap=True)
    return EXIT_OK


def sweeps(prism: Client, args: argparse.Namespace, out: Console) -> int:
    found = []
    for sweep in prism.list(page_size=min(args.limit or 100, 100)):
        found.append(sweep)
        if args.limit and len(found) >= args.limit:
            break
    if args.json:
        print_json([display.struct(s) for s in found])
    elif found:
        out.print(display.sweeps_table(found, time.time()))
    else:
        out.print("no sweeps yet: prism run train.py -p lr=0.1,0.01")
    return EXIT_OK


def logs(prism: Client, args: argparse.Namespace, out: Console) -> int:
    if args.follow:
        _wait_for_trial(prism, args.sweep_id, args.index, out)
    found = prism.logs(args.sweep_id, args.index)
    if args.json:
        print_json(display.struct(found))
        return EXIT_OK
    shown = (lambda text: text) if args.raw else _safe
    sys.stdout.write(shown(found.stdout))
    sys.stdout.flush()
    sys.stderr.write(shown(found.stderr))
    if found.truncated:
        print("prism: the output passed the trial's limit and was cut", file=sys.stderr)
    return EXIT_OK


def _safe(text: str) -> str:
    return display.clean(text, keep_newlines=True)


def _wait_for_trial(prism: Client, sweep_id: str, index: int, out: Console) -> None:
    """Until the trial has finished: the runner hands a trial's output over when it ends.
    Its metric lines are shown meanwhile, on stderr when it is a terminal."""
    if prism.trial(sweep_id, index).state == "finished":
        return
    err = Console(stderr=True, highlight=False)
    for event in prism.watch(sweep_id):
        if event.trial_index == index and event.kind == "metric" and err.is_terminal:
            values = event.data.get("values", {})
            err.print(Text(f"trial {index} {display.short(display.metrics_text(values), 200)}"))
        if (event.trial_index == index and event.kind == "trial_finished") or event.final:
            return


def artifacts(prism: Client, args: argparse.Namespace, out: Console) -> int:
    if args.output:
        written = prism.download(args.sweep_id, args.index, args.output)
        if args.json:
            print_json([str(p) for p in written])
        for path in written if not args.json else []:
            out.print(Text(display.clean(str(path))), soft_wrap=True)
        return EXIT_OK
    found = prism.artifacts(args.sweep_id, args.index)
    if args.json:
        print_json(display.struct(found))
        return EXIT_OK
    for artifact in found.artifacts:
        out.print(Text(f"{artifact.size_bytes:>10}  {display.clean(artifact.name)}"))
    for name in found.skipped:
        out.print(Text(f"{'skipped':>10}  {display.clean(name)}", style="dim"))
    if not found.artifacts and not found.skipped:
        out.print("no artifacts (a trial's are the files it leaves in /workspace/output)")
    return EXIT_OK


def cancel(prism: Client, args: argparse.Namespace, out: Console) -> int:
    sweep = prism.cancel(args.sweep_id)
    if args.json:
        print_json(display.struct(sweep))
    else:
        out.print(Text(f"sweep {sweep.id} {sweep.state}"))
    return EXIT_OK


# The demo's own calls, which the client has no wrappers for.


def examples(prism: Client, args: argparse.Namespace, out: Console) -> int:
    request = orchestrator_pb2.RunSweepRequest(task=args.task)
    print_json(display.struct(prism.call("RunSweep", request, timeout=300)))
    return EXIT_OK


def landing(prism: Client, args: argparse.Namespace, out: Console) -> int:
    print_json(display.struct(prism.call("GetLanding", orchestrator_pb2.GetLandingRequest())))
    return EXIT_OK


def status(prism: Client, args: argparse.Namespace, out: Console) -> int:
    request = orchestrator_pb2.GetSweepStatusRequest(sweep_id=args.sweep_id)
    print_json(display.struct(prism.call("GetSweepStatus", request)))
    return EXIT_OK


# The command line.


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="prism",
        description="Run sweeps of sandboxed trials, watch them, read their results.",
        epilog="Exit status: 0 done, 1 service error, 2 usage, 3 unreachable, "
        "4 trials failed (pruned trials, and those a target or deadline cancelled, did not), "
        "5 cancelled, 130 detached.",
    )
    top.add_argument(
        "--address", default=env("PRISM_ADDRESS", "127.0.0.1:8080"), help="the gateway"
    )
    top.add_argument("--token", default=None, help="default: from the environment")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    reads = argparse.ArgumentParser(add_help=False)
    reads.add_argument("--json", action="store_true", help="print the API's JSON")
    following = argparse.ArgumentParser(add_help=False, parents=[reads])
    following.add_argument(
        "--plain", action="store_true", help="one line per event, even on a terminal"
    )

    run_ = commands.add_parser(
        "run",
        parents=[following],
        help="start a sweep and watch it",
        description=specfile.FLAGS_HELP,
    )
    run_.formatter_class = argparse.RawDescriptionHelpFormatter
    run_.add_argument("target", help="a trial script (.py) or a spec file (.toml .yaml .json)")
    run_.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUES")
    run_.add_argument(
        "--trials",
        type=_positive,
        help="random search: this many parameter sets; with --sampler: its budget",
    )
    run_.add_argument("--seed", type=int, help="random search or --sampler: its seed (default 0)")
    run_.add_argument("--objective", metavar="METRIC[:min|max]", help="the metric to optimise")
    run_.add_argument(
        "--sampler",
        choices=specfile.SAMPLERS,
        help="adaptive search: ask for each trial's parameters from the results so far",
    )
    run_.add_argument(
        "--prune",
        choices=specfile.RULES,
        help="stop losing trials early on their live metrics (needs --sampler)",
    )
    run_.add_argument(
        "--prune-metric",
        metavar="METRIC[:min|max]",
        help="the metric --prune judges (default: the objective's)",
    )
    run_.add_argument(
        "--step-key", metavar="KEY", help="the metric line's key holding the step (default: step)"
    )
    run_.add_argument(
        "--prune-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the --prune rule, e.g. reductionFactor=2",
    )
    run_.add_argument(
        "--target",
        dest="target_value",
        type=_finite,
        metavar="VALUE",
        help="end the sweep once a trial's objective is VALUE or better",
    )
    run_.add_argument(
        "--max-duration",
        type=_finite,
        metavar="SECONDS",
        help="end the sweep this long after it started",
    )
    run_.add_argument("--task", help="what the sweep is for (default: run SCRIPT)")
    run_.add_argument("--max-parallel", type=int, metavar="N", help="trials at once (0: no cap)")
    run_.add_argument(
        "-r", "--requirement", action="append", default=[], metavar="SPEC", help="a pip package"
    )
    run_.add_argument("--wall", type=float, metavar="SECONDS", help="a trial's time limit")
    run_.add_argument("--memory", type=int, metavar="MB", help="a trial's memory limit")
    run_.add_argument("--cpus", type=float, help="a trial's CPU limit")
    run_.add_argument("--retries", type=int, help="re-runs after an infrastructure failure")
    run_.add_argument("--request-id", help="a retried run with the same id starts nothing new")
    run_.add_argument("--detach", action="store_true", help="print the sweep's id and return")
    run_.set_defaults(handler=run)

    watch_ = commands.add_parser("watch", parents=[following], help="follow a sweep to its end")
    watch_.add_argument("sweep_id")
    watch_.set_defaults(handler=watch)
    show_ = commands.add_parser("show", parents=[reads], help="a sweep's trials and best trial")
    show_.add_argument("sweep_id")
    show_.set_defaults(handler=show)
    sweeps_ = commands.add_parser("sweeps", parents=[reads], help="the latest sweeps")
    sweeps_.add_argument("--limit", type=_count, default=20, help="how many (0: all)")
    sweeps_.set_defaults(handler=sweeps)
    logs_ = commands.add_parser("logs", parents=[reads], help="a trial's stdout and stderr")
    logs_.add_argument("sweep_id")
    logs_.add_argument("index", type=int)
    logs_.add_argument("--follow", "-f", action="store_true", help="wait for the trial's end")
    logs_.add_argument("--raw", action="store_true", help="control characters as they are")
    logs_.set_defaults(handler=logs)
    artifacts_ = commands.add_parser("artifacts", parents=[reads], help="a trial's files")
    artifacts_.add_argument("sweep_id")
    artifacts_.add_argument("index", type=int)
    artifacts_.add_argument("-o", "--output", metavar="DIR", help="download them into DIR")
    artifacts_.set_defaults(handler=artifacts)
    cancel_ = commands.add_parser("cancel", parents=[reads], help="stop a sweep")
    cancel_.add_argument("sweep_id")
    cancel_.set_defaults(handler=cancel)

    examples_ = commands.add_parser(
        "examples", help="the demo's default sweep (its three example runners) for a task"
    )
    examples_.add_argument("task")
    examples_.set_defaults(handler=examples)
    commands.add_parser("landing", help="what the service is").set_defaults(handler=landing)
    status_ = commands.add_parser("status", help="the demo's view of a sweep")
    status_.add_argument("sweep_id")
    status_.set_defaults(handler=status)
    return top


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text}")
    return value


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, not {text}")
    return value


@contextmanager
def _errors() -> Iterator[None]:
    """Errors as one line on stderr and the documented exit status."""
    try:
        yield
    except (Usage, specfile.SpecError) as error:
        _fail(EXIT_USAGE, str(error))
    except InvalidArgument as error:
        details = "".join(f"\n  {v.field}: {v.description}" for v in error.violations)
        _fail(EXIT_USAGE, f"invalid_argument: {error.message}{details}")
    except (Unavailable, DeadlineExceeded) as error:
        _fail(EXIT_UNREACHABLE, f"{error.code.name.lower()}: {error.message}")
    except ApiError as error:
        _fail(EXIT_ERROR, f"{error.code.name.lower()}: {error.message}")
    except UnsafeArtifactName as error:
        _fail(EXIT_ERROR, str(error))
    except OSError as error:  # a folder or file of this machine: -o DIR, a token file
        _fail(EXIT_ERROR, f"{error.filename or ''}: {error.strerror or error}")
    except KeyboardInterrupt:
        _fail(EXIT_DETACHED, "interrupted")


def _fail(code: int, message: str) -> NoReturn:
    print(f"prism: {display.clean(message, keep_newlines=True)}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    handler: Callable[[Client, argparse.Namespace, Console], int] = args.handler
    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(highlight=False, width=WIDE)  # a pipe or a file: lines as long as needed
    with _errors(), Client(args.address, args.token) as prism:
        sys.exit(handler(prism, args, out))


if __name__ == "__main__":
    main()
