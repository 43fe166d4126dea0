"""Which trial runs next and where (orchestrator_svc.scheduler), and what becomes of a
trial and a sweep that ended (orchestrator_svc.policy): pure functions."""

from __future__ import annotations

import pytest

from orchestrator_svc import policy
from orchestrator_svc.scheduler import SweepQueue, fair_order, place
from prism.trial import Outcome


def queue(sweep_id: str, created_at: float, pending: int, **kwargs: int) -> SweepQueue:
    ids = [f"{sweep_id}/{i}" for i in range(pending)]
    return SweepQueue(sweep_id, created_at, pending=ids, **{"in_flight": 0, **kwargs})


def test_fair_order_takes_turns_and_favours_the_sweep_with_least_in_flight() -> None:
    big = queue("big", 1.0, 100, in_flight=3)
    small = queue("small", 2.0, 2)
    # The small sweep catches up with the big one's three in flight, then they alternate
    # (the older first among equals).
    assert fair_order([big, small], 6) == ["small/0", "small/1", "big/0", "big/1", "big/2", "big/3"]


def test_fair_order_prefers_the_older_sweep_among_equals() -> None:
    assert fair_order([queue("new", 5.0, 2), queue("old", 1.0, 2)], 3) == [
        "old/0",
        "new/0",
        "old/1",
    ]


def test_fair_order_keeps_each_sweep_within_max_parallel() -> None:
    capped = queue("capped", 1.0, 10, in_flight=1, max_parallel=3)
    full = queue("full", 0.5, 10, in_flight=2, max_parallel=2)
    # The full sweep gets none; the capped one is filled up to its cap.
    assert fair_order([capped, full, queue("free", 9.0, 1)], 10) == [
        "free/0",
        "capped/0",
        "capped/1",
    ]


@pytest.mark.parametrize("limit", [0, 1, 5])
def test_fair_order_gives_at_most_the_limit(limit: int) -> None:
    assert len(fair_order([queue("a", 1.0, 3), queue("b", 2.0, 3)], limit)) == limit


def test_place_sends_each_trial_to_the_runner_with_most_free_slots() -> None:
    placed = place(["t0", "t1", "t2", "t3", "t4"], {"r1": 1, "r2": 3, "r3": 0})
    assert placed == [("t0", "r2"), ("t1", "r2"), ("t2", "r1"), ("t3", "r2")]


def test_place_with_no_free_slot_places_nothing() -> None:
    assert place(["t0"], {"r1": 0, "r2": -1}) == []
    assert place(["t0"], {}) == []


@pytest.mark.parametrize(
    "outcome, attempts, allowed, running, retried",
    [
        (Outcome.SANDBOX_ERROR, 1, 1, True, True),
        (Outcome.RUNNER_LOST, 2, 2, True, True),
        (Outcome.RUNNER_LOST, 3, 2, True, False),  # retries used up
        (Outcome.SANDBOX_ERROR, 1, 0, True, False),  # none allowed
        (Outcome.SANDBOX_ERROR, 1, 3, False, False),  # the sweep was cancelled
        (Outcome.FAILED, 1, 3, True, False),  # the trial's own outcome is final
        (Outcome.TIMED_OUT, 1, 3, True, False),
        (Outcome.SUCCEEDED, 1, 3, True, False),
    ],
)
def test_only_infrastructure_failures_are_retried(
    outcome: Outcome, attempts: int, allowed: int, running: bool, retried: bool
) -> None:
    assert (
        policy.retries(outcome, attempts=attempts, allowed=allowed, sweep_running=running)
        == retried
    )


def test_every_outcome_is_either_final_or_an_infrastructure_failure() -> None:
    # A new outcome must be placed on one side on purpose.
    infrastructure = {o for o in Outcome if o.infrastructure}
    final = {o for o in Outcome if not o.infrastructure}
    assert infrastructure == {Outcome.SANDBOX_ERROR, Outcome.RUNNER_LOST}
    assert final == {
        Outcome.SUCCEEDED,
        Outcome.FAILED,
        Outcome.TIMED_OUT,
        Outcome.OOM_KILLED,
        Outcome.OUTPUT_LIMIT,
        Outcome.CANCELLED,
        Outcome.PRUNED,
    }


def test_retry_backoff_doubles_up_to_its_cap() -> None:
    waits = [policy.retry_backoff(n) for n in range(1, 8)]
    assert waits[:4] == [2.0, 4.0, 8.0, 16.0]
    assert waits[4:] == [policy.MAX_RETRY_BACKOFF_SECONDS] * 3


@pytest.mark.parametrize(
    "outcomes, cancelled, status",
    [
        (["succeeded", "failed"], False, "done"),
        (["failed", "timed_out"], False, "error"),
        (["succeeded", None], False, None),  # a trial has not finished
        (["succeeded", "cancelled"], True, "cancelled"),
        ([None], True, None),
    ],
)
def test_a_sweep_ends_once_every_trial_has(
    outcomes: list[str | None], cancelled: bool, status: str | None
) -> None:
    assert policy.final_status(outcomes, cancelled=cancelled) == status
