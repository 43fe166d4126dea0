"""The orchestrator's store, transition by transition, on a throwaway SQLite file: what
each function changes, what a repeated or stale call leaves alone, and the events each
change appends, numbered 1, 2, 3… per sweep without a gap (``events`` checks that
wherever it reads them)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator_svc import domain, store
from prism.limits import DEFAULTS
from prism.trial import Artifact, Outcome, TrialResult, not_run

SCRIPT = "print(1)"
# The README's promise: retries wait 2, 4, 8… s, at most 30.
BACKOFF_SECONDS = [2, 4, 8, 16, 30]


def create(
    sweep_id: str,
    trials: int = 2,
    *,
    request_id: str | None = None,
    created_at: float | None = None,
    **spec: Any,
) -> str:
    planned = [domain.PlannedTrial(f"trial-{i}", SCRIPT, {"i": i}) for i in range(trials)]
    made = store.create_sweep(sweep_id, "task", {"task": "task", **spec}, planned, request_id)
    if created_at is not None:
        store.Sweep.update(created_at=created_at).where(store.Sweep.id == made).execute()
    return made


def events(sweep_id: str) -> list[tuple[str, int | None, dict[str, Any]]]:
    """The sweep's events in order, as (kind, trial index, data); their sequence numbers
    run 1, 2, 3… without a gap up to the sweep's own count."""
    rows = store.events_after(sweep_id, 0, 100_000)
    assert [row.seq for row in rows] == list(range(1, len(rows) + 1))
    sweep = store.sweep(sweep_id)
    assert sweep is not None and sweep.last_seq == len(rows)
    return [(row.kind, row.trial_index, json.loads(row.data)) for row in rows]


def kinds(sweep_id: str) -> list[str]:
    return [kind for kind, _, _ in events(sweep_id)]


def trial(trial_id: str) -> store.Trial:
    sweep_id, _, position = trial_id.partition("/")
    row = store.trial_at(sweep_id, int(position), outputs=True)
    assert row is not None
    return row


def run(trial_id: str, runner: str = "r1") -> str:
    """Dispatch a pending trial to ``runner`` and start it; its execution id."""
    assigned = store.assign(trial_id, runner)
    assert assigned is not None
    store.mark_started(assigned.execution_id)
    return assigned.execution_id


def ended(outcome: Outcome, **more: Any) -> TrialResult:
    return TrialResult(outcome=outcome, reason=f"ended {outcome.value}", **more)


def due_now(trial_id: str) -> None:
    """The clock moves past a retry's backoff."""
    store.Trial.update(not_before=time.time() - 1).where(store.Trial.id == trial_id).execute()


def picked(limit: int) -> list[str]:
    return [item.trial.id for item in store.dispatchable(limit)]


# --- create_sweep ------------------------------------------------------------------------


def test_a_sweep_is_recorded_with_its_trials_queued_in_order(orchestrator_db: Path) -> None:
    create("s", 3, maxParallel=2)

    found = store.sweep_with_trials("s")
    assert found is not None
    sweep, trials = found
    assert (sweep.status, sweep.task, sweep.finished_at) == ("running", "task", None)
    assert sweep.spec == {"task": "task", "maxParallel": 2, "limits": DEFAULTS}
    assert [(t.id, t.position, t.name, t.state, t.attempts) for t in trials] == [
        (f"s/{i}", i, f"trial-{i}", "pending", 0) for i in range(3)
    ]
    assert [json.loads(t.params_json) for t in trials] == [{"i": i} for i in range(3)]
    assert events("s") == [
        ("sweep_created", None, {"trials": 3}),
        *[("trial_queued", i, {"name": f"trial-{i}"}) for i in range(3)],
    ]
    assert not store.sweep_finished("s")


def test_a_script_is_stored_once_however_many_trials_run_it(orchestrator_db: Path) -> None:
    create("a", 3)
    create("b", 2)
    [script] = store.Script.select()
    assert script.source == SCRIPT
    assert store.Trial.select().where(store.Trial.script == script.sha256).count() == 5


