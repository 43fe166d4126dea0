"""The runner's TrialExecutor in-process: the real executor and the real runner store
(on a throwaway SQLite file), with the fake sandbox and images helper of tests/fakes.py
in place of Docker. Each scenario runs on a fresh event loop, bounded in time."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from prism.errors import Unavailable
from prism.sqlite import DbThread
from prism.trial import MAX_SCRIPT_BYTES, Outcome, TrialResult
from prism.v1 import runner_pb2, trial_pb2
from runner_svc import store
from runner_svc.executor import TrialExecutor
from tests.fakes import WAIT_SECONDS, FakeImages, FakeSandbox

T = TypeVar("T")
Event = runner_pb2.RunnerEvent
Queue = asyncio.Queue[Any]
PREVIOUS = runner_pb2.TrialAccepted
# A scenario that takes longer is stuck: fail it rather than hang the run.
SCENARIO_SECONDS = 10.0


def run_async(scenario: Coroutine[Any, Any, T]) -> T:
    """Run a test's scenario on a fresh event loop (no pytest plugin for async tests)."""
    return asyncio.run(asyncio.wait_for(scenario, SCENARIO_SECONDS))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runner.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[DbThread]:
    db = DbThread(store.db, db_path, store.MODELS, schema_version=store.SCHEMA_VERSION)
    yield db
    db.close()


@dataclass
class Runner:
    executor: TrialExecutor
    sandbox: FakeSandbox
    images: FakeImages

    async def send(
        self,
        trial_id: str,
        script: str = "exit 0",
        *,
        params_json: str = "{}",
        requirements: Sequence[str] = (),
    ) -> Queue:
        """A RunTrial as a stream sends it; the stream's outbox."""
        outbox: Queue = asyncio.Queue()
        run = runner_pb2.RunTrial(
            trial_id=trial_id,
            script=script,
            params_json=params_json,
            limits=trial_pb2.TrialLimits(wall_seconds=30),
            requirements=requirements,
        )
        await self.executor.submit(run, outbox)
        return outbox

    async def cancel(self, trial_id: str) -> Queue:
        """A CancelTrial as a stream sends it; the stream's outbox."""
        outbox: Queue = asyncio.Queue()
        await self.executor.cancel(trial_id, outbox)
        return outbox

    async def running(self, trial_id: str) -> None:
        """Until the trial's sandbox run is in progress."""
        await asyncio.to_thread(self.sandbox.wait_running, trial_id)


@asynccontextmanager
async def runner(
    db: DbThread, *, slots: int = 2, sandbox: FakeSandbox | None = None
) -> AsyncIterator[Runner]:
    sandbox, images = sandbox or FakeSandbox(), FakeImages()
    executor = TrialExecutor(db, sandbox, images, slots=slots)
    try:
        yield Runner(executor, sandbox, images)
    finally:
        # Bounded too: a shutdown that hangs must fail the test, not hold the run.
        async with asyncio.timeout(SCENARIO_SECONDS):
            await executor.close()


async def until_finished(outbox: Queue) -> list[Event]:
    """The events on `outbox` up to its first TrialFinished."""
    events = [await outbox.get()]
    while not events[-1].HasField("finished"):
        events.append(await outbox.get())
    return events


def waiting(outbox: Queue) -> list[Event]:
    """The events on `outbox` now, without waiting for more."""
    return [outbox.get_nowait() for _ in range(outbox.qsize())]


def kinds(events: list[Event]) -> list[str]:
    return [str(event.WhichOneof("event")) for event in events]


def previous(events: list[Event]) -> int:
    accepted = [event.accepted for event in events if event.HasField("accepted")]
    assert len(accepted) == 1, events
    return accepted[0].previous


def result(events: list[Event]) -> trial_pb2.TrialResult:
    finished = [event.finished.result for event in events if event.HasField("finished")]
    assert len(finished) == 1, events
    return finished[0]


