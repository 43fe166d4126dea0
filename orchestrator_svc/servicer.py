"""prism.v1.Orchestrator: thin handlers over the dispatcher and the store."""

from __future__ import annotations

import grpc

from orchestrator_svc import store, sweeps
from orchestrator_svc.dispatch import Dispatcher
from prism.errors import DeadlineExceeded, NotFound, Unavailable
from prism.service import rpc
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc

# Answer a little before the caller's deadline so it gets the sweep id.
DEADLINE_MARGIN_SECONDS = 1.0


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self._settings = dispatcher.settings
        # False until recovery is done; set by the server.
        self.ready = False

    def _check_ready(self) -> None:
        if not self.ready:
            raise Unavailable("the orchestrator is recovering its sweeps; retry shortly")

    async def _sweep(self, sweep_id: str) -> tuple[store.Sweep, list[store.Trial]]:
        found = await self._dispatcher.db(store.sweep_with_trials, sweep_id)
        if found is None:
            raise NotFound(f"no sweep {sweep_id[:100]!r}")
        return found

    @rpc
    async def GetLanding(
        self, request: orchestrator_pb2.GetLandingRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.Landing:
        return sweeps.LANDING

    @rpc
    async def RunSweep(
        self, request: orchestrator_pb2.RunSweepRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.RunSweepResponse:
        task = sweeps.clean_task(request)
        self._check_ready()
        sweep_id = await self._dispatcher.submit(task, sweeps.plan_default(self._settings, task))
        wait = self._settings.sync_wait_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, remaining - DEADLINE_MARGIN_SECONDS)
        # The sweep is recorded: it completes whether or not this call waits.
        if not await self._dispatcher.wait(sweep_id, max(0.0, wait)):
            raise DeadlineExceeded(
                f"sweep {sweep_id} is still running; poll GET /sweeps/{sweep_id}"
            )
        _, trials = await self._sweep(sweep_id)
        return orchestrator_pb2.RunSweepResponse(sweep_id=sweep_id, results=sweeps.results(trials))

    @rpc
    async def GetSweepStatus(
        self, request: orchestrator_pb2.GetSweepStatusRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.SweepStatus:
        self._check_ready()
        return sweeps.status(*await self._sweep(request.sweep_id))