def test_a_repeated_request_id_makes_no_second_sweep(orchestrator_db: Path) -> None:
    assert create("a", 2, request_id="request-1") == "a"

    assert create("b", 5, request_id="request-1") == "a"

    assert store.sweep("b") is None
    assert store.Trial.select().count() == 2
    assert kinds("a") == ["sweep_created", "trial_queued", "trial_queued"]
    # Another request id, or none (empty is none), is another sweep each time.
    assert create("c", 1, request_id="request-2") == "c"
    assert create("d", 1, request_id="") == "d"
    assert create("e", 1, request_id="") == "e"
    assert create("f", 1) == "f"
    assert {s.id for s in store.Sweep.select()} == {"a", "c", "d", "e", "f"}


# --- dispatchable ------------------------------------------------------------------------


def test_dispatchable_picks_without_changing_anything(orchestrator_db: Path) -> None:
    create("s", 2, maxParallel=3)

    items = store.dispatchable(5)

    assert [i.trial.id for i in items] == ["s/0", "s/1"]
    assert all(i.source == SCRIPT and not i.cancelled for i in items)
    assert all(i.spec == {"task": "task", "maxParallel": 3, "limits": DEFAULTS} for i in items)
    assert picked(5) == ["s/0", "s/1"]  # still pending: picking is not assigning
    assert picked(1) == ["s/0"]
    assert picked(0) == [] and picked(-1) == []


def test_a_sweep_with_fewer_trials_in_flight_goes_first(orchestrator_db: Path) -> None:
    create("old", 3, created_at=1.0)
    for trial_id in picked(2):
        store.assign(trial_id, "r1")
    create("new", 2, created_at=2.0)

    # The older sweep holds two slots: the newer one catches up first, then they alternate.
    assert picked(3) == ["new/0", "new/1", "old/2"]


def test_among_equals_the_older_sweep_goes_first(orchestrator_db: Path) -> None:
    create("second", 2, created_at=2.0)
    create("first", 2, created_at=1.0)

    assert picked(4) == ["first/0", "second/0", "first/1", "second/1"]