def executions() -> dict[str, int]:
    """Containers started per trial, as the store counts them (on the db thread)."""
    cursor = store.db.execute_sql("SELECT trial_id, COUNT(*) FROM execution GROUP BY trial_id")
    return dict(cursor.fetchall())


def states() -> dict[str, str]:
    return {row.id: row.state for row in store.Trial.select()}


def test_a_trial_runs_once_however_often_it_is_sent(db: DbThread) -> None:
    """Sent again while it runs, a trial re-attaches to its execution; sent again once
    it has finished, it replays its result. The sandbox runs it exactly once."""

    async def scenario() -> tuple[list[Event], ...]:
        async with runner(db) as r:
            first = await r.send("t/0", "block", params_json='{"x": 1}')
            await r.running("t/0")
            again = await r.send("t/0", "block", params_json='{"x": 1}')
            r.sandbox.release("t/0")
            first_events, again_events = await until_finished(first), await until_finished(again)
            later = await until_finished(await r.send("t/0", "block", params_json='{"x": 1}'))
            assert [call.trial_id for call in r.sandbox.calls] == ["t/0"]
            assert await db(executions) == {"t/0": 1}
            return first_events, again_events, later

    first, again, later = run_async(scenario())
    assert kinds(first) == ["accepted", "started", "finished"]
    assert kinds(again) == kinds(later) == ["accepted", "finished"]
    assert previous(first) == PREVIOUS.PREVIOUS_NONE
    assert previous(again) == PREVIOUS.PREVIOUS_RUNNING
    assert previous(later) == PREVIOUS.PREVIOUS_FINISHED
    assert result(first).outcome == trial_pb2.OUTCOME_SUCCEEDED
    assert json.loads(result(first).result_json) == {"x": 1}
    assert result(again) == result(later) == result(first)


def test_a_stream_cut_while_the_trial_is_written_down_leaves_it_running(
    db: DbThread, db_path: Path
) -> None:
    """The orchestrator may cut its stream at any instant, even while the runner
    writes a new trial down: the trial still starts, and sent again it re-attaches
    (recorded but not running, it could only be answered sandbox_error)."""
    blocker = sqlite3.connect(db_path, isolation_level=None)

    async def scenario() -> tuple[list[Event], list[str]]:
        async with runner(db) as r:
            blocker.execute("BEGIN IMMEDIATE")  # the trial's write waits for this one
            cut = asyncio.create_task(r.send("cut/0", "block"))
            await asyncio.sleep(0.05)  # the write is under way on the db thread
            cut.cancel()
            blocker.execute("COMMIT")
            again = await r.send("cut/0", "block")
            r.sandbox.release("cut/0")
            return await until_finished(again), [call.trial_id for call in r.sandbox.calls]

    with closing(blocker):
        again, ran = run_async(scenario())
    assert previous(again) == PREVIOUS.PREVIOUS_RUNNING
    assert result(again).outcome == trial_pb2.OUTCOME_SUCCEEDED
    assert ran == ["cut/0"]


def test_never_more_trials_run_at_once_than_slots(db: DbThread) -> None:
    async def scenario() -> tuple[list[str], list[list[Event]], int]:
        async with runner(db, slots=2) as r:
            outboxes = [await r.send(f"t/{i}", "block") for i in range(5)]
            await r.running("t/0")
            await r.running("t/1")
            # Room for a third to start, were the slots not kept.
            await asyncio.sleep(0.1)
            started = [
                event.started.trial_id
                for outbox in outboxes
                for event in waiting(outbox)
                if event.HasField("started")
            ]
            for i in range(5):
                r.sandbox.release(f"t/{i}")
            return started, [await until_finished(outbox) for outbox in outboxes], r.sandbox.peak

    started, finished, peak = run_async(scenario())
    assert started == ["t/0", "t/1"]
    assert peak == 2
    assert [result(events).outcome for events in finished] == [trial_pb2.OUTCOME_SUCCEEDED] * 5


