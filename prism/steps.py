"""`make demo` and `make up` as one line per step, their output kept in a log.

    python3 -m prism.steps demo|up --venv .venv --stamp .venv/.installed

Each step is a command. On a terminal its line shows the time so far and the
command's latest output while it runs; when it ends, the line holds the result and
the duration (elsewhere only that final line is printed, with no escape codes):

      ✓ Docker engine        started dockerd, pid 4242 (3.1 s)
      · sandbox image        already built: prism-sandbox:latest

A step's result is the first line its command prints on stdout, and a result with
the word "already" marks a step that had nothing to do. Everything every step
prints, stdout and stderr, goes to one log ($PRISM_DATA_DIR/<command>.log, new for
each run), under a header per step. A failing step ends the run: its line, the last
lines of its output and the log's path, and the step's exit status. The last step's
other stdout lines are the run's ending (the sweep's results, what to try next).

Standard library only, and so is the package's __init__: the first step makes the
virtualenv that the rest runs in, so this runs on the system's python3.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TextIO

TAIL_LINES = 20
_TICK_SECONDS = 0.1
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
# Colours, cursor moves and other control characters in a command's output: the
# live line shows it as plain text, or it would draw over itself.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    # A check run first: when it exits 0 the step has nothing to do.
    skip_if: list[str] | None = None
    skipped: str = "already done"
    # Said when the step's command prints nothing on stdout worth showing.
    result: str | None = None


@dataclass
class _Output:
    """What one command printed: every line into the log as it comes, its stdout
    kept, the last lines of both kept for a failure's report."""

    log: IO[str]
    stdout: list[str] = field(default_factory=list)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    latest: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, pipe: IO[bytes], *, keep: bool) -> None:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip("\r\n")
            with self.lock:
                self.log.write(line + "\n")
                self.log.flush()
                self.tail.append(line)
                if keep:
                    self.stdout.append(line)
                # A progress bar redraws itself with \r: its newest state is last.
                shown = _CONTROL.sub("", line.rsplit("\r", 1)[-1]).strip()
                self.latest = shown or self.latest


def plan(command: str, *, venv: str, stamp: str) -> list[Step]:
    """The steps of `make up`, and of `make demo` (the same, then the sweep)."""
    python = str(Path(venv) / "bin" / "python")
    # The Makefile keeps deciding when the virtualenv needs (re)installing.
    make = ["make", "--no-print-directory", "-s", f"VENV={venv}"]
    steps = [
        Step(
            "Python environment",
            [*make, stamp],
            skip_if=[*make, "-q", stamp],
            skipped=f"already set up in {venv}",
            result=f"installed the package and its extras in {venv}",
        ),
        Step("Docker engine", [python, "-m", "sandbox.engine", "start"]),
        Step("base image", [python, "-m", "sandbox.images", "base"]),
        Step("sandbox image", [python, "-m", "sandbox.images"]),
        Step("services", [python, "-m", "prism.stack", "up"]),
    ]
    if command == "demo":
        steps.append(Step("the sweep", [python, "-m", "prism.stack", "demo"]))
    return steps


def run_steps(
    steps: Sequence[Step], *, log_path: Path, out: TextIO, live: bool | None = None
) -> int:
    """Run the steps in order until one fails; return the exit status for the run."""
    if live is None:
        live = out.isatty() and os.environ.get("TERM") != "dumb"
    width = max(len(step.name) for step in steps)
    # Owner only, as `make up` makes it: the folder holds tokens and databases too.
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    ending: list[str] = []
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# {' '.join(sys.argv)}, {datetime.now().isoformat(timespec='seconds')}\n")
        for step in steps:
            status, output = _run(step, log, out, live=live, width=width)
            if status != 0:
                _report_failure(out, output, log_path)
                return status
            ending = output.stdout[1:]
    while ending and not ending[0].strip():
        ending.pop(0)
    if ending:
        print("", *ending, sep="\n", file=out, flush=True)
    return 0