def test_max_parallel_caps_a_sweeps_trials_in_flight(orchestrator_db: Path) -> None:
    create("capped", 4, maxParallel=2)
    create("free", 1, created_at=time.time() + 1)

    assert picked(10) == ["capped/0", "free/0", "capped/1"]
    execution = run("capped/0")
    store.assign("capped/1", "r2")

    # Dispatched and running trials both count against the cap.
    assert picked(10) == ["free/0"]
    store.finish_trial(execution, ended(Outcome.SUCCEEDED, exit_code=0))
    # One slot of its two is free again; "free" has none in flight, so it goes first.
    assert picked(10) == ["free/0", "capped/2"]


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", "[" * 100_000])
def test_a_damaged_spec_does_not_stop_any_sweeps_dispatch(
    orchestrator_db: Path, damage: str
) -> None:
    create("damaged", 1, created_at=1.0)
    create("fine", 1, created_at=2.0)
    store.Sweep.update(spec_json=damage).where(store.Sweep.id == "damaged").execute()

    assert picked(2) == ["damaged/0", "fine/0"]
    # Its trial ends like any other, with the defaults (no retries).
    store.assign("damaged/0", "r1")
    assert store.finish_trial("damaged/0", not_run(Outcome.SANDBOX_ERROR, "x")) == "error"


# --- assign, unassign, mark_started --------------------------------------------------------


def test_assign_takes_only_a_pending_trial(orchestrator_db: Path) -> None:
    create("s", 1)

    assigned = store.assign("s/0", "r1")

    assert assigned is not None and assigned.execution_id == "s/0"
    row = trial("s/0")
    assert (row.state, row.runner, row.attempts) == ("dispatched", "r1", 1)
    assert row.dispatched_at is not None
    assert store.assign("s/0", "r2") is None
    assert trial("s/0").runner == "r1"
    assert events("s")[-1] == ("trial_dispatched", 0, {"runner": "r1", "attempt": 1})
    assert picked(5) == []
    assert store.holders() == {"r1"}


def test_unassign_undoes_a_dispatch_that_never_reached_its_runner(orchestrator_db: Path) -> None:
    create("s", 1)
    store.assign("s/0", "r1")

    store.unassign("s/0", "r2", "not its runner")
    assert (trial("s/0").state, trial("s/0").runner) == ("dispatched", "r1")

    store.unassign("s/0", "r1", "stream closed before send")
    row = trial("s/0")
    assert (row.state, row.runner, row.attempts, row.dispatched_at) == ("pending", None, 0, None)
    assert events("s")[-1] == (
        "trial_requeued",
        0,
        {"runner": "r1", "reason": "stream closed before send"},
    )
    # That execution never existed: the next one has the first execution's id again.
    again = store.assign("s/0", "r2")
    assert again is not None and again.execution_id == "s/0"


def test_a_started_trial_is_not_unassigned(orchestrator_db: Path) -> None:
    create("s", 1)
    run("s/0")
    before = kinds("s")

    store.unassign("s/0", "r1", "too late")

    assert trial("s/0").state == "running"
    assert kinds("s") == before


def test_mark_started_moves_the_current_execution_only(orchestrator_db: Path) -> None:
    create("s", 1)
    store.mark_started("s/0")  # not dispatched yet
    assert trial("s/0").state == "pending"
    store.assign("s/0", "r1")

    store.mark_started("s/0@2")  # an execution that does not exist
    store.mark_started("s/7")
    store.mark_started("other/0")
    assert trial("s/0").state == "dispatched"

    store.mark_started("s/0")
    store.mark_started("s/0")  # a repeated start changes nothing more
    row = trial("s/0")
    assert (row.state, row.started_at is not None) == ("running", True)
    assert kinds("s")[-2:] == ["trial_dispatched", "trial_started"]
    assert events("s")[-1] == ("trial_started", 0, {"runner": "r1"})


# --- record_metrics ----------------------------------------------------------------------


def test_metrics_of_current_executions_are_appended_to_their_sweeps(orchestrator_db: Path) -> None:
    create("a", 3)
    create("b", 1)
    run("a/0")
    finished = run("a/1")
    run("b/0")
    store.finish_trial(finished, ended(Outcome.SUCCEEDED, exit_code=0))
    seen_a, seen_b = len(events("a")), len(events("b"))

    store.record_metrics(
        [
            ("a/0", '{"step":1}'),
            ("b/0", '{"step":1}'),
            ("a/1", '{"late":true}'),  # finished
            ("a/2", '{"early":true}'),  # never dispatched
            ("a/0@2", '{"other":true}'),  # an execution that does not exist
            ("gone/0", '{"unknown":true}'),
            ("a/0", '{"step":2}'),
        ]
    )

    assert events("a")[seen_a:] == [
        ("metric", 0, {"values": {"step": 1}}),
        ("metric", 0, {"values": {"step": 2}}),
    ]
    assert events("b")[seen_b:] == [("metric", 0, {"values": {"step": 1}})]


# --- finish_trial --------------------------------------------------------------------------


def test_a_result_is_recorded_once(orchestrator_db: Path) -> None:
    create("s", 2)
    execution = run("s/0")
    result = ended(
        Outcome.SUCCEEDED,
        exit_code=0,
        stdout="out\n",
        result={"loss": 0.5},
        artifacts=(Artifact("plots/a.txt", b"abc"),),
    )

    assert store.finish_trial(execution, result) is None  # s/1 has not finished

    row = trial("s/0")
    assert (row.state, row.outcome, row.exit_code, row.stdout) == (
        "finished",
        "succeeded",
        0,
        "out\n",
    )
    assert json.loads(row.result_json) == {"loss": 0.5}
    assert row.finished_at is not None
    assert store.artifacts("s/0") == [("plots/a.txt", 3)]
    assert store.artifact_data("s/0", "plots/a.txt") == b"abc"
    assert events("s")[-1] == (
        "trial_finished",
        0,
        {"outcome": "succeeded", "reason": result.reason},
    )
    recorded = events("s")

    again = ended(Outcome.FAILED, exit_code=1, artifacts=(Artifact("b.txt", b"x"),))
    assert store.finish_trial(execution, again) is None

    assert (trial("s/0").outcome, trial("s/0").exit_code) == ("succeeded", 0)
    assert store.artifacts("s/0") == [("plots/a.txt", 3)]
    assert events("s") == recorded


def test_a_report_from_an_earlier_execution_changes_nothing(orchestrator_db: Path) -> None:
    create("s", 1, retries=2)
    first = run("s/0", "r1")
    store.finish_trial(first, ended(Outcome.SANDBOX_ERROR))
    due_now("s/0")
    second = run("s/0", "r2")
    assert (first, second) == ("s/0", "s/0@2")
    recorded = events("s")

    # The first execution's runner comes back and reports, late.
    assert store.finish_trial(first, ended(Outcome.SUCCEEDED, exit_code=0)) is None
    store.record_metrics([(first, '{"late":true}')])
    store.mark_started(first)

    row = trial("s/0")
    assert (row.state, row.runner, row.attempts, row.outcome) == ("running", "r2", 2, None)
    assert events("s") == recorded
    assert store.finish_trial(second, ended(Outcome.FAILED, exit_code=1)) == "error"
    assert trial("s/0").outcome == "failed"


@pytest.mark.parametrize("outcome", [Outcome.SANDBOX_ERROR, Outcome.RUNNER_LOST])
def test_the_platforms_failures_are_retried_with_growing_backoff_then_kept(
    orchestrator_db: Path, outcome: Outcome
) -> None:
    create("s", 1, retries=len(BACKOFF_SECONDS))
    for attempt, backoff in enumerate(BACKOFF_SECONDS, start=1):
        execution = run("s/0", f"r{attempt}")
        assert execution == ("s/0" if attempt == 1 else f"s/0@{attempt}")
        before = time.time()

        assert store.finish_trial(execution, ended(outcome)) is None

        after = time.time()
        row = trial("s/0")
        assert (row.state, row.runner, row.attempts, row.outcome) == (
            "pending",
            None,
            attempt,
            None,
        )
        assert before + backoff <= row.not_before <= after + backoff
        assert events("s")[-1] == (
            "trial_retrying",
            0,
            {"outcome": outcome.value, "reason": f"ended {outcome.value}", "attempt": attempt},
        )
        assert picked(1) == []  # not before its backoff has passed
        due_now("s/0")
        assert picked(1) == ["s/0"]

    last = run("s/0")
    assert store.finish_trial(last, ended(outcome)) == "error"

    row = trial("s/0")
    assert (row.state, row.outcome, row.attempts) == ("finished", outcome.value, 6)
    assert kinds("s").count("trial_retrying") == len(BACKOFF_SECONDS)


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (Outcome.SUCCEEDED, "done"),
        (Outcome.FAILED, "error"),
        (Outcome.TIMED_OUT, "error"),
        (Outcome.OOM_KILLED, "error"),
        (Outcome.OUTPUT_LIMIT, "error"),
        (Outcome.CANCELLED, "error"),
    ],
)
def test_a_trials_own_ending_is_never_retried(
    orchestrator_db: Path, outcome: Outcome, status: str
) -> None:
    create("s", 1, retries=3)
    execution = run("s/0")

    assert store.finish_trial(execution, ended(outcome)) == status

    row = trial("s/0")
    assert (row.state, row.outcome, row.attempts) == ("finished", outcome.value, 1)
    assert "trial_retrying" not in kinds("s")