def test_metrics_reach_the_stream_in_batches_before_the_trial_finishes(db: DbThread) -> None:
    count = 2000

    async def scenario() -> list[Event]:
        async with runner(db) as r:
            return await until_finished(await r.send("m/0", f"metrics {count}"))

    events = run_async(scenario())
    assert kinds(events)[:2] == ["accepted", "started"]
    assert set(kinds(events)[2:-1]) == {"metric"}
    batches = [event.metric for event in events if event.HasField("metric")]
    assert {batch.trial_id for batch in batches} == {"m/0"}
    values = [json.loads(text) for batch in batches for text in batch.values_json]
    assert values == [{"step": i} for i in range(count)]
    assert len(batches) < count
    assert result(events).outcome == trial_pb2.OUTCOME_SUCCEEDED


def test_a_cancel_before_the_trial_is_known_stands(db: DbThread) -> None:
    """An unknown trial cancelled is recorded as cancelled: sent later, it never runs."""

    async def scenario() -> tuple[list[Event], list[Event]]:
        async with runner(db) as r:
            cancelled = await until_finished(await r.cancel("c/0"))
            later = await until_finished(await r.send("c/0"))
            assert r.sandbox.calls == []
            return cancelled, later

    cancelled, later = run_async(scenario())
    assert kinds(cancelled) == kinds(later) == ["accepted", "finished"]
    assert previous(cancelled) == PREVIOUS.PREVIOUS_NONE
    assert previous(later) == PREVIOUS.PREVIOUS_FINISHED
    assert result(cancelled).outcome == trial_pb2.OUTCOME_CANCELLED
    assert result(cancelled).reason == "cancelled before it started"
    assert result(later) == result(cancelled)


def test_a_trial_cancelled_while_it_waits_for_a_slot_never_starts(db: DbThread) -> None:
    """The sandbox does not know a trial before its run (its cancel does nothing then):
    the executor's own mark is checked again before the container starts."""

    async def scenario() -> tuple[list[Event], list[Event], list[Event]]:
        async with runner(db, slots=1) as r:
            await r.send("a/0", "block")
            await r.running("a/0")
            queued = await r.send("b/0")
            resent = await r.send("b/0")
            cancel = await r.cancel("b/0")
            r.sandbox.release("a/0")
            events = await until_finished(queued), await until_finished(cancel)
            assert [call.trial_id for call in r.sandbox.calls] == ["a/0"]
            assert await db(executions) == {"a/0": 1}
            return *events, waiting(resent)

    queued, cancel, resent = run_async(scenario())
    assert kinds(queued) == ["accepted", "finished"]
    assert previous(resent) == previous(cancel) == PREVIOUS.PREVIOUS_RUNNING
    assert result(queued) == result(cancel)
    assert result(cancel).outcome == trial_pb2.OUTCOME_CANCELLED
    assert result(cancel).reason == "cancelled before it started"


def test_a_trial_cancelled_while_it_waits_for_its_image_never_starts(db: DbThread) -> None:
    async def scenario() -> list[Event]:
        async with runner(db) as r:
            r.images.hold()
            queued = await r.send("i/0", requirements=["numpy"])
            cancel = await r.cancel("i/0")
            r.images.release()
            events = await until_finished(cancel)
            await until_finished(queued)
            assert r.sandbox.calls == []
            return events

    events = run_async(scenario())
    assert previous(events) == PREVIOUS.PREVIOUS_RUNNING
    assert result(events).outcome == trial_pb2.OUTCOME_CANCELLED


def test_a_trial_cancelled_while_it_runs_is_stopped(db: DbThread) -> None:
    async def scenario() -> tuple[list[Event], list[Event]]:
        async with runner(db) as r:
            running = await r.send("r/0", "block")
            await r.running("r/0")
            cancel = await r.cancel("r/0")
            events = await until_finished(running), await until_finished(cancel)
            assert r.sandbox.cancels == ["r/0"]
            assert (await db(store.finished, "r/0")) == TrialResult(
                outcome=Outcome.CANCELLED, reason="cancelled"
            )
            return events

    running, cancel = run_async(scenario())
    assert kinds(running) == ["accepted", "started", "finished"]
    assert kinds(cancel) == ["accepted", "finished"]
    assert previous(cancel) == PREVIOUS.PREVIOUS_RUNNING
    assert result(running) == result(cancel)
    assert result(cancel).outcome == trial_pb2.OUTCOME_CANCELLED


