"""Fault injection: SIGKILL of the orchestrator and of runners at seeded random
instants while sweeps run, each restarted at once. Afterwards every sweep is
complete, every trial's result is recorded exactly once, and no execution a
runner had finished ran again.

Some sweeps are adaptive (Optuna's TPE, CMA-ES and random samplers, ASHA stopping
trials on the metrics they print at each step), and the search goes on after each
kill as if nothing happened: each asks for exactly its budget; its journal, replayed
in one process that never stopped, writes what was recorded (tests.search_journal:
the same parameters, pruning decisions and ends, told the same things in the same
order) and agrees with its trials and events; what the store held when the
orchestrator was killed is still there, a trial pruned then still pruned at the same
step; and a sweep that runs one trial at a time asks for the parameters a store that
was never killed asks for when told what it was told. At least one kill comes while
such a sweep runs with a trial already pruned.

Bounded: PRISM_FAULT_SECONDS of faults (default 45), then the sweeps settle.
Prints one line of counts. The same checks run longer with bench/soak.py."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from orchestrator_svc import store
from prism.stack import ORCHESTRATOR
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests import search_journal
from tests.conftest import RunningStack, StackFactory, wait_until

WORK = """\
import json, os, time
p = json.loads(os.environ["PRISM_PARAMS"])
time.sleep(p["s"])
print(json.dumps({"i": p["i"]}))
"""

# An adaptive sweep's trial: its curve one metric a step, then its last value as the
# objective. (The curve is `curve` below, written alike.)
STEPS = 5
ADAPTIVE = f"""\
import json, os, time
p = json.loads(os.environ["PRISM_PARAMS"])
for step in range(1, {STEPS} + 1):
    loss = (p["x"] - 1) ** 2 + (p["y"] + 2) ** 2 + 4 / step
    print("PRISM_METRIC " + json.dumps({{"step": step, "loss": loss}}), flush=True)
    time.sleep(0.15)