def test_a_lost_execution_is_left_for_its_runner_to_stop(orchestrator_db: Path) -> None:
    create("s", 1, retries=1)
    lost = run("s/0", "r1")

    store.finish_trial(lost, ended(Outcome.RUNNER_LOST))

    assert store.held_by("r1") == ([], ["s/0"])
    again = run("s/0", "r2")
    held, abandoned = store.held_by("r2")
    assert ([h.trial.execution_id for h in held], abandoned) == (["s/0@2"], [])
    # r1 comes back and reports the lost execution's end: stale, but no longer abandoned.
    store.finish_trial(lost, ended(Outcome.FAILED, exit_code=1))
    assert store.held_by("r1") == ([], [])
    assert trial("s/0").state == "running"
    # Lost again with no retry left: kept, and left for r2 to stop in turn.
    assert store.finish_trial(again, ended(Outcome.RUNNER_LOST)) == "error"
    assert trial("s/0").outcome == "runner_lost"
    assert store.held_by("r2") == ([], ["s/0@2"])


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [
        ([Outcome.SUCCEEDED, Outcome.SUCCEEDED], "done"),
        ([Outcome.FAILED, Outcome.SUCCEEDED, Outcome.TIMED_OUT], "done"),
        ([Outcome.FAILED, Outcome.OOM_KILLED], "error"),
        ([Outcome.SANDBOX_ERROR], "error"),
    ],
)
def test_the_last_trial_to_finish_ends_the_sweep(
    orchestrator_db: Path, outcomes: list[Outcome], status: str
) -> None:
    create("s", len(outcomes))
    executions = [run(f"s/{i}") for i in range(len(outcomes))]

    statuses = [
        store.finish_trial(execution, ended(outcome))
        for execution, outcome in zip(executions, outcomes, strict=True)
    ]

    assert statuses == [None] * (len(outcomes) - 1) + [status]
    sweep = store.sweep("s")
    assert sweep is not None and (sweep.status, sweep.finished_at is not None) == (status, True)
    assert store.sweep_finished("s")
    assert events("s")[-1] == ("sweep_finished", None, {"status": status})
    assert kinds("s").count("sweep_finished") == 1