def test_a_cancel_after_the_trial_finished_replays_its_result(db: DbThread) -> None:
    async def scenario() -> tuple[list[Event], list[Event]]:
        async with runner(db) as r:
            ran = await until_finished(await r.send("f/0"))
            cancel = await until_finished(await r.cancel("f/0"))
            assert r.sandbox.cancels == []
            return ran, cancel

    ran, cancel = run_async(scenario())
    assert kinds(cancel) == ["accepted", "finished"]
    assert previous(cancel) == PREVIOUS.PREVIOUS_FINISHED
    assert result(cancel) == result(ran)
    assert result(cancel).outcome == trial_pb2.OUTCOME_SUCCEEDED


def test_a_forgotten_stream_gets_no_more_events(db: DbThread) -> None:
    async def scenario() -> tuple[list[Event], list[Event]]:
        async with runner(db) as r:
            gone = await r.send("g/0", "block")
            await r.running("g/0")
            kept = await r.send("g/0")
            r.executor.forget(gone)
            r.sandbox.release("g/0")
            return await until_finished(kept), waiting(gone)

    kept, gone = run_async(scenario())
    assert kinds(kept) == ["accepted", "finished"]
    assert kinds(gone) == ["accepted", "started"]


@pytest.mark.parametrize("refused", ["the result", "every write"])
def test_a_result_the_store_refuses_ends_that_trial_alone_as_sandbox_error(
    db: DbThread, db_path: Path, refused: str
) -> None:
    # The store's own database refuses the write, as a full disk would.
    succeeded = " AND NEW.outcome = 'succeeded'" if refused == "the result" else ""
    with closing(sqlite3.connect(db_path)) as connection:
        connection.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE OF state ON trial"
            f" WHEN NEW.id = 'refused/0' AND NEW.state = 'finished'{succeeded}"
            " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
        )

    async def scenario() -> tuple[list[Event], list[Event], dict[str, str]]:
        async with runner(db) as r:
            refused = await until_finished(await r.send("refused/0"))
            after = await until_finished(await r.send("after/0"))
            return refused, after, await db(states)

    refused_events, after, stored = run_async(scenario())
    assert result(refused_events).outcome == trial_pb2.OUTCOME_SANDBOX_ERROR
    assert "could not record the trial's result" in result(refused_events).reason
    assert result(after).outcome == trial_pb2.OUTCOME_SUCCEEDED
    # The fallback is recorded when the store takes that much.
    assert stored["refused/0"] == ("finished" if refused == "the result" else "running")


def test_a_sandbox_that_raises_ends_that_trial_alone_as_sandbox_error(db: DbThread) -> None:
    async def scenario() -> tuple[list[Event], list[Event], TrialResult | None]:
        async with runner(db) as r:
            broken = await until_finished(await r.send("broken/0", "raise"))
            after = await until_finished(await r.send("after/0"))
            return broken, after, await db(store.finished, "broken/0")

    broken, after, stored = run_async(scenario())
    assert result(broken).outcome == trial_pb2.OUTCOME_SANDBOX_ERROR
    assert "could not execute the trial" in result(broken).reason
    assert stored is not None and stored.outcome == Outcome.SANDBOX_ERROR
    assert result(after).outcome == trial_pb2.OUTCOME_SUCCEEDED