print(json.dumps({{"loss": loss}}))
"""

# (sampler, trials, maxParallel), taken in turn: TPE past its 10 random startup trials,
# one trial at a time, so that its course can be run again without the kills.
ADAPTIVE_KINDS = [("tpe", 12, 1), ("cmaes", 8, 3), ("random", 6, 2)]
# No adaptive sweep is created this close to the end of the faults (they take longer),
# nor one that runs a trial at a time this close (it takes longest).
ADAPTIVE_BEFORE_END = 25.0
ONE_AT_A_TIME_BEFORE_END = 35.0


def curve(params: dict[str, float], step: int) -> float:
    return (params["x"] - 1) ** 2 + (params["y"] + 2) ** 2 + 4 / step


@dataclass
class Counts:
    sweeps: int = 0
    trials: int = 0
    kills: dict[str, int] = field(default_factory=lambda: {"orchestrator": 0, "runner": 0})
    reexecuted: int = 0
    lost: int = 0
    # Trials whose every retry met an infrastructure failure: recorded, not lost.
    exhausted: int = 0
    # The adaptive sweeps' samplers, in the order they were created.
    samplers: list[str] = field(default_factory=list)
    pruned: int = 0
    # Orchestrator kills while a sweep running one trial at a time had one pruned.
    kills_after_pruning: int = 0
    # What the adaptive sweeps' checks found wrong, as sentences.
    search_problems: list[str] = field(default_factory=list)
    # Metric lines adaptive trials printed that their rule was never told.
    untold: int = 0
    # How long the sweeps took to complete once the faults stopped.
    settle_seconds: float = 0.0

    def line(self) -> str:
        return (
            f"fault injection: sweeps={self.sweeps} (adaptive={len(self.samplers)}: "
            f"{', '.join(f'{s}={n}' for s, n in Counter(self.samplers).items())}) "
            f"trials={self.trials} (pruned={self.pruned}, untold_steps={self.untold}) "
            f"kills={sum(self.kills.values())} (orchestrator={self.kills['orchestrator']}, "
            f"runner={self.kills['runner']}, after_pruning={self.kills_after_pruning}) "
            f"reexecuted_finished={self.reexecuted} lost_results={self.lost} "
            f"retries_exhausted={self.exhausted} search_problems={len(self.search_problems)} "
            f"settled_in={self.settle_seconds:.0f}s"
        )


def call(stack: RunningStack, method: str, request: object, timeout: float = 5) -> object | None:
    """One API call; None while the orchestrator is down or recovering."""
    try:
        with stack.channel() as channel:
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            return getattr(stub, method)(request, metadata=stack.metadata(), timeout=timeout)
    except grpc.RpcError as error:
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return None
        raise


def create(stack: RunningStack, rng: random.Random, number: int) -> str:
    params = [{"i": i, "s": rng.uniform(0.1, 1.5)} for i in range(rng.randint(2, 6))]
    spec = {
        "task": f"faults {number}",
        "script": WORK,
        "retries": 5,
        "parameters": {"list": params},
    }
    return submit(stack, spec, number)


def create_adaptive(stack: RunningStack, number: int, kind: tuple[str, int, int]) -> str:
    sampler, trials, parallel = kind
    space = {"x": {"uniform": [-4, 4]}, "y": {"uniform": [-4, 4]}}
    spec = {
        "task": f"faults {number} {sampler}",
        "script": ADAPTIVE,
        "retries": 5,
        "parameters": {"random": {"parameters": space}},
        "objective": {"metric": "loss"},
        "search": {"sampler": sampler, "trials": trials, "seed": number},
        "earlyStopping": {"rule": "asha", "minResource": 1, "reductionFactor": 2},
        "maxParallel": parallel,
    }
    return submit(stack, spec, number)


def submit(stack: RunningStack, spec: dict[str, Any], number: int) -> str:
    body = json_format.ParseDict(spec, orchestrator_pb2.SweepSpec())
    request = orchestrator_pb2.CreateSweepRequest(sweep=body, request_id=f"faults-{number}")
    # Retried with the same request id while the orchestrator is away: a
    # retried create never makes a second sweep.
    reply = wait_until(lambda: call(stack, "CreateSweep", request), what="a create to land")
    return str(reply.id)  # type: ignore[attr-defined]


@dataclass
class Held:
    """What the store held of the adaptive sweeps while the orchestrator was dead."""

    journals: dict[str, list[str]]
    # (sweep, position) -> (params, pruned step, pruned value)
    trials: dict[tuple[str, int], tuple[str, int | None, float | None]]
    # Sweeps that were running with a trial pruned.
    pruning: set[str]


def held(stack: RunningStack, adaptive: list[str]) -> Held:
    found = Held({}, {}, set())
    for sweep_id in adaptive:
        found.journals[sweep_id] = [body for (body,) in journal(stack, sweep_id)]
        for position, params, step, value in stack.orchestrator_query(
            "SELECT position, params_json, pruned_step, pruned_value FROM trial WHERE sweep_id = ?",
            sweep_id,
        ):
            found.trials[sweep_id, position] = (params, step, value)
    if adaptive:
        marks = ",".join("?" for _ in adaptive)
        found.pruning = {
            sweep_id
            for (sweep_id,) in stack.orchestrator_query(
                "SELECT DISTINCT sweep.id FROM trial JOIN sweep ON sweep.id = trial.sweep_id "
                "WHERE sweep.finished_at IS NULL AND trial.pruned_step IS NOT NULL "
                f"AND sweep.id IN ({marks})",
                *adaptive,
            )
        }
    return found


def journal(stack: RunningStack, sweep_id: str) -> list[tuple[Any, ...]]:
    return stack.orchestrator_query(
        "SELECT body FROM searchlog WHERE sweep_id = ? ORDER BY number", sweep_id
    )


def run_faults(stack: RunningStack, seconds: float, seed: int) -> Counts:
    rng = random.Random(seed)
    counts = Counts()
    sweeps: list[str] = []
    adaptive: list[str] = []
    one_at_a_time: list[str] = []
    snapshots: list[Held] = []
    services = [ORCHESTRATOR, *stack.layout.runners]

    def kill(victim: str, down: float) -> None:
        stack.stack.kill(victim)
        counts.kills["orchestrator" if victim == ORCHESTRATOR else "runner"] += 1
        if victim == ORCHESTRATOR:
            snapshots.append(held(stack, adaptive))
            counts.kills_after_pruning += bool(snapshots[-1].pruning & {*one_at_a_time})
        time.sleep(down)
        stack.stack.start(victim)
        stack.stack.wait_ready(victim)

    def finished(sweep_id: str) -> bool:
        [(at,)] = stack.orchestrator_query("SELECT finished_at FROM sweep WHERE id = ?", sweep_id)
        return at is not None

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = deadline - time.monotonic()
        if len(sweeps) % 3 == 0 and left > ADAPTIVE_BEFORE_END:
            kinds = [k for k in ADAPTIVE_KINDS if k[2] > 1 or left > ONE_AT_A_TIME_BEFORE_END]
            kind = min(kinds, key=lambda k: counts.samplers.count(k[0]))  # each in turn
            counts.samplers.append(kind[0])
            adaptive.append(create_adaptive(stack, len(sweeps), kind))
            sweeps.append(adaptive[-1])
            if kind[2] == 1:
                one_at_a_time.append(adaptive[-1])
        else:
            sweeps.append(create(stack, rng, len(sweeps)))
        time.sleep(rng.uniform(0.0, 1.0))
        # Until it has happened once, the orchestrator dies when a sweep running one
        # trial at a time has one pruned.
        forced = not counts.kills_after_pruning and bool(held(stack, one_at_a_time).pruning)
        if rng.random() < 0.6 or forced:
            drawn = rng.choice(services)
            kill(ORCHESTRATOR if forced else drawn, rng.uniform(0.0, 0.5))
    # If the faults ended before such a sweep had pruned, that kill comes when it has.
    while not counts.kills_after_pruning and not all(map(finished, one_at_a_time)):
        if held(stack, one_at_a_time).pruning:
            kill(ORCHESTRATOR, 0.0)
        time.sleep(0.1)
    settling = time.monotonic()
    for sweep_id in sweeps:
        settle(stack, sweep_id)
    counts.settle_seconds = time.monotonic() - settling
    counts.sweeps = len(sweeps)
    check(stack, sweeps, counts, set(adaptive))
    for sweep_id in adaptive:
        counts.search_problems += [
            f"sweep {sweep_id}: {problem}" for problem in check_search(stack, sweep_id)
        ]
    counts.search_problems += check_held(stack, snapshots)
    return counts


def settle(stack: RunningStack, sweep_id: str, timeout: float = 180) -> None:
    def complete() -> bool:
        sweep = call(stack, "GetSweep", orchestrator_pb2.GetSweepRequest(sweep_id=sweep_id))
        return sweep is not None and bool(sweep.finish_time.seconds)  # type: ignore[attr-defined]

    try:
        wait_until(complete, timeout, f"sweep {sweep_id} to complete")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{diagnose(stack, sweep_id)}") from None


def diagnose(stack: RunningStack, sweep_id: str) -> str:
    """What a stuck sweep's trials look like on every side, and the logs about it."""
    lines = ["orchestrator trials (position, state, attempts, runner, outcome, not_before):"]
    lines += map(
        str,
        stack.orchestrator_query(
            "SELECT position, state, attempts, runner, outcome, not_before - strftime('%s') "
            "FROM trial WHERE sweep_id = ? ORDER BY position",
            sweep_id,
        ),
    )
    lines.append("events:")
    lines += map(
        str,
        stack.orchestrator_query(
            "SELECT seq, kind, trial_index, data FROM event WHERE sweep_id = ? ORDER BY seq",
            sweep_id,
        ),
    )
    for runner in stack.layout.runners:
        with closing(sqlite3.connect(stack.runner_db(runner))) as db:
            rows = db.execute(
                "SELECT id, state, outcome FROM trial WHERE id LIKE ?", (f"{sweep_id}%",)
            ).fetchall()
        lines.append(f"{runner}: {rows}")
    for service in stack.layout.services:
        path = stack.layout.log_file(service)
        if path.exists():
            about = [line for line in path.read_text().splitlines() if sweep_id in line]
            lines.append(f"{service} log ({len(about)} lines about it):")
            lines += about[-20:]
    return "\n".join(lines)