# --- hand_back ---------------------------------------------------------------------------


def test_a_handed_back_execution_goes_back_to_pending_as_a_new_execution(
    orchestrator_db: Path,
) -> None:
    create("s", 2, retries=0)
    execution = run("s/0", "r1")
    store.record_metrics([(execution, '{"step":0}')])

    assert store.hand_back(execution, "handed back: runner stopping") is None

    row = trial("s/0")
    assert (row.state, row.runner, row.attempts, row.outcome) == ("pending", None, 1, None)
    assert (row.dispatched_at, row.started_at) == (None, None)
    assert events("s")[-1] == (
        "trial_requeued",
        0,
        {"runner": "r1", "reason": "handed back: runner stopping"},
    )
    # Its metrics were real: they stay.
    assert ("metric", 0, {"values": {"step": 0}}) in events("s")
    # Due at once, with retries 0: a hand-back failed no one.
    assert picked(5) == ["s/0", "s/1"]
    again = run("s/0", "r2")
    assert again == "s/0@2"
    assert store.finish_trial(again, ended(Outcome.SUCCEEDED, exit_code=0)) is None
    assert (trial("s/0").state, trial("s/0").outcome) == ("finished", "succeeded")


def test_a_hand_back_counts_among_the_attempts_that_retries_allow(
    orchestrator_db: Path,
) -> None:
    create("s", 1, retries=1)
    store.hand_back(run("s/0", "r1"), "handed back")
    # The second execution, as a retry would be: a sandbox_error after it is kept.
    assert store.finish_trial(run("s/0", "r2"), ended(Outcome.SANDBOX_ERROR)) == "error"
    assert (trial("s/0").outcome, trial("s/0").attempts) == ("sandbox_error", 2)


