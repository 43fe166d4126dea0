"""Trial execution on one runner: each trial id runs at most once.

Concurrency model: grpc.aio on one event loop. SQLite work goes to the store's
DbThread; each sandbox run (blocking Docker SDK calls) goes to a pool with one
thread per slot, so at most `slots` containers run at once here. A trial's metrics
come from its sandbox's output reader thread and are handed to the loop in
batches with call_soon_threadsafe, so they reach the streams before the trial's
TrialFinished.
An image for a trial's requirements is made before the trial takes a slot (see
runner_svc.images): a long build holds no slot.

Stopping (SIGTERM) drains: every stream is told (Draining) and no new trial is
taken; trials running get until the drain's deadline to finish and report as
usual; what is left then is stopped, recorded as ended, and handed back
(TrialReturned) for the orchestrator to run elsewhere. Then the streams end.

The executor depends on two narrow protocols, `Sandbox` and `Images`: the real
sandbox.Sandbox and runner_svc.images.TrialImages satisfy them (mypy checks the
wiring in runner_svc.server), and the fast tests pass fakes (tests/fakes.py).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from prism import logs
from prism import runner_protocol as protocol
from prism.errors import Unavailable
from prism.sqlite import DbThread
from prism.trial import Outcome, TrialResult, not_run, to_json
from prism.v1 import runner_pb2
from runner_svc import store
from runner_svc.images import ImageUnavailable
from runner_svc.metrics import RunnerMetrics
from sandbox import MAX_SCRIPT_BYTES, Limits, MetricCallback

log = logs.get("runner.executor")

# How often a cancel is tried again while a run is being handed to the sandbox.
CANCEL_RETRY_SECONDS = 0.05
# How often a shutdown stops again what has not yet ended (a trial between its slot
# and its container is unknown to the sandbox on one pass, and known on the next).
STOP_RETRY_SECONDS = 0.2
# Why a new trial sent during a drain is handed back at once (it was never recorded:
# an orchestrator that ignores the return and sends it again later has it run then).
DRAINING_REASON = "runner draining"
# What an execution handed back is recorded as having ended with, and why it was
# handed back: sent again after a restart, it is answered with this, never run again.
HANDED_BACK = "handed back: runner stopping"

Outbox = asyncio.Queue  # of runner_pb2.RunnerEvent (or None / an error for the stream itself)


class Sandbox(Protocol):
    """What the executor needs of a sandbox (sandbox.Sandbox is the real one)."""

    def run(
        self,
        trial_id: str,
        script: str,
        params_json: str,
        limits: Limits,
        *,
        image: str | None,
        on_metric: MetricCallback,
    ) -> TrialResult:
        """Run the trial once and say how it ended; blocks, so it is called on a
        worker thread. ``on_metric`` may be called from any thread while it runs,
        never after. An exception is the sandbox's own failure: sandbox_error."""
        ...

    def cancel(self, trial_id: str) -> object:
        """Stop the trial if it is running: its run() returns ``cancelled``. A trial
        not (yet) running is left alone. What it returns is not used."""
        ...


class Images(Protocol):
    """What the executor needs of the images helper (runner_svc.images.TrialImages)."""

    async def image_for(self, requirements: Sequence[str]) -> str:
        """The tag of an image with the requirements; raises ImageUnavailable."""
        ...


# What the runner's record of an execution says to the orchestrator.
PREVIOUS = {
    None: protocol.Previous.NONE,
    store.QUEUED: protocol.Previous.RUNNING,
    store.RUNNING: protocol.Previous.RUNNING,
    store.FINISHED: protocol.Previous.FINISHED,
}


def trial_problem(run: runner_pb2.RunTrial) -> str | None:
    """What makes this trial unrunnable, if anything."""
    if not run.script.strip():
        return "the script is empty"
    if len(run.script.encode()) > MAX_SCRIPT_BYTES:
        return f"the script is larger than {MAX_SCRIPT_BYTES} bytes"
    try:
        params = json.loads(run.params_json or "{}")
    except ValueError:
        params = None
    if not isinstance(params, dict):
        return "the parameters are not a JSON object"
    return None