def check(stack: RunningStack, sweeps: list[str], counts: Counts, adaptive: set[str]) -> None:
    executions: dict[str, int] = {}
    finished_on_runner: dict[str, str] = {}
    for runner in stack.layout.runners:
        with closing(sqlite3.connect(stack.runner_db(runner))) as db:
            for trial_id, n in db.execute("SELECT trial_id, COUNT(*) FROM execution GROUP BY 1"):
                executions[trial_id] = executions.get(trial_id, 0) + n
            for trial_id, outcome in db.execute(
                "SELECT id, outcome FROM trial WHERE state = 'finished'"
            ):
                finished_on_runner[trial_id] = outcome
    # A runner never starts an execution id twice.
    counts.reexecuted += sum(n - 1 for n in executions.values() if n > 1)
    for sweep_id in sweeps:
        sweep = call(stack, "GetSweep", orchestrator_pb2.GetSweepRequest(sweep_id=sweep_id))
        assert sweep is not None
        for trial in sweep.trials:  # type: ignore[attr-defined]
            counts.trials += 1
            trial_id = f"{sweep_id}/{trial.index}"
            if trial.state == "finished" and trial.outcome == "sandbox_error":
                counts.exhausted += 1
                continue
            if sweep_id not in adaptive:
                kept = trial.outcome == "succeeded" and dict(trial.metrics) == {
                    "i": float(trial.index)
                }
            elif trial.outcome == "pruned":
                counts.pruned += 1
                kept = True
            else:  # its result is its own curve's
                params = json_format.MessageToDict(trial.params)
                kept = trial.outcome == "succeeded" and dict(trial.metrics) == {
                    "loss": curve(params, STEPS)
                }
            if sweep_id in adaptive and trial.outcome in ("succeeded", "pruned"):
                # Steps it printed up to its end that its rule was not told: what it
                # printed while the orchestrator was away is not sent again.
                printed = trial.pruned_step if trial.outcome == "pruned" else STEPS
                counts.untold += printed - len(trial.intermediate_values)
            if trial.state != "finished" or not kept:
                counts.lost += 1
                continue
            # An execution finished (with the trial's own outcome) on a runner
            # was never followed by another one.
            for attempt in range(1, trial.attempts):
                earlier = trial_id if attempt == 1 else f"{trial_id}@{attempt}"
                if finished_on_runner.get(earlier) == "succeeded":
                    counts.reexecuted += 1
        recorded = stack.orchestrator_query(
            "SELECT trial_index, COUNT(*) FROM event WHERE sweep_id = ? "
            "AND kind = 'trial_finished' GROUP BY 1",
            sweep_id,
        )
        counts.lost += sum(1 for _, n in recorded if n != 1)