def test_a_stale_or_repeated_hand_back_changes_nothing(orchestrator_db: Path) -> None:
    create("s", 1, retries=2)
    first = run("s/0", "r1")
    store.hand_back(first, "handed back")
    second = run("s/0", "r2")
    recorded = events("s")

    assert store.hand_back(first, "handed back") is None  # repeated: now stale
    assert store.hand_back("s/0@7", "no such execution") is None
    assert store.hand_back("other/0", "no such trial") is None

    row = trial("s/0")
    assert (row.state, row.runner, row.attempts) == ("running", "r2", 2)
    assert row.execution_id == second
    assert events("s") == recorded
    store.finish_trial(second, ended(Outcome.SUCCEEDED, exit_code=0))
    assert store.hand_back(second, "too late") is None
    assert trial("s/0").outcome == "succeeded"


def test_an_abandoned_execution_handed_back_is_no_longer_to_be_stopped(
    orchestrator_db: Path,
) -> None:
    create("s", 1, retries=1)
    lost = run("s/0", "r1")
    store.finish_trial(lost, ended(Outcome.RUNNER_LOST))
    assert store.held_by("r1") == ([], ["s/0"])

    store.hand_back(lost, "handed back")

    assert store.held_by("r1") == ([], [])
    assert trial("s/0").state == "pending"  # the retry it was given, untouched


def test_a_trial_handed_back_in_a_cancelled_sweep_ends_cancelled(orchestrator_db: Path) -> None:
    create("s", 2)
    store.finish_trial(run("s/1"), ended(Outcome.SUCCEEDED, exit_code=0))
    execution = run("s/0")
    store.cancel_sweep("s")

    assert store.hand_back(execution, "handed back") == "cancelled"

    row = trial("s/0")
    assert (row.state, row.outcome) == ("finished", "cancelled")
    assert row.reason == "the sweep was cancelled; handed back"
    assert picked(5) == []
    assert kinds("s")[-2:] == ["trial_finished", "sweep_finished"]


# --- cancel_sweep ------------------------------------------------------------------------


def test_cancel_ends_pending_trials_and_lists_those_in_flight(orchestrator_db: Path) -> None:
    create("s", 4, retries=2)
    running = run("s/0", "r1")
    store.finish_trial(run("s/1", "r2"), ended(Outcome.SANDBOX_ERROR))
    due_now("s/1")
    retried = store.assign("s/1", "r2")
    assert retried is not None

    status, in_flight = store.cancel_sweep("s")

    assert status is None
    assert sorted(in_flight) == [("r1", "s/0"), ("r2", "s/1@2")]
    sweep = store.sweep("s")
    assert sweep is not None and (sweep.status, sweep.finished_at) == ("cancelled", None)
    for i in (2, 3):
        row = trial(f"s/{i}")
        assert (row.state, row.outcome, row.attempts) == ("finished", "cancelled", 0)
        assert "cancelled" in row.reason
    assert kinds("s")[-3:] == ["sweep_cancelled", "trial_finished", "trial_finished"]
    # The runners hear of it on their next streams: their trials are marked cancelled.
    held, _ = store.held_by("r1")
    assert [(h.trial.id, h.cancelled) for h in held] == [("s/0", True)]
    assert store.cancel_sweep("s") == (None, [])
    assert picked(5) == []

    # A failure of the platform is not retried once the sweep is cancelled.
    assert store.finish_trial(retried.execution_id, ended(Outcome.SANDBOX_ERROR)) is None
    assert trial("s/1").outcome == "sandbox_error"
    # The last trial in flight ends it, cancelled though one succeeded.
    assert store.finish_trial(running, ended(Outcome.SUCCEEDED, exit_code=0)) == "cancelled"
    assert events("s")[-1] == ("sweep_finished", None, {"status": "cancelled"})


def test_cancelling_a_sweep_with_nothing_in_flight_finishes_it(orchestrator_db: Path) -> None:
    create("s", 2)

    assert store.cancel_sweep("s") == ("cancelled", [])

    assert store.sweep_finished("s")
    assert kinds("s")[-4:] == [
        "sweep_cancelled",
        "trial_finished",
        "trial_finished",
        "sweep_finished",
    ]
    assert events("s")[-1] == ("sweep_finished", None, {"status": "cancelled"})


