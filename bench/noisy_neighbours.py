"""No noisy neighbours: what one sweep's trial costs the others, measured side by side.

    .venv/bin/python bench/noisy_neighbours.py [--rounds 5]

Three figures, each beside its floor measured in the same run (medians of rounds),
with the ratio and the target (issue 7):

1. A trial printing 10,000 metric lines against the same trial printing the same
   10,000 lines without the metric prefix, create to done through the gateway.
   Target: metrics <= 1.5 x plain + 0.5 s.
2. A 1-trial sweep's create-to-done time while such a metric flood runs in another
   sweep, against the same 1-trial sweep on the idle stack. Target: <= 1.5 x idle.
3. A 1-trial sweep created just after a large sweep of one-second trials that fills
   every slot several times over, against the same 1-trial sweep on the idle stack
   plus one trial's length (the wait for a slot to free). Target: <= 1.5 x that;
   a first-come, first-served queue would make it wait for the whole large sweep.

The stack is real (Envoy, orchestrator, three runners of four slots, SQLite, the
engine) on free loopback ports in a temporary folder, stopped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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


def in_background(work: Callable[[], float], into: list[float]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.append(work()), daemon=True)
    thread.start()
    return thread


def figure(name: str, measured: list[float], floor: list[float], _: str) -> None:
    m, f = statistics.median(measured), statistics.median(floor)
    print(f"{name:44} {m:7.3f} s  floor {f:7.3f} s  ratio {m / f:5.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    with closing(docker.from_env()) as client:
        image = ensure_sandbox_image(client, SANDBOX_TAG)
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as folder:
        stack = start_stack(Path(folder), image, runners=3)
        try:
            sweep_seconds(stack, one_trial())  # warm every path once
            measured: dict[str, list[float]] = {
                name: []
                for name in (
                    "metrics",
                    "plain",
                    "idle",
                    "beside",
                    "one",
                    "behind",
                    "large",
                    "flood",
                )
            }
            large = {
                "task": "large",
                "script": SLEEP_ONE,
                "parameters": {"list": [{"i": i} for i in range(48)]},
            }
            for _ in range(rounds):
                measured["plain"].append(sweep_seconds(stack, flood("")))
                measured["metrics"].append(sweep_seconds(stack, flood("PRISM_METRIC ")))
                measured["idle"].append(sweep_seconds(stack, one_trial()))
                # Idle, plus the wait for a slot: one trial's length.
                measured["one"].append(sweep_seconds(stack, one_trial(SLEEP_ONE)))

                background = in_background(
                    lambda: sweep_seconds(stack, flood("PRISM_METRIC ")), measured["flood"]
                )
                time.sleep(0.5)  # the flood is under way
                measured["beside"].append(sweep_seconds(stack, one_trial()))
                background.join()

                background = in_background(
                    lambda: sweep_seconds(stack, large),
                    measured["large"],
                )
                time.sleep(0.5)  # every slot is taken
                measured["behind"].append(sweep_seconds(stack, one_trial()))
                background.join()
        finally:
            stop_stack(stack)
    got = {name: statistics.median(values) for name, values in measured.items()}
    print(f"rounds: {rounds}; medians; the stack: 3 runners x 4 slots", flush=True)
    figure(f"{LINES} metric lines vs plain lines", measured["metrics"], measured["plain"], "")
    limit = 1.5 * got["plain"] + 0.5
    verdict = "met" if got["metrics"] <= limit else "MISSED"
    print(f"{'':44} target <= 1.5 x plain + 0.5 s = {limit:.3f} s: {verdict}")
    figure("1-trial sweep beside a metric flood vs idle", measured["beside"], measured["idle"], "")
    print(f"{'':44} target <= 1.5: {'met' if got['beside'] <= 1.5 * got['idle'] else 'MISSED'}")
    figure("1-trial sweep behind a 48-trial sweep", measured["behind"], measured["one"], "")
    print(f"{'':44} target <= 1.5: {'met' if got['behind'] <= 1.5 * got['one'] else 'MISSED'}")
    print(f"{'':44} (the 48-trial sweep itself: {got['large']:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