def check_search(stack: RunningStack, sweep_id: str) -> list[str]:
    """tests.search_journal's checks of an adaptive sweep as the store holds it, and
    for one that ran a trial at a time, the parameters and pruning decisions of a
    store never killed, told what this one was told."""
    [(spec_json,)] = stack.orchestrator_query("SELECT spec_json FROM sweep WHERE id = ?", sweep_id)
    spec = store.read_spec(spec_json)
    logs = [json.loads(body) for (body,) in journal(stack, sweep_id)]
    rows = [
        search_journal.TrialRow(*row)
        for row in stack.orchestrator_query(
            "SELECT position, params_json, state, outcome, result_json, pruned_step, "
            "pruned_value, intermediate_json FROM trial WHERE sweep_id = ? ORDER BY position",
            sweep_id,
        )
    ]
    pruned = [
        (index, json.loads(data))
        for index, data in stack.orchestrator_query(
            "SELECT trial_index, data FROM event WHERE sweep_id = ? AND kind = 'trial_pruned' "
            "ORDER BY seq",
            sweep_id,
        )
    ]
    problems = search_journal.check_sweep(sweep_id, spec, logs, rows, pruned)
    if spec.get("maxParallel") == 1 and not problems:
        again = stack.layout.data_dir / f"never-killed-{sweep_id}.db"
        problems += search_journal.never_killed(sweep_id, spec, rows, again)
    return problems


def check_held(stack: RunningStack, snapshots: list[Held]) -> list[str]:
    """Nothing the store held when the orchestrator was killed was undone or decided
    again: each journal goes on from where it was, each trial asked for keeps its
    parameters, each trial pruned ended pruned, at the same step."""
    problems = []
    final = held(stack, sorted({s for snapshot in snapshots for s in snapshot.journals}))
    for kill, snapshot in enumerate(snapshots):
        for sweep_id, logs in snapshot.journals.items():
            if final.journals[sweep_id][: len(logs)] != logs:
                problems.append(f"kill {kill}: sweep {sweep_id}'s journal was rewritten")
        for (sweep_id, position), (params, step, value) in snapshot.trials.items():
            now = final.trials.get((sweep_id, position))
            if now is None or now[0] != params:
                problems.append(f"kill {kill}: {sweep_id}/{position} was {params}, now {now}")
            elif step is not None and now[1:] != (step, value):
                problems.append(
                    f"kill {kill}: {sweep_id}/{position} pruned at {step}, now {now[1:]}"
                )
    pruned = stack.orchestrator_query(
        "SELECT id, outcome FROM trial WHERE pruned_step IS NOT NULL AND outcome != 'pruned'"
    )
    problems += [f"{trial_id} was pruned, ended {outcome}" for trial_id, outcome in pruned]
    return problems


def test_sigkill_anywhere_loses_nothing_and_reruns_nothing(
    make_stack: StackFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = make_stack(gateway=False, env={"PRISM_RECONCILE_SECONDS": "5"})
    seed = int(os.environ.get("PRISM_FAULT_SEED", "20261129"))
    counts = run_faults(stack, float(os.environ.get("PRISM_FAULT_SECONDS", "45")), seed)
    with capsys.disabled():  # the counts belong in CI's output
        print(f"\n{counts.line()} seed={seed}")
    assert counts.sweeps > 0 and sum(counts.kills.values()) > 0
    assert set(counts.samplers) == {k[0] for k in ADAPTIVE_KINDS}, counts.line()
    assert counts.pruned > 0, counts.line()
    assert counts.kills_after_pruning > 0, counts.line()
    assert (counts.reexecuted, counts.lost) == (0, 0), counts.line()
    assert counts.search_problems == [], "\n".join(counts.search_problems)
