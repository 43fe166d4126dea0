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
import uuid

import grpc

from orchestrator_svc import store
from orchestrator_svc.config import Settings
from prism.service import CLIENT_KEEPALIVE, log
from prism.sqlite import DbThread
from prism.v1 import runner_pb2, runner_pb2_grpc, trial_pb2

logger = logging.getLogger("orchestrator.dispatch")

OUTCOME_NAMES = {
    value: name.removeprefix("OUTCOME_").lower()
    for name, value in trial_pb2.Outcome.items()
    if value != trial_pb2.OUTCOME_UNSPECIFIED
}


def run_command(trial: store.Trial, source: str) -> runner_pb2.RunnerCommand:
    return runner_pb2.RunnerCommand(
        run_trial=runner_pb2.RunTrial(
            trial_id=trial.id,
            script=source,
            params_json=trial.params_json,
            limits=trial_pb2.TrialLimits(wall_seconds=trial.wall_seconds),
        )
    )


def result_from_proto(result: trial_pb2.TrialResult) -> store.TrialResult:
    return store.TrialResult(
        outcome=OUTCOME_NAMES.get(result.outcome, "sandbox_error"),
        reason=result.reason,
        exit_code=result.exit_code,
        stdout=result.stdout,
        stderr=result.stderr,
        output_truncated=result.output_truncated,
        duration_seconds=result.duration_seconds,
    )


class RunnerLink:
    """One runner service and the stream to it."""

    def __init__(self, name: str, address: str, token: str | None, dispatcher: Dispatcher) -> None:
        self.name = name
        self.address = address
        self.connected = False
        self.in_flight: set[str] = set()
        # Set once the first stream has answered for every trial re-sent on it.
        self.reconciled = asyncio.Event()
        self._metadata = (("authorization", f"Bearer {token or ''}"),)
        self._dispatcher = dispatcher
        self._channel = grpc.aio.insecure_channel(address, options=CLIENT_KEEPALIVE)
        self._stub = runner_pb2_grpc.RunnerStub(self._channel)
        self._outbox: asyncio.Queue[runner_pb2.RunnerCommand] | None = None

    def send(self, command: runner_pb2.RunnerCommand) -> None:
        """Queue a command on the open stream. Without one it is dropped: the
        trial is recorded as dispatched here, so the next stream re-sends it."""
        if self._outbox is not None:
            self._outbox.put_nowait(command)

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._session()
            except grpc.aio.AioRpcError as error:
                if self.connected or backoff == 0.1:
                    log(
                        logger,
                        "runner stream closed",
                        runner=self.name,
                        code=error.code().name,
                        details=error.details(),
                    )
            finally:
                if self.connected:
                    backoff = 0.1
                self.connected = False
                self._outbox = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _session(self) -> None:
        call = self._stub.Connect(metadata=self._metadata)
        await call.wait_for_connection()
        outbox: asyncio.Queue[runner_pb2.RunnerCommand] = asyncio.Queue()
        held = await self._dispatcher.db(store.in_flight, self.name)
        unanswered = {trial.id for trial, _ in held}
        self.in_flight = set(unanswered)
        for trial, source in held:
            outbox.put_nowait(run_command(trial, source))
        self._outbox = outbox
        self.connected = True
        log(logger, "runner connected", runner=self.name, address=self.address, resent=len(held))
        if not unanswered:
            self.reconciled.set()
        self._dispatcher.kick()
        writer = asyncio.create_task(self._write(call, outbox))
        try:
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "accepted":
                    unanswered.discard(event.accepted.trial_id)
                    if not unanswered:
                        self.reconciled.set()
                elif kind == "started":
                    await self._dispatcher.db(store.mark_started, event.started.trial_id)
                elif kind == "finished":
                    self.in_flight.discard(event.finished.trial_id)
                    await self._dispatcher.record(
                        event.finished.trial_id, result_from_proto(event.finished.result)
                    )
        finally:
            writer.cancel()
            call.cancel()

    @staticmethod
    async def _write(
        call: grpc.aio.StreamStreamCall, outbox: asyncio.Queue[runner_pb2.RunnerCommand]
    ) -> None:
        while True:
            await call.write(await outbox.get())

    async def close(self) -> None:
        await self._channel.close()


class Dispatcher:
    def __init__(self, settings: Settings, db: DbThread) -> None:
        self.settings = settings
        self.db = db
        self.links = [RunnerLink(n, a, settings.runner_token, self) for n, a in settings.runners]
        self._kicked = asyncio.Event()
        self._sweep_done: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        finished = await self.db(store.finish_complete_sweeps)
        if finished:
            log(logger, "finished sweeps completed before a crash", sweeps=finished)
        self._tasks = [asyncio.create_task(link.run()) for link in self.links]
        self._tasks.append(asyncio.create_task(self._dispatch_loop()))
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

    async def submit(self, task: str, planned: list[store.PlannedTrial]) -> str:
        sweep_id = str(uuid.uuid4())
        await self.db(store.create_sweep, sweep_id, task, planned)
        log(logger, "sweep created", sweep=sweep_id, trials=len(planned))
        self.kick()
        return sweep_id

    async def wait(self, sweep_id: str, within: float) -> bool:
        """True once the sweep has finished, False if `within` seconds ran out first."""
        done = self._sweep_done.setdefault(sweep_id, asyncio.Event())
        try:
            if await self.db(store.sweep_status, sweep_id) != store.SWEEP_RUNNING:
                return True
            async with asyncio.timeout(within):
                await done.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._sweep_done.pop(sweep_id, None)

    async def record(self, trial_id: str, result: store.TrialResult) -> None:
        status = await self.db(store.finish_trial, trial_id, result)
        log(logger, "trial finished", trial=trial_id, outcome=result.outcome)
        if status is not None:
            sweep_id = trial_id.rpartition("/")[0]
            log(logger, "sweep finished", sweep=sweep_id, status=status)
            if sweep_id in self._sweep_done:
                self._sweep_done[sweep_id].set()

    def _least_loaded(self) -> RunnerLink | None:
        connected = [link for link in self.links if link.connected]
        return min(connected, key=lambda link: len(link.in_flight), default=None)

    async def _dispatch_loop(self) -> None:
        while True:
            await self._kicked.wait()
            self._kicked.clear()
            for trial, source in await self.db(store.pending_trials):
                link = self._least_loaded()
                if link is None:
                    break  # a runner connecting kicks this loop again
                if await self.db(store.assign, trial.id, link.name):
                    link.in_flight.add(trial.id)
                    link.send(run_command(trial, source))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in self.links:
            await link.close()
