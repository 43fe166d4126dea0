"""Dispatch: one long-lived stream per runner service; trials go down, their
events come back up and are recorded.

Concurrency model: everything here runs on the orchestrator's event loop; the
store is reached through its DbThread. Each RunnerLink owns one stream at a
time and reopens it with backoff when it breaks. On every (re)open it first
re-sends the trials it holds: the runner answers from its own records, so a
re-send never runs a trial twice, and this one path serves both a restart of
the orchestrator and a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from orchestrator_svc import store
from orchestrator_svc.config import Settings
from orchestrator_svc.spec import Plan, trial_limits
from prism.runner_protocol import MAX_RESULT_MESSAGE_BYTES, SLOTS_KEY
from prism.service import CLIENT_KEEPALIVE, log, unexpected
from prism.sqlite import DbThread
from prism.trial import MAX_JSON_BYTES, Outcome, TrialResult, not_run
from prism.v1 import runner_pb2, runner_pb2_grpc, trial_pb2

logger = logging.getLogger("orchestrator.dispatch")
T = TypeVar("T")

MIN_BACKOFF, MAX_BACKOFF = 0.1, 2.0
# A stream that stayed open this long was healthy: reopening it starts fast.
STABLE_SECONDS = 5.0

# A runner that does not send its slot count gets this many trials at once.
DEFAULT_SLOTS = 4
CHANNEL_OPTIONS = [
    *CLIENT_KEEPALIVE,
    ("grpc.max_receive_message_length", MAX_RESULT_MESSAGE_BYTES),
    # The link reopens its stream every MAX_BACKOFF at most; the channel must not
    # wait longer (gRPC's own default grows to 120 s) to reconnect to a runner
    # that is back.
    # (Not grpc.min_reconnect_backoff_ms: it is also the connect timeout, 20 s.)
    ("grpc.initial_reconnect_backoff_ms", int(MIN_BACKOFF * 1000)),
    ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF * 1000)),
]


def run_command(item: store.Dispatchable) -> runner_pb2.RunnerCommand:
    return runner_pb2.RunnerCommand(
        run_trial=runner_pb2.RunTrial(
            trial_id=item.trial.execution_id,
            script=item.source,
            params_json=item.trial.params_json,
            limits=trial_pb2.TrialLimits(**trial_limits(item.spec)),
            requirements=item.spec.get("requirements", []),
        )
    )


def cancel_command(execution_id: str) -> runner_pb2.RunnerCommand:
    return runner_pb2.RunnerCommand(cancel_trial=runner_pb2.CancelTrial(trial_id=execution_id))


# (execution id, the metric's values as compact JSON text)
MetricBatch = list[tuple[str, str]]
# Metrics one transaction writes, at most; and how many may wait for the store before
# the streams bringing more wait too.
MAX_BATCH_METRICS = 1000
MAX_PENDING_METRICS = 5000


class MetricRecorder:
    """Group commit for metric events: each batch is one transaction (one commit to
    disk), and while one batch is written the next gathers, so a trial printing
    thousands of metric lines costs a few commits, not one per line, and the store
    stays free for everyone else. Every metric gets a ticket; ``recorded(ticket)``
    waits until that one (and all before it) is written, so a trial's end is
    recorded after its metrics without waiting for anybody else's."""

    def __init__(self, write: Callable[[MetricBatch], Awaitable[None]]) -> None:
        self._write = write
        self._pending: MetricBatch = []
        self._added = 0
        self._written = 0
        self._ready = asyncio.Event()
        # Set (and replaced) after every batch.
        self._progress = asyncio.Event()

    def add(self, execution_id: str, values_json: str) -> int:
        self._pending.append((execution_id, values_json))
        self._added += 1
        self._ready.set()
        return self._added

    @property
    def added(self) -> int:
        """The ticket of the last metric added."""
        return self._added

    async def recorded(self, ticket: int) -> None:
        while self._written < ticket:
            await self._progress.wait()

    async def room(self) -> None:
        """Wait while the metrics not yet written fill a batch's worth: a stream that
        floods faster than the store writes is read no faster, so no backlog grows
        in memory without bound."""
        while len(self._pending) >= MAX_PENDING_METRICS:
            await self._progress.wait()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            # At most a batch's worth per transaction, so other writes get their turn.
            batch = self._pending[:MAX_BATCH_METRICS]
            del self._pending[:MAX_BATCH_METRICS]
            try:
                await self._write(batch)
            except Exception as error:
                # A batch the store refuses is dropped alone; the trials go on.
                unexpected(logger, "recording metrics failed", error, metrics=len(batch))
            self._written += len(batch)
            self._progress.set()
            self._progress = asyncio.Event()
            if self._pending:
                self._ready.set()


