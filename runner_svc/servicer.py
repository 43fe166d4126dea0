"""prism.v1.Runner: the stream the orchestrator drives this runner through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from prism import logs
from prism import runner_protocol as protocol
from prism.errors import InvalidArgument, PrismError
from prism.rpc import abort
from prism.runner_protocol import SLOTS_KEY
from prism.trial import Outcome, not_run
from prism.v1 import runner_pb2, runner_pb2_grpc
from runner_svc.executor import Outbox, TrialExecutor, accepted_event

# A stream quiet this long gets a heartbeat: the orchestrator takes a longer
# silence (PRISM_RUNNER_SILENCE_SECONDS) for a hung runner.
HEARTBEAT_SECONDS = 2.0

log = logs.get("runner.servicer")


def validate(trial_id: str) -> None:
    """The orchestrator makes trial ids: a bad one is a broken peer, which
    ends the stream. A bad script or bad parameters fail only their trial."""
    if not trial_id or len(trial_id) > protocol.MAX_EXECUTION_ID:
        raise InvalidArgument("trial_id", f"must be 1 to {protocol.MAX_EXECUTION_ID} characters")


class RunnerServicer(runner_pb2_grpc.RunnerServicer):
    def __init__(self, name: str, executor: TrialExecutor) -> None:
        self._name = name
        self._executor = executor

    async def Connect(
        self,
        request_iterator: AsyncIterator[runner_pb2.RunnerCommand],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[runner_pb2.RunnerEvent]:
        """Events for every trial sent on this stream. When the orchestrator
        half-closes, the stream ends once those trials have all finished (or been
        handed back); when the runner stops, once it has said all it had to."""
        # Headers go out at once, so the orchestrator knows the stream is open (and
        # the token accepted) before any trial event exists; they carry our slots for
        # orchestrators older than the Hello that follows.
        await context.send_initial_metadata(((SLOTS_KEY, str(self._executor.slots)),))
        yield protocol.hello(self._name, self._executor.slots)
        outbox: Outbox = asyncio.Queue()
        # Before any command is read, so a drain under way is told right after the Hello.
        self._executor.open(outbox)  # type: ignore[arg-type]

        async def read_commands() -> None:
            try:
                async for command in request_iterator:
                    await self._command(command, outbox)
            except PrismError as error:
                outbox.put_nowait(error)
            except Exception as error:
                logs.unexpected(log, "reading the orchestrator's commands failed", error)
            finally:
                outbox.put_nowait(None)

        reader = asyncio.create_task(read_commands())
        outstanding: set[str] = set()
        closed = False
        try:
            while not (closed and not outstanding):
                try:
                    async with asyncio.timeout(HEARTBEAT_SECONDS):
                        event = await outbox.get()
                except TimeoutError:
                    yield protocol.HEARTBEAT
                    continue
                if event is None:
                    closed = True
                    continue
                if isinstance(event, PrismError):
                    await abort(context, event)
                    return
                kind = event.WhichOneof("event")
                if kind == "accepted":
                    outstanding.add(event.accepted.trial_id)
                elif kind == "finished":
                    outstanding.discard(event.finished.trial_id)
                elif kind == "returned":
                    outstanding.discard(event.returned.trial_id)
                yield event
        finally:
            reader.cancel()
            self._executor.forget(outbox)  # type: ignore[arg-type]

    async def _command(self, command: runner_pb2.RunnerCommand, outbox: Outbox) -> None:
        """Carry out one command. A failure of ours while doing it ends that trial
        alone, as sandbox_error; a broken peer (PrismError) ends the stream."""
        if command.HasField("run_trial"):
            trial_id = command.run_trial.trial_id
            validate(trial_id)
            action = self._executor.submit(command.run_trial, outbox)
        elif command.HasField("cancel_trial"):
            trial_id = command.cancel_trial.trial_id
            validate(trial_id)
            action = self._executor.cancel(trial_id, outbox)
        else:
            return
        try:
            await action
        except PrismError:
            raise
        except Exception as error:
            error_id = logs.unexpected(log, "a command failed", error, execution=trial_id)
            reason = f"the runner could not take the trial (error id {error_id})"
            outbox.put_nowait(accepted_event(trial_id, None))
            outbox.put_nowait(protocol.finished(trial_id, not_run(Outcome.SANDBOX_ERROR, reason)))
