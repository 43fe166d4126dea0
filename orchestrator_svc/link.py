"""One runner service and the stream to it.

A RunnerLink owns its connection's state (the stream, the slots the runner
announced, the executions in flight on it, since when it has been down) and
reports what the runner says through a narrow interface, RunnerReports; it
never touches the store. It reopens its stream with backoff when it breaks, and
on every (re)open first re-sends the trials the runner holds: the runner answers
from its own records, so a re-send never runs a trial twice, and this one path
serves both a restart of the orchestrator and a reconnect.

Concurrency model: everything here runs on the orchestrator's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import grpc

from orchestrator_svc.spec import trial_limits
from orchestrator_svc.store import Dispatchable
from prism import logs
from prism import runner_protocol as protocol
from prism.keepalive import CLIENT_KEEPALIVE
from prism.trial import TrialResult
from prism.v1 import runner_pb2, runner_pb2_grpc

log = logs.get("orchestrator.link")

MIN_BACKOFF, MAX_BACKOFF = 0.1, 2.0
# A stream that stayed open this long was healthy: reopening it starts fast.
STABLE_SECONDS = 5.0
# How long a new stream waits for the runner's Hello before taking it for a runner
# older than Hello (which sends its first heartbeat after 2 s of quiet).
HELLO_SECONDS = 5.0
CHANNEL_OPTIONS = [
    *CLIENT_KEEPALIVE,
    ("grpc.max_receive_message_length", protocol.MAX_RESULT_MESSAGE_BYTES),
    # The link reopens its stream every MAX_BACKOFF at most; the channel must not
    # wait longer (gRPC's own default grows to 120 s) to reconnect to a runner
    # that is back.
    # (Not grpc.min_reconnect_backoff_ms: it is also the connect timeout, 20 s.)
    ("grpc.initial_reconnect_backoff_ms", int(MIN_BACKOFF * 1000)),
    ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF * 1000)),
]


class RunnerReports(Protocol):
    """What a link needs from the rest of the orchestrator."""

    async def held_by(self, runner: str) -> tuple[list[Dispatchable], list[str]]:
        """What the runner must be told on a new stream: the trials it holds, and the
        executions given up on that it may still be running."""

    def runner_up(self, runner: str) -> None:
        """The runner has answered for everything it holds: it can take trials."""

    def claim(self, runner: str, link: RunnerLink) -> bool:
        """A discovered link's runner says it is `runner`: may the link go by that name
        (no other connected link does)?"""

    async def trial_started(self, execution_id: str) -> None: ...

    async def trial_metrics(self, execution_id: str, values_json: tuple[str, ...]) -> None: ...

    async def trial_finished(self, execution_id: str, result: TrialResult) -> None: ...

    async def trial_returned(self, execution_id: str, reason: str) -> None:
        """The runner gave the execution back unfinished (it is stopping): it reports
        no result for it, and the trial may run elsewhere."""


def run_command(item: Dispatchable) -> runner_pb2.RunnerCommand:
    return protocol.run_trial(
        item.trial.execution_id,
        script=item.source,
        params_json=item.trial.params_json,
        limits=trial_limits(item.spec),
        requirements=item.spec.get("requirements", []),
    )


class RunnerLink:
    def __init__(
        self,
        name: str | None,
        address: str,
        *,
        token: str | None,
        silence_seconds: float,
        reports: RunnerReports,
    ) -> None:
        # The runner's name: configured, or for a discovered address (None until then)
        # what its Hello says, once no other connected link goes by it.
        self.name = name
        self.discovered = name is None
        self.address = address
        self.connected = False
        # Its address is gone from discovery: the stream open now is its last.
        self.retired = False
        # The current stream goes by self.name, from the Hello that named it to the
        # stream's end: no other link may take the name meanwhile (Dispatcher.claim).
        self.holding = False
        # Since when this runner has not been answering (None while it is): its
        # last stream closed, or the stream it reopened has not yet answered for
        # every trial re-sent on it. A runner that connects but turns its trials
        # away stays down, so the orchestrator takes its trials from it in time.
        self.down_since: float | None = time.monotonic()
        self.slots = protocol.DEFAULT_SLOTS
        # What the runner said it supports in its Hello (none: protocol 1).
        self.capabilities: frozenset[str] = frozenset()
        # Execution ids sent on the current stream and not yet finished.
        self.in_flight: set[str] = set()
        # The runner said it is stopping (Draining): it takes nothing more on this
        # stream. A new stream (the runner restarted) starts without.
        self.draining = False
        # Set once the first stream has answered for every trial re-sent on it.
        self.reconciled = asyncio.Event()
        self._silence = silence_seconds
        self._reports = reports
        self._metadata = (("authorization", f"Bearer {token or ''}"),)
        self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = runner_pb2_grpc.RunnerStub(self._channel)
        self._outbox: asyncio.Queue[runner_pb2.RunnerCommand] | None = None
        # Execution ids re-sent on the current stream that it has not answered for.
        self._unanswered: set[str] = set()
        self._refused_as: str | None = None

    @property
    def up(self) -> bool:
        return self.connected and self.down_since is None

    @property
    def free(self) -> int:
        """Trials it may be sent now: none while it drains, or once its address is gone
        (its stream may end any time, and no other opens)."""
        if self.draining or self.retired:
            return 0
        return self.slots - len(self.in_flight)

    def dispatch(self, item: Dispatchable) -> bool:
        """Send a trial on the open stream; False when there is none, so the trial
        certainly did not reach this runner."""
        if self._outbox is None:
            return False
        self.in_flight.add(item.trial.execution_id)
        self._outbox.put_nowait(run_command(item))
        return True

    def cancel(self, execution_id: str) -> None:
        """Ask the runner to stop an execution; its end is reported as usual. Without
        an open stream, the next one carries the stop (the store says what to send)."""
        if self._outbox is not None:
            self._outbox.put_nowait(protocol.cancel_trial(execution_id))

    def give_up(self, execution_id: str) -> None:
        """The execution was recorded as lost: it no longer takes a slot here, and the
        runner is told to stop it, now on a stream still open (the runner has not
        answered on it), else on the next one."""
        self.in_flight.discard(execution_id)
        self.cancel(execution_id)

    def retire(self) -> None:
        """No stream is opened after the current one (a runner draining still reports
        on it what it finishes or hands back)."""
        self.retired = True

    async def run(self) -> None:
        backoff = MIN_BACKOFF
        while not self.retired:
            opened = time.monotonic()
            try:
                await self._session()
            except grpc.aio.AioRpcError as error:
                if self.connected or backoff == MIN_BACKOFF:
                    log.info(
                        "runner stream closed",
                        runner=self.name,
                        code=error.code().name,
                        details=error.details(),
                    )
            except Exception as error:
                # A bug or a store failure must not end this link for good:
                # log it and reopen, which re-sends what the runner holds.
                logs.unexpected(log, "runner link failed", error, runner=self.name)
            finally:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                self.connected = self.holding = False
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
        reading: asyncio.Future[protocol.Event | None] | None = None
        try:
            try:
                # A runner that takes the connection but never answers is a hung one.
                async with asyncio.timeout(self._silence):
                    await call.wait_for_connection()
                    slots = protocol.slots_from_metadata(await call.initial_metadata())
            except TimeoutError:
                log.info("runner silent; closing its stream", runner=self.name,
                         address=self.address, seconds=self._silence)  # fmt: skip
                return
            # A runner speaks first, with its Hello. One older than Hello says nothing
            # until its first heartbeat (or, quiet, at all): the link goes on without,
            # and its first event is then handled like any other. (The read is waited
            # for, never cancelled: that would cancel the call.)
            reading = asyncio.ensure_future(self._read(call))
            await asyncio.wait([reading], timeout=HELLO_SECONDS)
            first: protocol.Event | None = None
            if reading.done():
                first, reading = reading.result(), None
                if first is None:
                    return
            self.capabilities = frozenset()
            self.draining = False
            if isinstance(first, protocol.Hello):
                if not self._greeted(first):
                    return
                slots, first = first.slots, None
            elif self.discovered:
                # Whoever answers at a found address now must say who it is, every time:
                # the address may be another task's since the last stream.
                log.error("discovered runner sent no Hello: it cannot say who it is",
                          address=self.address)  # fmt: skip
                return
            self.slots = slots
            name = self.name
            assert name is not None  # configured, or said in the Hello
            held, abandoned = await self._reports.held_by(name)
            if self.name != name:
                return  # not while holding it; a guard, should the rules ever change
            outbox: asyncio.Queue[runner_pb2.RunnerCommand] = asyncio.Queue()
            self._unanswered = {item.trial.execution_id for item in held}
            self.in_flight = set(self._unanswered)
            for item in held:
                execution_id = item.trial.execution_id
                outbox.put_nowait(
                    protocol.cancel_trial(execution_id) if item.cancelled else run_command(item)
                )
            # What was given up on while it was away and runs elsewhere now
            # stops here, freeing its slot; its late report is ignored.
            for execution_id in abandoned:
                outbox.put_nowait(protocol.cancel_trial(execution_id))
            self._outbox = outbox
            self.connected = True
            self._refused_as = None
            log.info(
                "runner connected",
                runner=self.name,
                address=self.address,
                slots=self.slots,
                capabilities=sorted(self.capabilities),
                resent=len(held),
            )
            if not self._unanswered:
                self._answered()
            writer = asyncio.create_task(self._write(call, outbox))
            event: protocol.Event | None = first
            while True:
                if event is not None and not await self._handle(event):
                    return
                if reading is not None:
                    event, reading = await reading, None
                else:
                    event = await self._read(call)
                if event is None:
                    return
        finally:
            call.cancel()
            if reading is not None:
                reading.cancel()
            if writer is not None:
                writer.cancel()
                # Its error, if any, is the stream's, which the read above reports.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer

    async def _read(self, call: grpc.aio.StreamStreamCall) -> protocol.Event | None:
        """The next event; None when the stream ended or the runner fell silent."""
        while True:
            try:
                async with asyncio.timeout(self._silence):
                    raw = await call.read()
            except TimeoutError:
                log.info(
                    "runner silent; closing its stream",
                    runner=self.name,
                    seconds=self._silence,
                )
                return None
            if raw is grpc.aio.EOF:
                return None
            event = protocol.read_event(raw)
            if event is not None:  # a kind this version does not know is ignored
                return event

    async def _handle(self, event: protocol.Event) -> bool:
        """Act on one event; False when the stream must close."""
        if isinstance(event, protocol.Hello):
            # Late (after HELLO_SECONDS, a loaded runner): still checked and applied.
            return self._greeted(event)
        if isinstance(event, protocol.Accepted):
            self._answered_for(event.execution_id)
        elif isinstance(event, protocol.Started):
            await self._reports.trial_started(event.execution_id)
        elif isinstance(event, protocol.Metrics):
            await self._reports.trial_metrics(event.execution_id, event.values_json)
        elif isinstance(event, protocol.Finished):
            self.in_flight.discard(event.execution_id)
            await self._reports.trial_finished(event.execution_id, event.result)
        elif isinstance(event, protocol.Draining):
            if not self.draining:
                log.info("runner draining", runner=self.name, in_flight=len(self.in_flight))
            self.draining = True
        elif isinstance(event, protocol.Returned):
            # The runner's answer for it, as an Accepted is (one re-sent to a draining
            # runner that never recorded it is returned instead of accepted).
            self._answered_for(event.execution_id)
            self.in_flight.discard(event.execution_id)
            await self._reports.trial_returned(event.execution_id, event.reason)
        return True

    def _greeted(self, hello: protocol.Hello) -> bool:
        """Take a runner's Hello: its slots and capabilities, if it is the runner
        configured at this address. A runner under another name holds other records:
        sending it this runner's trials could run them twice, so its stream closes
        (said once per name, not per retry). A discovered runner is the one it says,
        unless another connected link goes by that name: then this stream closes, and
        the next one asks again."""
        if self.discovered and self.holding and hello.runner != self.name:
            log.error(
                "runner refused: a late Hello names another runner than its stream's",
                runner=self.name,
                address=self.address,
                says=hello.runner[:100],
            )
            return False
        if self.discovered and not self.holding:
            if not self._reports.claim(hello.runner, self):
                if hello.runner != self._refused_as:
                    self._refused_as = hello.runner
                    log.error(
                        "runner refused: another runner's stream goes by its name",
                        address=self.address,
                        says=hello.runner[:100],
                    )
                return False
            self.name, self.holding = hello.runner, True
        if hello.runner != self.name:
            if hello.runner != self._refused_as:
                self._refused_as = hello.runner
                log.error(
                    "runner refused: its name is not the configured one",
                    runner=self.name,
                    address=self.address,
                    says=hello.runner[:100],
                )
            return False
        self.slots, self.capabilities = hello.slots, hello.capabilities
        return True

    def _answered_for(self, execution_id: str) -> None:
        """The runner answered for one re-sent execution; for the last, it is up."""
        if self._unanswered:
            self._unanswered.discard(execution_id)
            if not self._unanswered:
                self._answered()

    def _answered(self) -> None:
        """The runner has answered for everything it holds: it is up."""
        self.down_since = None
        self.reconciled.set()
        self._reports.runner_up(self.name or "")

    @staticmethod
    async def _write(
        call: grpc.aio.StreamStreamCall, outbox: asyncio.Queue[runner_pb2.RunnerCommand]
    ) -> None:
        while True:
            await call.write(await outbox.get())

    async def close(self) -> None:
        await self._channel.close()