def _looks_like_an_object(text: str) -> bool:
    # Stored inside {"values": ...}: what cannot be an object is not spliced in.
    return text.startswith("{") and text.endswith("}")


class RunnerLink:
    """One runner service and the stream to it."""

    def __init__(self, name: str, address: str, token: str | None, dispatcher: Dispatcher) -> None:
        self.name = name
        self.address = address
        self.connected = False
        # Since when this runner has not been answering (None while it is): its
        # last stream closed, or the stream it reopened has not yet answered for
        # every trial re-sent on it. A runner that connects but turns its trials
        # away stays down, so the lease loop takes its trials from it.
        self.down_since: float | None = time.monotonic()
        self.slots = DEFAULT_SLOTS
        # Execution ids sent on the current stream and not yet finished.
        self.in_flight: set[str] = set()
        # Set once the first stream has answered for every trial re-sent on it.
        self.reconciled = asyncio.Event()
        self._metadata = (("authorization", f"Bearer {token or ''}"),)
        self._dispatcher = dispatcher
        self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = runner_pb2_grpc.RunnerStub(self._channel)
        self._outbox: asyncio.Queue[runner_pb2.RunnerCommand] | None = None

    def send(self, command: runner_pb2.RunnerCommand) -> bool:
        """Queue a command on the open stream; False when there is none, so the
        trial certainly did not reach this runner."""
        if self._outbox is None:
            return False
        self._outbox.put_nowait(command)
        return True

    async def run(self) -> None:
        backoff = MIN_BACKOFF
        while True:
            opened = time.monotonic()
            try:
                await self._session()
            except grpc.aio.AioRpcError as error:
                if self.connected or backoff == MIN_BACKOFF:
                    log(
                        logger,
                        "runner stream closed",
                        runner=self.name,
                        code=error.code().name,
                        details=error.details(),
                    )
            except Exception as error:
                # A bug or a store failure must not end this link for good:
                # log it and reopen, which re-sends what the runner holds.
                unexpected(logger, "runner link failed", error, runner=self.name)
            finally:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                self.connected = False
                self._outbox = None
            # Back off from the first failure on; only a stream that lived a
            # while starts over fast, so a stream that fails at once cannot spin.
            if time.monotonic() - opened > STABLE_SECONDS:
                backoff = MIN_BACKOFF
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _session(self) -> None:
        call = self._stub.Connect(metadata=self._metadata)
        writer: asyncio.Task[None] | None = None
        try:
            await call.wait_for_connection()
            self.slots = _slots(await call.initial_metadata())
            outbox: asyncio.Queue[runner_pb2.RunnerCommand] = asyncio.Queue()
            held, abandoned = await self._dispatcher.db(store.held_by, self.name)
            unanswered = {item.trial.execution_id for item in held}
            self.in_flight = set(unanswered)
            for item in held:
                outbox.put_nowait(
                    cancel_command(item.trial.execution_id) if item.cancelled else run_command(item)
                )
            # What was given up on while it was away and runs elsewhere now
            # stops here, freeing its slot; its late report is ignored.
            for execution_id in abandoned:
                outbox.put_nowait(cancel_command(execution_id))
            self._outbox = outbox
            self.connected = True
            log(
                logger, "runner connected", runner=self.name, address=self.address, resent=len(held)
            )
            if not unanswered:
                self._answered()
            writer = asyncio.create_task(self._write(call, outbox))
            silence = self._dispatcher.settings.runner_silence_seconds
            # The ticket of the last metric handed on: what must be recorded before a
            # trial's start or end is. It starts at the last one any stream handed on,
            # so an end reported again on this stream waits for the metrics the
            # previous one brought and left unwritten.
            ticket = self._dispatcher.metrics.added
            while True:
                try:
                    async with asyncio.timeout(silence):
                        event = await call.read()
                except TimeoutError:
                    log(
                        logger,
                        "runner silent; closing its stream",
                        runner=self.name,
                        seconds=silence,
                    )
                    return
                if event is grpc.aio.EOF:
                    return
                kind = event.WhichOneof("event")
                if kind == "accepted":
                    if unanswered:
                        unanswered.discard(event.accepted.trial_id)
                        if not unanswered:
                            self._answered()
                elif kind == "started":
                    await self._dispatcher.metrics.recorded(ticket)
                    await self._dispatcher.write(store.mark_started, event.started.trial_id)
                elif kind == "metric":
                    ticket = self._dispatcher.metric(event.metric) or ticket
                    await self._dispatcher.metrics.room()
                elif kind == "finished":
                    self.in_flight.discard(event.finished.trial_id)
                    await self._dispatcher.metrics.recorded(ticket)
                    await self._dispatcher.record(
                        event.finished.trial_id, TrialResult.from_proto(event.finished.result)
                    )
        finally:
            call.cancel()
            if writer is not None:
                writer.cancel()
                # Its error, if any, is the stream's, which the read above reports.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer

    def _answered(self) -> None:
        """The runner has answered for everything it holds: it is up."""
        self.down_since = None
        self.reconciled.set()
        self._dispatcher.kick()

    @property
    def up(self) -> bool:
        return self.connected and self.down_since is None

    @staticmethod
    async def _write(
        call: grpc.aio.StreamStreamCall, outbox: asyncio.Queue[runner_pb2.RunnerCommand]
    ) -> None:
        while True:
            await call.write(await outbox.get())

    async def close(self) -> None:
        await self._channel.close()

    @property
    def free(self) -> int:
        return self.slots - len(self.in_flight)