def test_a_shutdown_ends_a_run_as_sandbox_error_and_drops_trials_not_started(
    db: DbThread,
) -> None:
    """A trial stopped by the runner's own shutdown is the platform's failure; one
    still waiting (for its image or for a slot) never started: it stays queued and
    runs when sent again after the restart."""

    async def scenario() -> tuple[list[Event], list[Event], list[Event], dict[str, str]]:
        async with runner(db, slots=1) as r:
            r.images.hold()
            running = await r.send("run/0", "block")
            image = await r.send("image/0", requirements=["numpy"])
            slot = await r.send("slot/0")
            await r.running("run/0")
            await r.executor.close()
            with pytest.raises(Unavailable):
                await r.send("new/0")
            with pytest.raises(Unavailable):
                await r.cancel("new/0")
            assert [call.trial_id for call in r.sandbox.calls] == ["run/0"]
            return await until_finished(running), waiting(image), waiting(slot), await db(states)

    running, image, slot, stored = run_async(scenario())
    assert result(running).outcome == trial_pb2.OUTCOME_SANDBOX_ERROR
    assert result(running).reason == "the runner shut down during the trial"
    assert kinds(image) == kinds(slot) == ["accepted"]
    assert stored == {"run/0": "finished", "image/0": "queued", "slot/0": "queued"}