def accepted_event(trial_id: str, previous: str | None) -> runner_pb2.RunnerEvent:
    return protocol.accepted(trial_id, PREVIOUS[previous])


class _MetricBatches:
    """A trial's metrics on their way from the sandbox's reader thread to the streams:
    whatever arrived since the loop last took them goes out as one event, so a flood of
    metric lines costs the loop and the stream a few wake-ups, not one per line."""

    def __init__(
        self,
        trial_id: str,
        loop: asyncio.AbstractEventLoop,
        publish: Callable[[runner_pb2.RunnerEvent], None],
    ) -> None:
        self._trial_id = trial_id
        self._loop = loop
        self._publish = publish
        self._pending: collections.deque[str] = collections.deque()
        self._scheduled = False

    def add(self, values: dict[str, Any]) -> None:
        """On the reader thread: queue one metric, waking the loop unless it is due."""
        self._pending.append(to_json(values))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon_threadsafe(self.flush)

    def flush(self) -> None:
        """On the loop: publish what is queued as one event."""
        # Cleared before taking, so a metric queued meanwhile wakes the loop again.
        self._scheduled = False
        taken = [self._pending.popleft() for _ in range(len(self._pending))]
        if taken:
            self._publish(protocol.metrics(self._trial_id, taken))


@dataclasses.dataclass(eq=False)
class _RunningTrial:
    """A trial executing here, from its admission to its TrialFinished: all the
    executor keeps about it, one per trial id. Only the event loop touches it."""

    run: runner_pb2.RunTrial
    # The streams its events go to: the one that sent it, and those that sent it
    # again or cancelled it since.
    subscribers: set[Outbox]
    # Its execution; set as soon as it is made, before the loop runs it.
    task: asyncio.Task[None] = dataclasses.field(init=False)
    # Waiting for its requirements' image: a shutdown cancels it.
    preparing: bool = False
    # Asked to stop: checked again before its container starts.
    cancelled: bool = False
    # Handed to the sandbox and not yet returned from it.
    in_sandbox: bool = False
    # To be handed back (the runner drains): unless it ends on its own or is
    # cancelled first, it ends with TrialReturned, not TrialFinished.
    returning: bool = False

    @property
    def trial_id(self) -> str:
        return self.run.trial_id

    def subscribe(self, outbox: Outbox) -> None:
        self.subscribers.add(outbox)

    def unsubscribe(self, outbox: Outbox) -> None:
        self.subscribers.discard(outbox)

    def publish(self, event: runner_pb2.RunnerEvent) -> None:
        for outbox in self.subscribers:
            outbox.put_nowait(event)


