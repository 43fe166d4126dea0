"""The orchestrator's store and dispatcher in-process, on a throwaway SQLite file:
fair dispatch between sweeps, metrics recorded in batches, and a result the store
refuses ending its trial alone. No Docker, no runners: the runner links are never
started."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from orchestrator_svc import store
from orchestrator_svc.config import Settings
from orchestrator_svc.dispatch import Dispatcher
from orchestrator_svc.domain import PlannedTrial
from orchestrator_svc.news import SweepNews
from orchestrator_svc.recorder import MAX_BATCH_METRICS, MAX_PENDING_METRICS, MetricRecorder
from prism.sqlite import DbThread
from prism.trial import Artifact, Outcome, TrialResult


@pytest.fixture
def db_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "orchestrator.db"
    db = DbThread(store.db, path, store.MODELS, schema_version=store.SCHEMA_VERSION)
    db.close()
    store.db.init(str(path))
    store.db.connect()
    yield path
    store.db.close()


def sweep(sweep_id: str, trials: int, created_at: float, **spec: object) -> str:
    planned = [PlannedTrial(f"t{i}", "print(1)", {"i": i}) for i in range(trials)]
    store.create_sweep(sweep_id, "task", {"task": "task", **spec}, planned)
    store.Sweep.update(created_at=created_at).where(store.Sweep.id == sweep_id).execute()
    return sweep_id


def dispatch(limit: int) -> list[str]:
    """Pick and assign like the dispatcher does; the trial ids in the order picked."""
    picked = []
    for item in store.dispatchable(limit):
        assert store.assign(item.trial.id, "runner") is not None
        picked.append(item.trial.id)
    return picked


def test_a_small_sweep_gets_the_next_free_slot_before_a_large_one(db_path: Path) -> None:
    large = sweep("large", 14, created_at=1.0)
    assert dispatch(12) == [f"{large}/{i}" for i in range(12)]
    small = sweep("small", 1, created_at=2.0)

    # A slot frees: the small sweep (nothing in flight) comes first, then the large.
    assert dispatch(2) == [f"{small}/0", f"{large}/12"]


def test_sweeps_take_turns_when_slots_are_free(db_path: Path) -> None:
    sweep("a", 5, created_at=1.0)
    sweep("b", 2, created_at=2.0)
    sweep("c", 5, created_at=3.0)

    assert dispatch(8) == ["a/0", "b/0", "c/0", "a/1", "b/1", "c/1", "a/2", "c/2"]


def test_max_parallel_holds_within_the_fair_order(db_path: Path) -> None:
    sweep("capped", 5, created_at=1.0, maxParallel=2)
    sweep("free", 5, created_at=2.0)

    assert dispatch(6) == ["capped/0", "free/0", "capped/1", "free/1", "free/2", "free/3"]
    assert dispatch(6) == ["free/4"]


def test_metrics_are_appended_in_one_batch_and_stale_ones_dropped(db_path: Path) -> None:
    sweep("m", 2, created_at=1.0)
    dispatch(2)
    store.finish_trial("m/1", TrialResult(outcome=Outcome.SUCCEEDED, reason="ok", exit_code=0))
    seq_before = store.sweep("m").last_seq  # type: ignore[union-attr]

    store.record_metrics(
        [("m/0", json.dumps({"step": i})) for i in range(300)]
        + [("m/1", '{"late": true}'), ("m/0@7", "{}")]
    )

    events = store.events_after("m", seq_before, 1000)
    assert [json.loads(e.data) for e in events] == [{"values": {"step": i}} for i in range(300)]
    assert [e.seq for e in events] == list(range(seq_before + 1, seq_before + 301))
    assert store.sweep("m").last_seq == seq_before + 300  # type: ignore[union-attr]


def settings(tmp_path: Path) -> Settings:
    return Settings(
        address="127.0.0.1:0",
        data_dir=tmp_path,
        api_token="api",
        runner_token="runner",
        runners=(("runner", "127.0.0.1:1"),),
        examples=(("example", "print(1)"),),
        example_wall_seconds=1.0,
        sync_wait_seconds=1.0,
        reconcile_seconds=1.0,
    )


def test_a_result_the_store_refuses_ends_its_trial_alone(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.db"

    async def scenario() -> tuple[store.Trial | None, store.Trial | None]:
        db = DbThread(store.db, path, store.MODELS, schema_version=store.SCHEMA_VERSION)
        try:
            await db(sweep, "poisoned", 1, 1.0)
            await db(sweep, "other", 1, 2.0)
            await db(dispatch, 2)
            # The store refuses one artifact name, as a store may refuse anything
            # (a full disk, a constraint, a bug): a trigger stands in for the cause.
            with closing(sqlite3.connect(path)) as raw:
                raw.execute(
                    "CREATE TRIGGER refuse BEFORE INSERT ON artifact WHEN NEW.name = 'poison' "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
                raw.commit()
            dispatcher = Dispatcher(settings(tmp_path), db, SweepNews())
            poisoned = TrialResult(
                outcome=Outcome.SUCCEEDED,
                reason="ok",
                exit_code=0,
                artifacts=(Artifact("poison", b"x"),),
            )
            await dispatcher.record("poisoned/0", poisoned)
            fine = TrialResult(outcome=Outcome.SUCCEEDED, reason="ok", exit_code=0)
            await dispatcher.record("other/0", fine)
            await dispatcher.close()
            return (
                await db(store.trial_at, "poisoned", 0),
                await db(store.trial_at, "other", 0),
            )
        finally:
            db.close()

    poisoned, other = asyncio.run(scenario())
    assert poisoned is not None and other is not None

    assert (poisoned.state, poisoned.outcome) == ("finished", "sandbox_error")
    assert poisoned.reason.startswith("the orchestrator could not record the trial's result")
    assert "error id" in poisoned.reason
    assert (other.state, other.outcome) == ("finished", "succeeded")


def test_a_trials_end_waits_for_its_own_metrics_only() -> None:
    written: list[list[tuple[str, str]]] = []

    async def scenario() -> list[str]:
        gate = asyncio.Event()

        async def write(batch: list[tuple[str, str]]) -> None:
            await gate.wait()  # the store is slow
            written.append(batch)

        recorder = MetricRecorder(write)
        task = asyncio.create_task(recorder.run())
        seen = []
        for step in range(3):
            recorder.add("t/0", f'{{"step":{step}}}')
        # Another execution, with no metrics of its own waiting, is not held up.
        await asyncio.wait_for(recorder.recorded("t/1"), 1)
        waiting = asyncio.create_task(recorder.recorded("t/0"))
        await asyncio.sleep(0.05)
        seen.append("done" if waiting.done() else "waiting")
        gate.set()
        await waiting
        seen.append(f"written {sum(len(b) for b in written)}")
        task.cancel()
        return seen

    assert asyncio.run(scenario()) == ["waiting", "written 3"]


def test_a_flood_of_metrics_is_read_no_faster_than_it_is_written() -> None:
    async def scenario() -> tuple[bool, bool]:
        gate = asyncio.Event()

        async def write(batch: list[tuple[str, str]]) -> None:
            await gate.wait()

        recorder = MetricRecorder(write)
        task = asyncio.create_task(recorder.run())
        for _ in range(MAX_PENDING_METRICS + MAX_BATCH_METRICS):
            recorder.add("t/0", "{}")
        await asyncio.sleep(0)  # the first batch is taken and its write waits
        room = asyncio.create_task(recorder.room())
        await asyncio.sleep(0.05)
        blocked = not room.done()
        gate.set()
        await asyncio.wait_for(room, 5)
        task.cancel()
        return blocked, room.done()

    assert asyncio.run(scenario()) == (True, True)


def test_a_batch_the_store_refuses_is_dropped_alone() -> None:
    async def scenario() -> list[int]:
        written: list[int] = []

        async def write(batch: list[tuple[str, str]]) -> None:
            if any(values == "poison" for _, values in batch):
                raise RuntimeError("refused")
            written.append(len(batch))

        recorder = MetricRecorder(write)
        task = asyncio.create_task(recorder.run())
        recorder.add("t/0", "poison")
        await recorder.recorded("t/0")
        recorder.add("t/1", "{}")
        await recorder.recorded("t/1")
        task.cancel()
        return written

    assert asyncio.run(scenario()) == [1]