class SlowToCancel(FakeSandbox):
    """A sandbox whose cancel returns only when the test lets it, as a slow engine's
    kill does: by then the trial it stopped may have ended and been recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.cancel_may_return = threading.Event()

    def cancel(self, trial_id: str) -> bool:
        stopped = super().cancel(trial_id)
        self.cancel_may_return.wait(WAIT_SECONDS)
        return stopped


def test_a_shutdown_ends_when_the_last_trial_ends_while_it_is_being_stopped(
    db: DbThread,
) -> None:
    sandbox = SlowToCancel()

    async def scenario() -> list[Event]:
        async with runner(db, sandbox=sandbox) as r:
            outbox = await r.send("last/0", "block")
            await r.running("last/0")
            closing = asyncio.create_task(r.executor.close())
            events = await until_finished(outbox)
            sandbox.cancel_may_return.set()
            await closing
            return events

    events = run_async(scenario())
    assert result(events).outcome == trial_pb2.OUTCOME_SANDBOX_ERROR


def test_a_trial_with_requirements_runs_in_their_image_and_its_build_holds_no_slot(
    db: DbThread,
) -> None:
    async def scenario() -> tuple[list[Event], list[Event], FakeSandbox, FakeImages]:
        async with runner(db, slots=1) as r:
            r.images.hold()
            image = await r.send("image/0", requirements=["numpy", "attrs"])
            plain = await until_finished(await r.send("plain/0"))
            r.images.release()
            return await until_finished(image), plain, r.sandbox, r.images

    image, plain, sandbox, images = run_async(scenario())
    assert result(plain).outcome == result(image).outcome == trial_pb2.OUTCOME_SUCCEEDED
    assert [(call.trial_id, call.image) for call in sandbox.calls] == [
        ("plain/0", None),
        ("image/0", "prism-sandbox:with-attrs-numpy"),
    ]
    assert images.requested == [("numpy", "attrs")]


def test_requirements_that_cannot_be_installed_fail_the_trial_without_running_it(
    db: DbThread,
) -> None:
    async def scenario() -> tuple[list[Event], FakeSandbox]:
        async with runner(db) as r:
            return await until_finished(await r.send("i/0", requirements=["refused"])), r.sandbox

    events, sandbox = run_async(scenario())
    assert kinds(events) == ["accepted", "finished"]
    assert result(events).outcome == trial_pb2.OUTCOME_FAILED
    assert result(events).reason == "pip could not find the requirement refused"
    assert sandbox.calls == []


@pytest.mark.parametrize(
    ("script", "params_json", "problem"),
    [
        (" \n\t", "{}", "the script is empty"),
        ("x" * (MAX_SCRIPT_BYTES + 1), "{}", f"larger than {MAX_SCRIPT_BYTES} bytes"),
        # Counted in bytes, not characters.
        ("é" * (MAX_SCRIPT_BYTES // 2 + 1), "{}", f"larger than {MAX_SCRIPT_BYTES} bytes"),
        ("exit 0", "[1]", "not a JSON object"),
        ("exit 0", '{"x": ', "not a JSON object"),
    ],
    ids=["empty", "too-large", "too-large-in-bytes", "params-a-list", "params-not-json"],
)
def test_an_unrunnable_trial_fails_the_same_way_every_time_without_being_recorded(
    db: DbThread, script: str, params_json: str, problem: str
) -> None:
    async def scenario() -> tuple[list[Event], list[Event], dict[str, str]]:
        async with runner(db) as r:
            first = await until_finished(await r.send("bad/0", script, params_json=params_json))
            again = await until_finished(await r.send("bad/0", script, params_json=params_json))
            assert r.sandbox.calls == []
            return first, again, await db(states)

    first, again, stored = run_async(scenario())
    assert kinds(first) == ["accepted", "finished"]
    assert previous(first) == previous(again) == PREVIOUS.PREVIOUS_NONE
    assert result(first).outcome == trial_pb2.OUTCOME_FAILED
    assert problem in result(first).reason
    assert result(again) == result(first)
    assert stored == {}


def test_recovery_forgets_queued_trials_and_ends_running_ones_as_sandbox_error(
    db: DbThread,
) -> None:
    async def scenario() -> tuple[Any, ...]:
        await db(store.admit, "queued/0", "{}")
        await db(store.admit, "running/0", "{}")
        await db(store.mark_started, "running/0")
        await db(store.admit, "done/0", "{}")
        done = TrialResult(outcome=Outcome.SUCCEEDED, reason="exited with code 0", exit_code=0)
        await db(store.finish, "done/0", done)
        counts = await db(store.recover)
        again = await db(store.recover)
        return counts, again, await db(states), await db(store.finished, "running/0")

    counts, again, stored, interrupted = run_async(scenario())
    assert counts == (1, 1)
    assert again == (0, 0)
    assert stored == {"running/0": "finished", "done/0": "finished"}
    assert interrupted.outcome == Outcome.SANDBOX_ERROR
    assert interrupted.reason == "the runner restarted while the trial was running"
    assert interrupted.exit_code == -1


def test_after_recovery_a_forgotten_trial_runs_and_an_interrupted_one_replays(
    db: DbThread,
) -> None:
    async def scenario() -> tuple[list[Event], list[Event], list[str]]:
        await db(store.admit, "queued/0", "{}")
        await db(store.admit, "running/0", "{}")
        await db(store.mark_started, "running/0")
        await db(store.recover)
        async with runner(db) as r:
            forgotten = await until_finished(await r.send("queued/0"))
            interrupted = await until_finished(await r.send("running/0"))
            return forgotten, interrupted, [call.trial_id for call in r.sandbox.calls]

    forgotten, interrupted, ran = run_async(scenario())
    assert previous(forgotten) == PREVIOUS.PREVIOUS_NONE
    assert result(forgotten).outcome == trial_pb2.OUTCOME_SUCCEEDED
    assert previous(interrupted) == PREVIOUS.PREVIOUS_FINISHED
    assert result(interrupted).outcome == trial_pb2.OUTCOME_SANDBOX_ERROR
    assert ran == ["queued/0"]


def test_a_cancel_while_the_run_is_handed_to_the_sandbox_still_stops_it(db: DbThread) -> None:
    """Between the trial's start and the moment the sandbox knows its run, a cancel finds
    nothing to stop: it is tried again, so the trial ends cancelled instead of running on
    (here it would block until the fake gives up)."""

    async def scenario() -> list[Event]:
        async with runner(db) as r:
            r.sandbox.starting.clear()
            sent = await r.send("t/0", "block")
            while "started" not in kinds(waiting(sent)):  # noqa: ASYNC110 - the fake's state
                await asyncio.sleep(0.01)
            stop = asyncio.create_task(r.cancel("t/0"))
            # The cancel finds no run yet, and tries again.
            while len(r.sandbox.cancels) < 2:  # noqa: ASYNC110 - the fake's state
                await asyncio.sleep(0.01)
            assert not stop.done() and r.sandbox.cancels
            r.sandbox.starting.set()
            events = await until_finished(await stop)
            return events

    events = run_async(scenario())
    assert result(events).outcome == trial_pb2.OUTCOME_CANCELLED


# --- the drain (SIGTERM) ----------------------------------------------------------------


async def until_returned(outbox: Queue) -> list[Event]:
    """The events on `outbox` up to its first TrialReturned."""
    events = [await outbox.get()]
    while not events[-1].HasField("returned"):
        events.append(await outbox.get())
    return events


def test_a_drain_hands_back_what_is_still_running_at_its_deadline(db: DbThread) -> None:
    """Past the deadline (0 s here: the trial is never released) the run is stopped,
    recorded as ended, and handed back: TrialReturned, never TrialFinished."""

    async def scenario() -> tuple[list[Event], list[Event], Any, dict[str, int]]:
        async with runner(db) as r:
            stream: Queue = asyncio.Queue()
            r.executor.open(stream)
            sent = await r.send("held/0", "block")
            await r.running("held/0")
            await r.executor.drain(0)
            assert r.executor.draining and r.sandbox.cancels == ["held/0"]
            return (
                await until_returned(sent),
                waiting(stream),
                await db(store.finished, "held/0"),
                await db(executions),
            )

    events, stream, stored, ran = run_async(scenario())
    assert kinds(events) == ["accepted", "started", "returned"]
    assert events[-1].returned.trial_id == "held/0"
    assert events[-1].returned.reason == "handed back: runner stopping"
    assert kinds(stream) == ["draining"]
    assert stored.outcome == Outcome.SANDBOX_ERROR
    assert stored.reason == "handed back: runner stopping"
    assert ran == {"held/0": 1}


def test_a_trial_that_ends_before_the_drains_deadline_finishes_as_usual(db: DbThread) -> None:
    async def scenario() -> tuple[list[Event], list[Event]]:
        async with runner(db) as r:
            sent = await r.send("quick/0", "block\nexit 0")
            await r.running("quick/0")
            # A deadline the test never reaches: the drain ends when the trial does.
            draining = asyncio.create_task(r.executor.drain(3600))
            while not r.executor.draining:  # noqa: ASYNC110 - the executor's state
                await asyncio.sleep(0.01)
            r.sandbox.release("quick/0")
            await draining
            assert r.sandbox.cancels == []
            return await until_finished(sent), waiting(sent)

    events, after = run_async(scenario())
    assert kinds(events) == ["accepted", "started", "finished"]
    assert result(events).outcome == trial_pb2.OUTCOME_SUCCEEDED
    assert after == []  # no TrialReturned as well


def test_a_new_trial_sent_during_a_drain_is_handed_back_at_once_and_a_known_one_answered(
    db: DbThread,
) -> None:
    """A new trial is not taken (nor recorded: sent again after the restart, it runs);
    one the runner knows is answered from its record, as always."""

    async def scenario() -> tuple[list[Event], list[Event], str | None, list[str]]:
        async with runner(db) as r:
            await until_finished(await r.send("done/0"))
            await r.executor.drain(0)
            new = await r.send("new/0")
            known = await until_finished(await r.send("done/0"))
            return (
                waiting(new),
                known,
                await db(store.state, "new/0"),
                [call.trial_id for call in r.sandbox.calls],
            )

    new, known, stored, ran = run_async(scenario())
    assert kinds(new) == ["returned"]
    assert (new[0].returned.trial_id, new[0].returned.reason) == ("new/0", "runner draining")
    assert stored is None
    assert previous(known) == PREVIOUS.PREVIOUS_FINISHED
    assert result(known).outcome == trial_pb2.OUTCOME_SUCCEEDED
    assert ran == ["done/0"]


def test_a_trial_waiting_for_its_image_or_a_slot_is_handed_back_without_starting(
    db: DbThread,
) -> None:
    async def scenario() -> tuple[list[Event], list[Event], list[Event], list[str]]:
        async with runner(db, slots=1) as r:
            r.images.hold()
            image = await r.send("image/0", requirements=["numpy"])
            running = await r.send("run/0", "block")
            slot = await r.send("slot/0")
            await r.running("run/0")
            await r.executor.drain(0)
            return (
                await until_returned(image),
                await until_returned(running),
                await until_returned(slot),
                [call.trial_id for call in r.sandbox.calls],
            )

    image, running, slot, ran = run_async(scenario())
    assert kinds(image) == kinds(slot) == ["accepted", "returned"]
    assert kinds(running) == ["accepted", "started", "returned"]
    assert ran == ["run/0"]


def test_a_returned_trial_sent_again_after_a_restart_is_answered_not_run(db: DbThread) -> None:
    """What an orchestrator that ignores TrialReturned does: it sends the execution
    again once the runner is back. The runner's record answers; nothing runs again."""

    async def scenario() -> tuple[list[Event], list[str]]:
        async with runner(db) as r:
            await r.send("held/0", "block")
            await r.running("held/0")
            await r.executor.stop(0)
        await db(store.recover)
        async with runner(db) as restarted:
            again = await until_finished(await restarted.send("held/0", "block"))
            return again, [call.trial_id for call in restarted.sandbox.calls]

    again, ran = run_async(scenario())
    assert previous(again) == PREVIOUS.PREVIOUS_FINISHED
    assert result(again).outcome == trial_pb2.OUTCOME_SANDBOX_ERROR
    assert result(again).reason == "handed back: runner stopping"
    assert ran == []


