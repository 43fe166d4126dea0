"""A large sweep of trials that each keep every cap, end to end: its neighbours still
get their turn, and the sweep itself must stay readable.

Ninety-six trials each leave a result of 64 KiB (the cap) made of small numbers, the
most a result can weigh once it is a protobuf Struct. The sweep holds the runner's
every slot; a one-trial sweep created behind it must be dispatched before the large
sweep's remaining trials (fair dispatch, observed in the two sweeps' events), and the
large sweep must answer GET /v1/sweeps/{id} like any other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from prism.stack import ORCHESTRATOR
from tests.conftest import RunningStack, start_stack, stop_stack, wait_until
from tests.hostile import ORDINARY, STREAM_DROPS, create, get, log_entries, watch

SLOTS = 4
TRIALS = 96
# The result cap, compact, in zeros: 5.5 times as large as a Struct.
HEAVY = """
import json
print(json.dumps({"z": [0] * 32760}, separators=(",", ":")))
"""


@dataclass
class Scale:
    stack: RunningStack
    large: dict[str, Any]
    small: dict[str, Any]


def settled(stack: RunningStack, sweep_id: str) -> dict[str, Any]:
    """The sweep's summary from GET /v1/sweeps once it has finished (the sweep itself
    is what GET /v1/sweeps/{id} may fail to show)."""

    def summary() -> dict[str, Any] | None:
        reply = stack.http("GET", "/v1/sweeps?pageSize=100")
        assert reply.status == 200, reply.body
        [found] = [s for s in reply.body["sweeps"] if s["id"] == sweep_id]
        return dict(found) if found["state"] != "running" else None

    return wait_until(summary, 240, f"sweep {sweep_id} to finish")


def seconds(stamp: str) -> float:
    """An event's time (RFC 3339, up to nanoseconds) as epoch seconds."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    at = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return at + float(f"0.{fraction}") if fraction else at


def dispatched(events: list[dict[str, Any]]) -> list[float]:
    return [seconds(e["time"]) for e in events if e["kind"] == "trial_dispatched"]


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[Scale]:
    stack = start_stack(
        tmp_path_factory.mktemp("scale"),
        sandbox_image,
        runners=1,
        env={"PRISM_RUNNER_SLOTS": str(SLOTS)},
    )
    try:
        large_id = create(
            stack,
            {
                "task": "heavy results",
                "script": HEAVY,
                "parameters": {"list": [{"i": i} for i in range(TRIALS)]},
            },
        )

        def busy() -> bool:
            reply = stack.http("GET", "/v1/sweeps?pageSize=1")
            return bool(reply.body["sweeps"][0]["counts"]["running"] >= SLOTS)

        wait_until(busy, what="the large sweep to fill every slot")
        small_id = create(stack, {"task": "small", "script": ORDINARY})
        small = stack.finished(small_id, timeout=120)
        large = settled(stack, large_id)
        yield Scale(stack, large, small)
    finally:
        stop_stack(stack)


def test_a_small_sweep_is_dispatched_before_the_large_sweeps_rest(scale: Scale) -> None:
    small = watch(scale.stack, scale.small["id"])
    created = seconds(next(e["time"] for e in small if e["kind"] == "sweep_created"))
    [small_dispatched] = dispatched(small)
    large = dispatched(watch(scale.stack, scale.large["id"]))
    assert len(large) == TRIALS
    after_created = [t for t in large if t > created]
    # The large sweep still had trials waiting when the small one came...
    assert len(after_created) > TRIALS // 2
    # ...and only a dispatch already decided before it (at most one per slot) went first.
    assert sum(1 for t in after_created if t < small_dispatched) <= SLOTS
    assert scale.small["trials"][0]["outcome"] == "succeeded"


def test_the_large_sweep_answers_on_its_other_routes(scale: Scale) -> None:
    sweep_id = scale.large["id"]
    assert get(scale.stack, f"/sweeps/{sweep_id}")[0] == 200
    assert (scale.large["state"], scale.large["counts"]["succeeded"]) == ("done", TRIALS)
    events = watch(scale.stack, sweep_id)
    assert (events[-1]["kind"], events[-1]["sweepState"]) == ("sweep_finished", "done")
    assert get(scale.stack, f"/v1/sweeps/{sweep_id}/trials/{TRIALS - 1}/logs")[0] == 200


def test_the_large_sweep_answers_get(scale: Scale) -> None:
    reply = scale.stack.http("GET", f"/v1/sweeps/{scale.large['id']}")
    assert reply.status == 200, reply.body


def read_at_once(stack: RunningStack, path: str, times: int) -> list[threading.Thread]:
    """Start `times` GETs of `path` at once; each thread keeps its status (or error)."""
    answers: list[object] = []

    def read() -> None:
        try:
            answers.append(get(stack, path)[0])
        except OSError as error:
            answers.append(error)

    readers = [threading.Thread(target=read) for _ in range(times)]
    for reader in readers:
        reader.start()
    return readers


def test_reading_the_large_sweep_does_not_stop_the_orchestrator(scale: Scale) -> None:
    """Each read of the large sweep is seconds of the orchestrator's event loop (its
    results parsed and made Structs there): an ordinary sweep created while three run
    still completes, and the runner's stream stays up. How long it took is printed."""
    stack = scale.stack
    readers = read_at_once(stack, f"/v1/sweeps/{scale.large['id']}", 3)
    began = time.monotonic()
    sweep_id = create(stack, {"task": "while read", "script": ORDINARY})
    created = time.monotonic() - began
    sweep = stack.finished(sweep_id)
    print(
        f"while the large sweep was read 3 times: an ordinary create took {created:.1f} s, "
        f"its sweep {time.monotonic() - began:.1f} s"
    )
    for reader in readers:
        reader.join()
    assert sweep["trials"][0]["outcome"] == "succeeded"
    drops = [e for e in log_entries(stack, ORCHESTRATOR) if e.get("message") in STREAM_DROPS]
    assert drops == []


def test_reads_of_the_large_sweep_leave_other_calls_answering(scale: Scale) -> None:
    stack, path = scale.stack, f"/v1/sweeps/{scale.large['id']}"
    # Several heavy reads at once: a cheap call made among them still answers (each is
    # built off the event loop, within its budget).
    readers = read_at_once(stack, path, 6)
    try:
        assert get(stack, "/v1/sweeps?pageSize=1")[0] == 200
    finally:
        for reader in readers:
            reader.join()
        wait_until(lambda: get(stack, "/v1/sweeps?pageSize=1")[0] == 200, what="calm")
