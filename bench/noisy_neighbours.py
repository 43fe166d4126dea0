"""No noisy neighbours: what one sweep's trial costs the others, measured side by side.

    .venv/bin/python bench/noisy_neighbours.py [--rounds 5]

Three figures, each beside its floor measured in the same run (medians of rounds),
with the ratio and the target (issue 7):

1. A trial printing 10,000 metric lines against the same trial printing the same
   10,000 lines without the metric prefix, create to done through the gateway.
   Target: metrics <= 1.5 x plain + 0.5 s.
2. A 1-trial sweep's create-to-done time while such a metric flood runs in another
   sweep, against the same 1-trial sweep on the idle stack. Target: <= 1.5 x idle.
3. A 1-trial sweep created just after a 48-trial sweep of one-second trials (four
   times every slot), against the same 1-trial sweep created just after a 12-trial
   one (every slot once): either way it waits for one slot to free. Target: <= 1.5;
   a first-come, first-served queue would make the first wait for all four rounds
   (a ratio near 4).

The stack is real (Envoy, orchestrator, three runners of four slots, SQLite, the
engine) on free loopback ports in a temporary folder, stopped at the end.
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

LINES = 10_000
FLOOD = f"""
import sys
out = sys.stdout
for step in range({LINES}):
    out.write(PREFIX + '{{"step": %d, "loss": %f}}\\n' % (step, 1 / (step + 1)))
out.flush()
print('{{"done": true}}')
"""
SLEEP_ONE = "import time\ntime.sleep(1)\nprint('{\"slept\": 1}')"
QUICK = "print('{\"quick\": 1}')"


def sweep_seconds(stack: RunningStack, spec: dict[str, Any]) -> float:
    """Create a sweep through the gateway and wait for it to finish; the seconds taken."""
    began = time.monotonic()
    reply = stack.create(spec)
    assert reply.status == 200, reply.body
    done = stack.finished(reply.body["id"], timeout=600)
    assert done["state"] == "done", done
    return time.monotonic() - began


def flood(prefix: str) -> dict[str, Any]:
    script = f"PREFIX = {prefix!r}\n" + FLOOD
    return {"task": "flood", "script": script, "limits": {"outputKb": 4096, "wallSeconds": 120}}


def one_trial(script: str = QUICK) -> dict[str, Any]:
    return {"task": "bystander", "script": script}


def figure(name: str, measured: list[float], floor: list[float], target: float | None) -> None:
    m, f = statistics.median(measured), statistics.median(floor)
    verdict = (
        ""
        if target is None
        else f"  (target <= {target}: {'met' if m <= target * f else 'MISSED'})"
    )
    print(f"{name:44} {m:7.3f} s  floor {f:7.3f} s  ratio {m / f:5.2f}{verdict}", flush=True)


def large(trials: int) -> dict[str, Any]:
    parameters = {"list": [{"i": i} for i in range(trials)]}
    return {"task": "large", "script": SLEEP_ONE, "parameters": parameters}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    with closing(docker.from_env()) as client:
        image = ensure_sandbox_image(client, SANDBOX_TAG)
    measured: dict[str, list[float]] = collections.defaultdict(list)

    def measure(name: str, spec: dict[str, Any]) -> float:
        seconds = sweep_seconds(stack, spec)
        measured[name].append(seconds)
        return seconds

    def beside(name: str, background: dict[str, Any], spec: dict[str, Any]) -> None:
        """Measure `spec` created half a second after `background`, which is then under way."""
        thread = threading.Thread(target=measure, args=("background", background), daemon=True)
        thread.start()
        time.sleep(0.5)
        measure(name, spec)
        thread.join()

    with tempfile.TemporaryDirectory(prefix="prism-bench-") as folder:
        stack = start_stack(Path(folder), image, runners=3)
        try:
            sweep_seconds(stack, one_trial())  # warm every path once
            for _ in range(rounds):
                measure("plain", flood(""))
                measure("metrics", flood("PRISM_METRIC "))
                measure("idle", one_trial())
                beside("beside a flood", flood("PRISM_METRIC "), one_trial())
                beside("behind one round", large(12), one_trial())
                beside("behind four rounds", large(48), one_trial())
        finally:
            stop_stack(stack)
    print(f"rounds: {rounds}; medians; the stack: 3 runners x 4 slots", flush=True)
    plain = statistics.median(measured["plain"])
    figure(f"{LINES} metric lines vs plain lines", measured["metrics"], measured["plain"], None)
    limit = 1.5 * plain + 0.5
    verdict = "met" if statistics.median(measured["metrics"]) <= limit else "MISSED"
    print(f"{'':44} (target <= 1.5 x plain + 0.5 s = {limit:.3f} s: {verdict})")
    figure(
        "1-trial sweep beside a metric flood vs idle",
        measured["beside a flood"],
        measured["idle"],
        1.5,
    )
    figure(
        "1-trial sweep behind 48 trials vs behind 12",
        measured["behind four rounds"],
        measured["behind one round"],
        1.5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
