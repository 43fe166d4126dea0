"""No noisy neighbours: what one sweep's trial costs the others, measured side by side.

    .venv/bin/python bench/noisy_neighbours.py [--rounds 5]

Three figures, each beside its floor measured in the same run (medians of rounds),
with the ratio and the target (issue 7):

1. A trial printing 10,000 metric lines at once against the same trial printing the
   same 10,000 lines without the metric prefix, create to done through the gateway.
   Target: metrics <= 1.5 x plain + 0.5 s.
2. A 1-trial sweep's create-to-done time while a trial of another sweep, on the same
   runner, prints 10,000 metric lines over about two seconds (the 1-trial sweep is
   created once the first of them is recorded, and the flood must still be running
   when it is done), against the same 1-trial sweep on the idle stack.
   Target: <= 1.5 x idle.
3. A 1-trial sweep created just after a sweep of one-second trials that fills every
   slot four times over, against the same 1-trial sweep created just after one that
   fills every slot once: either way it waits for one slot to free. Target: <= 1.5;
   a first-come, first-served queue would make the first wait for all four rounds
   (a ratio near 4).

The stack is real (Envoy, orchestrator, one runner of four slots, so that every sweep
shares it; SQLite; the engine) on free loopback ports in a temporary folder, stopped
at the end.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.images import ensure_sandbox_image
from tests.conftest import SANDBOX_TAG, RunningStack, start_stack, stop_stack
from tests.test_watch import sse

SLOTS = 4
LINES = 10_000
BURST = f"""
import sys
out = sys.stdout
for step in range({LINES}):
    out.write(PREFIX + '{{"step": %d, "loss": %f}}\\n' % (step, 1 / (step + 1)))
out.flush()
print('{{"done": true}}')
"""
# The same lines, a hundred at a time every 20 ms.
SPREAD = f"""
import sys, time
out = sys.stdout
for step in range({LINES}):
    out.write('PRISM_METRIC {{"step": %d, "loss": %f}}\\n' % (step, 1 / (step + 1)))
    if step % 100 == 99:
        out.flush()
        time.sleep(0.02)
print('{{"done": true}}')
"""
SLEEP_ONE = "import time\ntime.sleep(1)\nprint('{\"slept\": 1}')"
QUICK = "print('{\"quick\": 1}')"


def created(stack: RunningStack, spec: dict[str, Any]) -> str:
    reply = stack.create(spec)
    assert reply.status == 200, reply.body
    return str(reply.body["id"])


def sweep_seconds(stack: RunningStack, spec: dict[str, Any]) -> float:
    """Create a sweep through the gateway and wait for it to finish; the seconds taken."""
    began = time.monotonic()
    done = stack.finished(created(stack, spec), timeout=600)
    assert done["state"] == "done", done
    return time.monotonic() - began


def flood(script: str, prefix: str = "PRISM_METRIC ") -> dict[str, Any]:
    source = f"PREFIX = {prefix!r}\n" + script
    return {"task": "flood", "script": source, "limits": {"outputKb": 4096, "wallSeconds": 120}}


def large(trials: int) -> dict[str, Any]:
    parameters = {"list": [{"i": i} for i in range(trials)]}
    return {"task": "large", "script": SLEEP_ONE, "parameters": parameters}


def one_trial(script: str = QUICK) -> dict[str, Any]:
    return {"task": "bystander", "script": script}


def beside_a_flood(stack: RunningStack) -> float:
    """The 1-trial sweep's seconds, created once the flood's first metric is recorded;
    the flood must outlast it."""
    flood_id = created(stack, flood(SPREAD))
    for event in sse(stack, flood_id):
        if event["kind"] == "metric":
            break
    seconds = sweep_seconds(stack, one_trial())
    still_flooding = stack.http("GET", f"/v1/sweeps/{flood_id}").body["state"] == "running"
    assert still_flooding, "the flood ended before the 1-trial sweep: make it longer"
    stack.finished(flood_id, timeout=600)
    return seconds


def behind(stack: RunningStack, trials: int) -> float:
    """The 1-trial sweep's seconds, created half a second after a sweep of `trials`
    one-second trials (by then every slot is taken); waits for that sweep too."""
    ahead = threading.Thread(target=sweep_seconds, args=(stack, large(trials)), daemon=True)
    ahead.start()
    time.sleep(0.5)
    seconds = sweep_seconds(stack, one_trial())
    ahead.join()
    return seconds


def figure(name: str, measured: list[float], floor: list[float], target: float | None) -> None:
    m, f = statistics.median(measured), statistics.median(floor)
    verdict = (
        ""
        if target is None
        else f"  (target <= {target}: {'met' if m <= target * f else 'MISSED'})"
    )
    print(f"{name:46} {m:7.3f} s  floor {f:7.3f} s  ratio {m / f:5.2f}{verdict}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    with closing(docker.from_env()) as client:
        image = ensure_sandbox_image(client, SANDBOX_TAG)
    measured: dict[str, list[float]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as folder:
        stack = start_stack(Path(folder), image, runners=1, env={"PRISM_RUNNER_SLOTS": str(SLOTS)})
        try:
            sweep_seconds(stack, one_trial())  # warm every path once
            for _ in range(rounds):
                measured["plain"].append(sweep_seconds(stack, flood(BURST, prefix="")))
                measured["metrics"].append(sweep_seconds(stack, flood(BURST)))
                measured["idle"].append(sweep_seconds(stack, one_trial()))
                measured["beside"].append(beside_a_flood(stack))
                measured["behind one round"].append(behind(stack, SLOTS))
                measured["behind four rounds"].append(behind(stack, 4 * SLOTS))
        finally:
            stop_stack(stack)
    print(f"rounds: {rounds}; medians; the stack: one runner of {SLOTS} slots", flush=True)
    figure(f"{LINES} metric lines vs plain lines", measured["metrics"], measured["plain"], None)
    limit = 1.5 * statistics.median(measured["plain"]) + 0.5
    verdict = "met" if statistics.median(measured["metrics"]) <= limit else "MISSED"
    print(f"{'':46} (target <= 1.5 x plain + 0.5 s = {limit:.3f} s: {verdict})")
    figure("1-trial sweep beside a metric flood vs idle", measured["beside"], measured["idle"], 1.5)
    figure(
        f"1-trial sweep behind {4 * SLOTS} trials vs behind {SLOTS}",
        measured["behind four rounds"],
        measured["behind one round"],
        1.5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