class TrialExecutor:
    def __init__(
        self,
        db: DbThread,
        sandbox: Sandbox,
        images: Images,
        *,
        slots: int,
        metrics: RunnerMetrics | None = None,
    ) -> None:
        self.slots = slots
        self.metrics = metrics or RunnerMetrics()
        self.metrics.slots.set(slots)
        self._db = db
        self._sandbox = sandbox
        self._images = images
        self._slots = asyncio.Semaphore(slots)
        self._pool = concurrent.futures.ThreadPoolExecutor(slots, thread_name_prefix="sandbox")
        self._closing = False
        # Set by a drain: no new trial is taken from then on.
        self._draining = False
        # Set once stopped: every stream ends, and a new one is refused.
        self._stopped = False
        self._running: dict[str, _RunningTrial] = {}
        # Admissions under way (recording a new trial): a drain waits for them, since
        # each ends with a trial running that it must finish or hand back.
        self._admitting: set[asyncio.Task[str | None]] = set()
        # Every open stream's outbox, for what concerns them all (Draining).
        self._streams: set[Outbox] = set()

    @property
    def draining(self) -> bool:
        return self._draining

    def open(self, outbox: Outbox) -> None:
        """A stream opened: it hears what concerns every stream (`forget` it when it
        closes). One opened during a drain is told at once; one opened after the stop
        is ended."""
        self._streams.add(outbox)
        if self._stopped:
            outbox.put_nowait(Unavailable("the runner is stopping"))
        elif self._draining:
            outbox.put_nowait(protocol.DRAINING)

    async def cancel(self, trial_id: str, outbox: Outbox) -> None:
        """Answer a CancelTrial on `outbox`: accepted at once, finished when it is.
        A running trial is killed; a finished one replays its result; an unknown
        one is recorded as cancelled, so a later RunTrial never runs it."""
        if self._closing:
            raise Unavailable("the runner is shutting down")
        previous = await self._db(
            store.admit,
            trial_id,
            "{}",
            ended=not_run(Outcome.CANCELLED, "cancelled before it started"),
        )
        trial = self._running.get(trial_id)
        if trial is not None:
            # Stop it where it is. Its finished event goes to the stream that
            # sent it, which is this one or a newer one of the same orchestrator.
            trial.cancelled = True
            trial.subscribe(outbox)
            outbox.put_nowait(accepted_event(trial_id, previous))
            # The sandbox knows a run only once its worker thread has begun it: a
            # cancel in between finds nothing to stop, so it is tried again until it
            # takes or the run is over. (Before the run, the flag stops it.)
            while not await asyncio.to_thread(self._sandbox.cancel, trial_id):
                if not trial.in_sandbox:
                    return
                await asyncio.sleep(CANCEL_RETRY_SECONDS)
            return
        await self._replay(trial_id, previous, outbox)

    async def submit(self, run: runner_pb2.RunTrial, outbox: Outbox) -> None:
        """Answer a RunTrial on `outbox`: accepted at once, then metrics while it runs,
        finished when it is."""
        if self._closing:
            raise Unavailable("the runner is shutting down")
        problem = trial_problem(run)
        if problem is not None:
            # The trial's own content is at fault: it fails without running,
            # the same way every time it is sent.
            outbox.put_nowait(accepted_event(run.trial_id, None))
            outbox.put_nowait(protocol.finished(run.trial_id, not_run(Outcome.FAILED, problem)))
            return
        if self._draining and await self._db(store.state, run.trial_id) is None:
            # New here: not taken, and not recorded either. (One admitted as the
            # drain began is handed back when it would take a slot.) A known one is
            # answered as always, so it still runs at most once.
            outbox.put_nowait(protocol.returned(run.trial_id, DRAINING_REASON))
            return
        # The stream may be cut at any await here (the orchestrator crashed or
        # gave up on it). Recording a new trial and starting it happen in a task
        # of their own, so a cut can never leave it recorded but not running.
        admission = asyncio.create_task(self._admit(run, outbox))
        self._admitting.add(admission)
        admission.add_done_callback(self._admitting.discard)
        previous = await asyncio.shield(admission)
        if previous is None:
            return  # new: accepted, subscribed and started by the admission
        trial = self._running.get(run.trial_id)
        if trial is not None:
            trial.subscribe(outbox)
            outbox.put_nowait(accepted_event(run.trial_id, previous))
            return
        await self._replay(run.trial_id, previous, outbox)

    async def _admit(self, run: runner_pb2.RunTrial, outbox: Outbox) -> str | None:
        previous = await self._db(store.admit, run.trial_id, run.params_json)
        if previous is None:
            # Accepted and subscribed before the execution can publish anything.
            outbox.put_nowait(accepted_event(run.trial_id, None))
            trial = _RunningTrial(run, subscribers={outbox})
            trial.task = asyncio.create_task(self._execute(trial))
            self._running[run.trial_id] = trial
            log.info("trial accepted", execution=run.trial_id)
        return previous

    async def _replay(self, trial_id: str, previous: str | None, outbox: Outbox) -> None:
        """Answer for a trial not executing here from its record. A finished trial
        never changes, so the awaits here are safe. One neither executing nor
        finished has lost its execution (short of a shutdown, it cannot happen
        but by a bug or a failed write): it ends as sandbox_error, which the
        orchestrator may retry, rather than stay unanswered and hold its sweep
        forever."""
        result = await self._db(store.finished, trial_id)
        if result is None:
            if self._closing:
                # Dropped by our own shutdown before it started: it runs when
                # sent again after the restart.
                raise Unavailable("the runner is shutting down")
            log.error("a trial is known but neither executing nor finished", execution=trial_id)
            result = await self._record(
                trial_id, not_run(Outcome.SANDBOX_ERROR, "the runner lost track of this execution")
            )
        outbox.put_nowait(accepted_event(trial_id, previous))
        outbox.put_nowait(protocol.finished(trial_id, result))

    async def _record(self, trial_id: str, result: TrialResult) -> TrialResult:
        """Record how a trial ended and return what to report. A result the store
        refuses, for whatever reason, ends that trial alone as sandbox_error (recorded
        if the store takes that much), and every other trial and stream goes on."""
        try:
            return await self._db(store.finish, trial_id, result)
        except Exception as error:
            error_id = logs.unexpected(log, "recording a result failed", error, execution=trial_id)
        fallback = not_run(
            Outcome.SANDBOX_ERROR,
            f"the runner could not record the trial's result (error id {error_id})",
        )
        try:
            return await self._db(store.finish, trial_id, fallback)
        except Exception as error:
            logs.unexpected(log, "recording a fallback result failed", error, execution=trial_id)
        return fallback

    def forget(self, outbox: Outbox) -> None:
        self._streams.discard(outbox)
        for trial in self._running.values():
            trial.unsubscribe(outbox)

    async def _execute(self, trial: _RunningTrial) -> None:
        trial_id = trial.trial_id
        try:
            try:
                result = await self._attempt(trial)
            except asyncio.CancelledError:
                if not trial.returning:
                    raise
                # The drain stopped its wait for an image: it is handed back below.
                if (task := asyncio.current_task()) is not None:
                    task.uncancel()
                result = None
            except Exception as error:  # the sandbox reports the trial's misbehaviour; this is ours
                error_id = logs.unexpected(log, "trial execution failed", error, execution=trial_id)
                result = not_run(
                    Outcome.SANDBOX_ERROR,
                    f"the runner could not execute the trial (error id {error_id})",
                )
            if trial.returning and not trial.cancelled:
                # A run the drain stopped ends cancelled; one that ended on its own
                # meanwhile reports as usual. (A user's cancel reports as usual too.)
                if result is None or result.outcome == Outcome.CANCELLED:
                    await self._hand_back(trial)
                    return
            if result is None:
                # Never started: the row stays queued and the trial runs when it is
                # sent again after the restart.
                return
            recorded = await self._record(trial_id, result)
            self.metrics.trials_finished.labels(outcome=recorded.outcome.value).inc()
            log.info(
                "trial finished",
                execution=trial_id,
                outcome=recorded.outcome,
                seconds=round(recorded.duration_seconds, 3),
            )
            trial.publish(protocol.finished(trial_id, recorded))
        finally:
            self._running.pop(trial_id, None)

    async def _attempt(self, trial: _RunningTrial) -> TrialResult | None:
        """Run the trial once; None when the runner shut down before it started."""
        run = trial.run
        trial_id = run.trial_id
        loop = asyncio.get_running_loop()
        image = None
        if run.requirements:
            trial.preparing = True
            asked = time.monotonic()
            outcome = None  # a shutdown cancelling the wait is no result
            try:
                image = await self._images.image_for(run.requirements)
                outcome = "ready"
            except ImageUnavailable as error:
                outcome = "refused" if error.outcome == Outcome.FAILED else "error"
                return not_run(error.outcome, error.reason)
            finally:
                trial.preparing = False
                if outcome is not None:
                    self.metrics.requirements_image.labels(result=outcome).observe(
                        time.monotonic() - asked
                    )

        metrics = _MetricBatches(trial_id, loop, trial.publish)

        async with self._slots:
            if self._draining and not trial.cancelled:
                trial.returning = True  # it would start now: handed back instead
            if self._closing or trial.returning:
                return None
            if trial.cancelled:
                return not_run(Outcome.CANCELLED, "cancelled before it started")
            await self._db(store.mark_started, trial_id)
            if trial.cancelled:  # while it was marked started
                return not_run(Outcome.CANCELLED, "cancelled before it started")
            if trial.returning:  # the drain's deadline came while it was marked started
                return None
            trial.publish(protocol.started(trial_id))
            trial.in_sandbox = True
            self.metrics.trials_running.inc()
            try:
                result = await loop.run_in_executor(
                    self._pool,
                    lambda: self._sandbox.run(
                        trial_id,
                        run.script,
                        run.params_json,
                        Limits(**protocol.limits_of(run)),
                        image=image,
                        on_metric=metrics.add,
                    ),
                )
            finally:
                trial.in_sandbox = False
                self.metrics.trials_running.dec()
            metrics.flush()  # what the last wake-up had no time to take
        if self._closing and result.outcome == Outcome.CANCELLED:
            # Stopped by our own shutdown, not by a user: infrastructure.
            result = dataclasses.replace(
                result,
                outcome=Outcome.SANDBOX_ERROR,
                reason="the runner shut down during the trial",
            )
        return result

    async def _hand_back(self, trial: _RunningTrial) -> None:
        """Give an execution back unfinished. It is recorded as ended first, so that
        sent again (after a restart, by an orchestrator that ignored the return) it is
        answered from that record and never runs here a second time."""
        await self._record(trial.trial_id, not_run(Outcome.SANDBOX_ERROR, HANDED_BACK))
        log.info("trial handed back", execution=trial.trial_id)
        trial.publish(protocol.returned(trial.trial_id, HANDED_BACK))

    async def stop(self, drain_seconds: float) -> None:
        """The runner's stop (SIGTERM): drain, then close, then end every stream,
        each after what was queued on it."""
        await self.drain(drain_seconds)
        await self.close()
        self._stopped = True
        for outbox in self._streams:
            outbox.put_nowait(Unavailable("the runner is stopping"))

    async def drain(self, seconds: float) -> None:
        """Take no new trial; let those running finish for up to `seconds`; then stop
        what is left and hand it back. A trial still waiting for its image is handed
        back at once (it has not started, and a build may take longer than the
        drain); one waiting for a slot when a slot frees."""
        self._draining = True
        log.info("draining", trials=len(self._running), seconds=seconds)
        for outbox in self._streams:
            outbox.put_nowait(protocol.DRAINING)
        if self._admitting:
            await asyncio.wait(set(self._admitting))
        for trial in self._running.values():
            if trial.preparing:
                trial.returning = True
                trial.task.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        # A trial admitted just as the drain began may join meanwhile: looked at again
        # after each end.
        while self._running and (left := deadline - loop.time()) > 0:
            await asyncio.wait(
                [trial.task for trial in self._running.values()],
                timeout=left,
                return_when=asyncio.FIRST_COMPLETED,
            )
        if self._running:
            log.info("drain deadline passed; handing back", trials=len(self._running))
        await self._stop_all(returning=True)

    async def close(self) -> None:
        """Stop what runs (the sandbox kills the containers) and record it. A trial
        still waiting for its image is dropped: it never started."""
        self._closing = True
        await self._stop_all(returning=False)
        self._pool.shutdown(wait=False)

    async def _stop_all(self, *, returning: bool) -> None:
        """Stop every trial, to be handed back or not, until none is left. Cancel again
        until all are done: a trial between its slot and its container is not yet known
        to the sandbox on the first pass."""
        while self._running:
            # Waited on as taken: any of them may end while the sandbox stops another.
            stopping = list(self._running.values())
            for trial in stopping:
                trial.returning = trial.returning or returning
                if trial.preparing:
                    trial.task.cancel()
                else:
                    await asyncio.to_thread(self._sandbox.cancel, trial.trial_id)
            await asyncio.wait([trial.task for trial in stopping], timeout=STOP_RETRY_SECONDS)