def test_an_unknown_or_finished_sweep_is_not_cancelled(orchestrator_db: Path) -> None:
    create("s", 1)
    store.finish_trial(run("s/0"), ended(Outcome.SUCCEEDED, exit_code=0))
    recorded = events("s")

    assert store.cancel_sweep("s") == (None, [])
    assert store.cancel_sweep("nothing") == (None, [])

    sweep = store.sweep("s")
    assert sweep is not None and sweep.status == "done"
    assert events("s") == recorded


# --- after a restart -------------------------------------------------------------------------


def test_a_sweep_whose_trials_all_ended_before_a_crash_is_finished_now(
    orchestrator_db: Path,
) -> None:
    create("ended", 2)
    create("failed", 1)
    create("going", 2)
    # Rows as a crash may leave them: every trial finished, the sweep not.
    for trial_id, outcome in [
        ("ended/0", "failed"),
        ("ended/1", "succeeded"),
        ("failed/0", "failed"),
    ]:
        store.Trial.update(state=domain.FINISHED, outcome=outcome).where(
            store.Trial.id == trial_id
        ).execute()
    store.finish_trial(run("going/0"), ended(Outcome.SUCCEEDED, exit_code=0))

    assert sorted(store.finish_complete_sweeps()) == ["ended", "failed"]

    statuses = {s.id: s.status for s in store.Sweep.select()}
    assert statuses == {"ended": "done", "failed": "error", "going": "running"}
    assert events("ended")[-1] == ("sweep_finished", None, {"status": "done"})
    assert store.finish_complete_sweeps() == []


def test_trials_of_runners_no_longer_configured_are_queued_again(orchestrator_db: Path) -> None:
    create("s", 3)
    create("t", 1, retries=1)
    lost = run("t/0", "gone")
    store.finish_trial(lost, ended(Outcome.RUNNER_LOST))
    assert store.held_by("gone") == ([], ["t/0"])
    run("s/0", "gone")
    run("s/1", "kept")
    store.assign("s/2", "gone")

    assert sorted(store.release_unknown_runners(["kept"])) == ["s/0", "s/2"]

    for trial_id in ("s/0", "s/2"):
        row = trial(trial_id)
        assert (row.state, row.runner, row.attempts) == ("pending", None, 1)
    assert (trial("s/1").state, trial("s/1").runner) == ("running", "kept")
    assert store.held_by("gone") == ([], [])
    assert store.holders() == {"kept"}
    requeued = [data for kind, _, data in events("s") if kind == "trial_requeued"]
    assert requeued == [{"runner": "gone", "reason": "runner no longer configured"}] * 2
    # Their next dispatch is a new execution: a late report of the old one is stale.
    assert run("s/0", "kept") == "s/0@2"
    assert store.finish_trial("s/0", ended(Outcome.SUCCEEDED, exit_code=0)) is None
    assert trial("s/0").state == "running"


def test_held_by_lists_a_runners_trials_in_flight_in_order(orchestrator_db: Path) -> None:
    create("b", 1)
    create("a", 3, maxParallel=2)
    store.assign("b/0", "r1")
    run("a/1", "r1")
    store.assign("a/0", "r2")
    store.finish_trial(run("a/2", "r1"), ended(Outcome.FAILED, exit_code=1))

    held, abandoned = store.held_by("r1")

    assert [h.trial.id for h in held] == ["a/1", "b/0"]
    assert all(h.source == SCRIPT and not h.cancelled for h in held)
    assert [h.spec for h in held] == [
        {"task": "task", "maxParallel": 2, "limits": DEFAULTS},
        {"task": "task", "limits": DEFAULTS},
    ]
    assert abandoned == []
    assert [h.trial.id for h in store.held_by("r2")[0]] == ["a/0"]
    assert store.held_by("r3") == ([], [])