def _slots(metadata: grpc.aio.Metadata | None) -> int:
    value = dict(metadata or ()).get(SLOTS_KEY, "")
    return (
        int(value)
        if isinstance(value, str) and value.isdigit() and int(value) > 0
        else DEFAULT_SLOTS
    )


class Dispatcher:
    def __init__(self, settings: Settings, db: DbThread) -> None:
        self.settings = settings
        self.db = db
        self.links = [RunnerLink(n, a, settings.runner_token, self) for n, a in settings.runners]
        self._kicked = asyncio.Event()
        self._sweep_done: dict[str, asyncio.Event] = {}
        # Set (and replaced) whenever events were appended: what watchers wait on.
        self._news = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics = MetricRecorder(self._record_metrics)

    async def start(self) -> None:
        finished = await self.write(store.finish_complete_sweeps)
        if finished:
            log(logger, "finished sweeps completed before a crash", sweeps=finished)
        requeued = await self.write(
            store.release_unknown_runners, [link.name for link in self.links]
        )
        if requeued:
            log(logger, "trials of runners no longer configured queued again", trials=requeued)
        holders = await self.db(store.holders)
        for link in self.links:
            if link.name not in holders:
                link.reconciled.set()  # nothing to ask this runner about
        self._tasks = [asyncio.create_task(link.run()) for link in self.links]
        self._tasks.append(asyncio.create_task(self.metrics.run()))
        self._tasks.append(asyncio.create_task(self._dispatch_loop()))
        self._tasks.append(asyncio.create_task(self._lease_loop()))
        self.kick()

    async def reconcile(self, within: float) -> list[str]:
        """Wait until every runner answered for the trials it holds; return
        the names of those that did not `within` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await asyncio.gather(*(link.reconciled.wait() for link in self.links))
        return [link.name for link in self.links if not link.reconciled.is_set()]

    def kick(self) -> None:
        self._kicked.set()

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """A store call that may append events; watchers hear of it."""
        try:
            return await self.db(fn, *args)
        finally:
            self._news.set()
            self._news = asyncio.Event()

    def news(self) -> asyncio.Event:
        """Set by the next write: take it before reading events, then wait on it."""
        return self._news

    async def submit(self, plan: Plan, request_id: str = "") -> str:
        """Record a planned sweep and start it; a used request id returns the
        sweep that request made, recording nothing."""
        sweep_id = await self.write(
            store.create_sweep, str(uuid.uuid4()), plan.task, plan.spec, plan.trials, request_id
        )
        log(logger, "sweep created", sweep=sweep_id, trials=len(plan.trials))
        self.kick()
        return sweep_id

    async def cancel(self, sweep_id: str) -> None:
        """Cancel a running sweep: what has not started ends at once; each runner
        holding one of its trials is told to stop it (or will be, on reconnect).
        A caller that goes away meanwhile does not cut this short."""
        await asyncio.shield(asyncio.create_task(self._cancel(sweep_id)))

    async def _cancel(self, sweep_id: str) -> None:
        status, in_flight = await self.write(store.cancel_sweep, sweep_id)
        links = {link.name: link for link in self.links}
        for runner, execution_id in in_flight:
            if runner in links:
                links[runner].send(cancel_command(execution_id))
        log(logger, "sweep cancelled", sweep=sweep_id, stopping=len(in_flight))
        if status is not None:
            self._finished(sweep_id, status)

    def _finished(self, sweep_id: str, status: str) -> None:
        log(logger, "sweep finished", sweep=sweep_id, status=status)
        if sweep_id in self._sweep_done:
            self._sweep_done[sweep_id].set()

    def metric(self, metric: runner_pb2.TrialMetric) -> int | None:
        """Hand a trial's metrics to the recorder; the last one's ticket, or None when
        there was none to take. The runner parsed each one already, and it stays the
        text the runner wrote: the orchestrator only bounds its size (a longer one
        can come only from a broken runner, and is dropped). Reads check it again."""
        ticket = None
        for values_json in metric.values_json:
            if len(values_json) <= MAX_JSON_BYTES and _looks_like_an_object(values_json):
                ticket = self.metrics.add(metric.trial_id, values_json)
        return ticket

    async def _record_metrics(self, batch: MetricBatch) -> None:
        await self.write(store.record_metrics, batch)

    async def wait(self, sweep_id: str, within: float) -> bool:
        """True once the sweep has finished, False if `within` seconds ran out first."""
        done = self._sweep_done.setdefault(sweep_id, asyncio.Event())
        try:
            if await self.db(store.sweep_finished, sweep_id):
                return True
            async with asyncio.timeout(within):
                await done.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._sweep_done.pop(sweep_id, None)

    async def record(self, execution_id: str, result: TrialResult) -> None:
        """Record an execution's end. A result the store refuses, for whatever reason,
        ends that trial alone as sandbox_error: the stream it came on, the runner and
        every other trial go on. (Should the store refuse even that, it is failing as
        a whole, and the link reconnects once it raises.)"""
        try:
            status = await self.write(store.finish_trial, execution_id, result)
        except Exception as error:
            error_id = unexpected(logger, "recording a result failed", error, trial=execution_id)
            result = not_run(
                Outcome.SANDBOX_ERROR,
                f"the orchestrator could not record the trial's result (error id {error_id})",
            )
            status = await self.write(store.finish_trial, execution_id, result)
        log(logger, "trial finished", trial=execution_id, outcome=result.outcome)
        self.kick()  # a slot is free
        if status is not None:
            self._finished(store.split_execution_id(execution_id)[0].rpartition("/")[0], status)

    def _least_loaded(self) -> RunnerLink | None:
        """The runner up with the most free slots, if any has one."""
        free = [link for link in self.links if link.up and link.free > 0]
        return max(free, key=lambda link: link.free, default=None)

    async def _lease_loop(self) -> None:
        """Every second: retries whose backoff has passed get dispatched, and a
        runner away longer than runner_lost_seconds loses its trials: each ends
        runner_lost, or, with retries left, goes back to the queue for another
        runner. A late report from the lost execution is then stale and
        ignored, so only one result is ever kept."""
        lost_after = self.settings.runner_lost_seconds
        while True:
            await asyncio.sleep(min(1.0, lost_after / 4))
            # Retries whose backoff has passed are dispatchable now.
            self.kick()
            now = time.monotonic()
            for link in self.links:
                if link.down_since is None or now - link.down_since < lost_after:
                    continue
                try:
                    held = await self.db(store.in_flight, link.name)
                    for item in held:
                        execution_id = item.trial.execution_id
                        await self.record(
                            execution_id,
                            not_run(
                                Outcome.RUNNER_LOST,
                                f"runner {link.name} was unreachable for {lost_after:g} s",
                            ),
                        )
                        link.in_flight.discard(execution_id)
                        # A stream still open (the runner has not answered on
                        # it) carries the stop now; else the next one will.
                        link.send(cancel_command(execution_id))
                except Exception as error:
                    unexpected(logger, "marking the trials of a lost runner failed", error)

    async def _dispatch_loop(self) -> None:
        while True:
            await self._kicked.wait()
            self._kicked.clear()
            try:
                await self._dispatch_pending()
            except Exception as error:
                unexpected(logger, "dispatch failed; retrying", error)
                await asyncio.sleep(1.0)
                self.kick()

    async def _dispatch_pending(self) -> None:
        free = sum(link.free for link in self.links if link.up and link.free > 0)
        for item in await self.db(store.dispatchable, free):
            link = self._least_loaded()
            if link is None:
                return  # a runner connecting or a trial finishing kicks the loop again
            trial = await self.write(store.assign, item.trial.id, link.name)
            if trial is None:
                continue
            link.in_flight.add(trial.execution_id)
            if not link.send(run_command(store.Dispatchable(trial, item.source, item.spec))):
                # The stream closed during the write: nothing was sent, so
                # the trial may safely go to another runner.
                link.in_flight.discard(trial.execution_id)
                await self.write(store.unassign, trial.id, link.name, "stream closed before send")
                self.kick()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in self.links:
            await link.close()