def test_a_stop_ends_every_stream_after_what_it_had_to_say(db: DbThread) -> None:
    async def scenario() -> tuple[list[Any], list[Any]]:
        async with runner(db) as r:
            stream: Queue = asyncio.Queue()
            r.executor.open(stream)
            await r.send("held/0", "block")
            await r.running("held/0")
            await r.executor.stop(0)
            late: Queue = asyncio.Queue()
            r.executor.open(late)  # a stream opened after the stop
            return waiting(stream), waiting(late)

    stream, late = run_async(scenario())
    assert [type(item) for item in stream] == [Event, Unavailable]
    assert stream[0].HasField("draining")
    assert [type(item) for item in late] == [Unavailable]


def test_a_cancel_during_the_drain_ends_the_trial_cancelled_not_returned(db: DbThread) -> None:
    async def scenario() -> list[Event]:
        async with runner(db) as r:
            await r.send("held/0", "block")
            await r.running("held/0")
            draining = asyncio.create_task(r.executor.drain(3600))
            while not r.executor.draining:  # noqa: ASYNC110 - the executor's state
                await asyncio.sleep(0.01)
            events = await until_finished(await r.cancel("held/0"))
            await draining
            return events

    events = run_async(scenario())
    assert result(events).outcome == trial_pb2.OUTCOME_CANCELLED


def test_a_drain_waits_for_a_trial_being_admitted_and_hands_it_back(
    db: DbThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while a new trial is being recorded: the drain does not end before the
    admission does, so that trial is handed back too, never left unanswered."""
    recording = threading.Event()
    admit = store.admit

    def slow_admit(*args: Any) -> Any:
        recording.set()
        time.sleep(0.3)
        return admit(*args)

    monkeypatch.setattr(store, "admit", slow_admit)

    async def scenario() -> list[Any]:
        async with runner(db) as r:
            sending = asyncio.create_task(r.send("late/0", "block"))
            await asyncio.to_thread(recording.wait)
            await r.executor.stop(0)
            outbox = await sending
            return [outbox.get_nowait() for _ in range(outbox.qsize())]

    sent = run_async(scenario())
    # Accepted and handed back before anything that ends the stream, nothing after.
    events = [e for e in sent if isinstance(e, runner_pb2.RunnerEvent)]
    assert kinds(events) == ["accepted", "returned"], sent
    assert sent[: len(events)] == events