def _run(step: Step, log: IO[str], out: TextIO, *, live: bool, width: int) -> tuple[int, _Output]:
    output = _Output(log)
    log.write(f"\n==> {step.name}: {' '.join(step.argv)}\n")
    log.flush()
    if step.skip_if is not None and _succeeds(step.skip_if, log):
        log.write(f"<== nothing to do: {step.skipped}\n")
        _line(out, "·", step.name, width, step.skipped, live=live)
        return 0, output
    started = time.monotonic()
    status = _execute(step, output, out, live=live, width=width)
    took = time.monotonic() - started
    log.write(f"<== exit status {status} after {took:.1f} s\n")
    if status != 0:
        verb = "interrupted" if status == 130 else f"failed with exit status {status}"
        _line(out, "✗", step.name, width, f"{verb} ({_duration(took)})", live=live)
        return status, output
    first = _CONTROL.sub("", output.stdout[0]).strip() if output.stdout else ""
    said = step.result or first or "done"
    if "already" in said.split():
        _line(out, "·", step.name, width, said, live=live)
    else:
        _line(out, "✓", step.name, width, f"{said} ({_duration(took)})", live=live)
    return 0, output


def _execute(step: Step, output: _Output, out: TextIO, *, live: bool, width: int) -> int:
    # Unbuffered, so the log and the live line keep up with a Python command.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.Popen(
            step.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
    except OSError as error:
        message = f"cannot run {step.argv[0]}: {error}"
        output.log.write(message + "\n")
        output.tail.append(message)
        return 127
    with proc:
        status = _follow(proc, step.name, output, out, live=live, width=width)
    # Ended by a signal: the status a shell would give.
    return 128 - status if status < 0 else status


def _follow(
    proc: subprocess.Popen[bytes],
    name: str,
    output: _Output,
    out: TextIO,
    *,
    live: bool,
    width: int,
) -> int:
    """Read the command's output until it ends, drawing the live line meanwhile."""
    assert proc.stdout is not None and proc.stderr is not None  # both PIPE
    readers = [
        threading.Thread(target=output.read, args=(proc.stdout,), kwargs={"keep": True}),
        threading.Thread(target=output.read, args=(proc.stderr,), kwargs={"keep": False}),
    ]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    try:
        while True:
            try:
                status = proc.wait(timeout=_TICK_SECONDS if live else None)
                break
            except subprocess.TimeoutExpired:
                _draw(out, name, width, time.monotonic() - started, output.latest)
    except KeyboardInterrupt:
        # The terminal sent the command the same Ctrl-C: let it end as it will.
        proc.wait()
        status = 130
    for reader in readers:
        reader.join()
    return status


def _succeeds(argv: list[str], log: IO[str]) -> bool:
    try:
        return (
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log).returncode == 0
        )
    except OSError:
        return False


def _draw(out: TextIO, name: str, width: int, elapsed: float, latest: str) -> None:
    spinner = _SPINNER[int(elapsed / _TICK_SECONDS) % len(_SPINNER)]
    text = f"  {spinner} {name:<{width}}  {elapsed:4.0f} s  {latest}"
    # One screen line at most, or the carriage return would redraw only its last part.
    columns = shutil.get_terminal_size().columns
    out.write("\r\x1b[K" + text[: max(columns - 1, 0)])
    out.flush()


def _line(out: TextIO, mark: str, name: str, width: int, said: str, *, live: bool) -> None:
    out.write(("\r\x1b[K" if live else "") + f"  {mark} {name:<{width}}  {said}\n")
    out.flush()


def _report_failure(out: TextIO, output: _Output, log_path: Path) -> None:
    if output.tail:
        print("    its last lines:", file=out)
        for line in output.tail:
            print(f"    | {_CONTROL.sub('', line)}", file=out)
    print(f"  full log: {shown(log_path)}", file=out, flush=True)


def shown(path: Path) -> str:
    """The path as typed from here when it is under the current folder."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m prism.steps", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=("demo", "up"))
    parser.add_argument("--venv", default=".venv")
    parser.add_argument("--stamp", default=None, help="default: VENV/.installed, as the Makefile's")
    args = parser.parse_args(argv)
    stamp = args.stamp or str(Path(args.venv) / ".installed")
    log_path = Path(os.environ.get("PRISM_DATA_DIR") or ".prism") / f"{args.command}.log"
    # A terminal that cannot show the marks gets stand-ins rather than an error.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    steps = plan(args.command, venv=args.venv, stamp=stamp)
    return run_steps(steps, log_path=log_path, out=sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
