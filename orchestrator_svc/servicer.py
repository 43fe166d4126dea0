"""prism.v1.Orchestrator: thin handlers over the store (reads), the dispatcher
(new sweeps, cancels) and the sweeps' news (watches, waits)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc
from google.api import httpbody_pb2

from orchestrator_svc import store, strict, sweeps, views
from orchestrator_svc.answers import Answers
from orchestrator_svc.config import Settings
from orchestrator_svc.dispatch import Dispatcher
from orchestrator_svc.news import SweepNews
from orchestrator_svc.spec import plan
from prism import logs
from prism.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    PrismError,
    Unavailable,
)
from prism.rpc import abort, rpc
from prism.sqlite import DbThread
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc

T = TypeVar("T")
log = logs.get("orchestrator.api")

# A watch with nothing new sends a heartbeat this often, well inside the
# gateway's idle timeout for the stream (300 s) and friendly to proxies.
HEARTBEAT_SECONDS = 15.0
EVENTS_PER_READ = 500
# Answer a little before the caller's deadline so it gets the sweep id.
DEADLINE_MARGIN_SECONDS = 1.0
MAX_REQUEST_ID = 100
DEFAULT_PAGE, MAX_PAGE = 20, 100
DEFAULT_TRIALS_PAGE, MAX_TRIALS_PAGE = 100, 1000


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(
        self, settings: Settings, db: DbThread, news: SweepNews, dispatcher: Dispatcher
    ) -> None:
        self._settings = settings
        self._db = db
        self._news = news
        self._dispatcher = dispatcher
        self._answers = Answers(db)
        # False until recovery is done; set by the server.
        self.ready = False

    def _check_ready(self) -> None:
        if not self.ready:
            raise Unavailable("the orchestrator is recovering its sweeps; retry shortly")

    async def _sweep(
        self, sweep_id: str, *, outputs: bool = False
    ) -> tuple[store.Sweep, list[store.Trial]]:
        """The sweep and its trials; with their outputs as far as the compatible
        routes show them (a trial's output may be 16 MiB: never read whole here)."""
        budget = sweeps.OUTPUT_BUDGET_CHARS if outputs else 0
        return await self._found(
            functools.partial(store.sweep_with_trials, output_budget=budget), sweep_id
        )

    async def _sweep_row(self, sweep_id: str) -> store.Sweep:
        """The sweep alone, without reading its trials."""
        return await self._found(store.sweep, sweep_id)

    async def _found(self, lookup: Callable[[str], T | None], sweep_id: str) -> T:
        found = await self._db(lookup, sweep_id)
        if found is None:
            raise NotFound(f"no sweep {sweep_id[:100]!r}")
        return found

    async def _trial(self, sweep_id: str, index: int, *, outputs: bool = False) -> store.Trial:
        self._check_ready()
        found = await self._db(functools.partial(store.trial_at, outputs=outputs), sweep_id, index)
        if found is None:
            raise NotFound(f"no trial {index} in sweep {sweep_id[:100]!r}")
        return found

    async def _full(self, sweep_id: str) -> orchestrator_pb2.Sweep:
        answer = await self._found(
            functools.partial(store.sweep_answer, first=views.SWEEP_TRIALS), sweep_id
        )
        artifacts = await self._db(store.artifacts_by_trial, [t.id for t in answer.trials])
        # Building a large answer is CPU work: off the event loop.
        return await asyncio.to_thread(views.sweep, answer.sweep, answer, artifacts)

    @rpc
    async def GetLanding(
        self, request: orchestrator_pb2.GetLandingRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.Landing:
        return sweeps.LANDING

    @rpc
    async def RunSweep(
        self, request: orchestrator_pb2.RunSweepRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.RunSweepResponse:
        planned = sweeps.default_sweep(request, self._settings)
        self._check_ready()
        sweep_id = await self._dispatcher.submit(planned)
        wait = self._settings.sync_wait_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, remaining - DEADLINE_MARGIN_SECONDS)
        # The sweep is recorded: it completes whether or not this call waits.
        finished = functools.partial(self._db, store.sweep_finished, sweep_id)
        if not await self._news.wait_finished(sweep_id, max(0.0, wait), finished):
            raise DeadlineExceeded(
                f"sweep {sweep_id} is still running; poll GET /sweeps/{sweep_id}"
            )
        _, trials = await self._sweep(sweep_id, outputs=True)
        return orchestrator_pb2.RunSweepResponse(sweep_id=sweep_id, results=sweeps.results(trials))

    @rpc
    async def GetSweepStatus(
        self, request: orchestrator_pb2.GetSweepStatusRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.SweepStatus:
        self._check_ready()
        return await self._answers.status(request.sweep_id)

    @rpc
    async def CreateSweep(
        self, request: orchestrator_pb2.CreateSweepRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.Sweep:
        return await self._create(request)

    @rpc
    async def CreateSweepFromJson(
        self,
        request: orchestrator_pb2.CreateSweepFromJsonRequest,
        context: grpc.aio.ServicerContext,
    ) -> orchestrator_pb2.Sweep:
        # Up to the gateway's body limit (1 MiB) of JSON to parse: off the event loop.
        spec = await asyncio.to_thread(strict.parse, request.body, orchestrator_pb2.SweepSpec())
        return await self._create(
            orchestrator_pb2.CreateSweepRequest(sweep=spec, request_id=request.request_id)
        )

    async def _create(self, request: orchestrator_pb2.CreateSweepRequest) -> orchestrator_pb2.Sweep:
        if len(request.request_id) > MAX_REQUEST_ID or not request.request_id.isprintable():
            raise InvalidArgument(
                "requestId", f"must be at most {MAX_REQUEST_ID} printable characters"
            )
        # Compiling the script to check it is CPU work: off the event loop.
        planned = await asyncio.to_thread(plan, request.sweep, self._settings)
        self._check_ready()
        sweep_id = await self._dispatcher.submit(planned, request.request_id)
        return await self._full(sweep_id)

    @rpc
    async def CancelSweep(
        self, request: orchestrator_pb2.CancelSweepRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.Sweep:
        self._check_ready()
        await self._sweep_row(request.sweep_id)  # NOT_FOUND before anything else
        await self._dispatcher.cancel(request.sweep_id)
        return await self._full(request.sweep_id)

    @rpc
    async def GetSweep(
        self, request: orchestrator_pb2.GetSweepRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.Sweep:
        self._check_ready()
        return await self._answers.sweep(request.sweep_id)

    async def WatchSweep(
        self, request: orchestrator_pb2.WatchSweepRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[orchestrator_pb2.SweepEvent]:
        try:
            self._check_ready()
            row = await self._sweep_row(request.sweep_id)
            if not 0 <= request.after_seq <= row.last_seq:
                raise InvalidArgument("afterSeq", f"must be 0 to the last seq, {row.last_seq}")
        except PrismError as error:
            await abort(context, error)
            return
        except Exception as error:
            # Before the first event an error is still an HTTP status: answer with one.
            error_id = logs.unexpected(log, "a watch failed", error, sweep=request.sweep_id[:100])
            await abort(context, Internal(logs.internal_error(error_id)))
            return
        after = request.after_seq
        try:
            async for event in self._events(row, after):
                after = event.seq
                yield event
        except Exception as error:
            # Whatever went wrong, the stream still ends with a final event that says
            # so: an error in the middle of a stream is invisible to HTTP/1.1 clients.
            error_id = logs.unexpected(log, "a watch failed", error, sweep=row.id)
            yield orchestrator_pb2.SweepEvent(
                seq=after,
                kind="error",
                trial_index=-1,
                final=True,
                data=views.message(logs.internal_error(error_id)),
            )

    async def _events(
        self, row: store.Sweep, after: int
    ) -> AsyncIterator[orchestrator_pb2.SweepEvent]:
        """The sweep's events after `after`, then live ones, up to its final one."""
        if row.finished_at is not None and after >= row.last_seq:
            # Everything was seen already, the end included: say so, once.
            yield orchestrator_pb2.SweepEvent(
                seq=after, kind="end", trial_index=-1, final=True, sweep_state=row.status
            )
            return
        while True:
            news = self._news.news()  # before reading: no write slips between
            found = await self._db(store.events_after, row.id, after, EVENTS_PER_READ)
            for found_event in found:
                shown = views.event(found_event)
                after = shown.seq
                yield shown
                if shown.final:
                    return
            if found:
                continue
            try:
                async with asyncio.timeout(HEARTBEAT_SECONDS):
                    await news.wait()
            except TimeoutError:
                yield orchestrator_pb2.SweepEvent(seq=after, kind="heartbeat", trial_index=-1)

    @rpc
    async def ListSweeps(
        self, request: orchestrator_pb2.ListSweepsRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.ListSweepsResponse:
        if not 0 <= request.page_size <= MAX_PAGE:
            raise InvalidArgument("pageSize", f"must be 1 to {MAX_PAGE} (0: {DEFAULT_PAGE})")
        cursor = views.parse_page_token(request.page_token)
        self._check_ready()
        size = request.page_size or DEFAULT_PAGE
        # One more than the page tells whether another page follows.
        found = await self._db(store.list_sweeps, size + 1, cursor)
        page = found[:size]
        return orchestrator_pb2.ListSweepsResponse(
            sweeps=[views.sweep(row, by_state=counts) for row, counts in page],
            next_page_token=views.page_token(page[-1][0]) if len(found) > size else "",
        )

    @rpc
    async def ListTrials(
        self, request: orchestrator_pb2.ListTrialsRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.ListTrialsResponse:
        if not 0 <= request.page_size <= MAX_TRIALS_PAGE:
            raise InvalidArgument(
                "pageSize", f"must be 1 to {MAX_TRIALS_PAGE} (0: {DEFAULT_TRIALS_PAGE})"
            )
        chosen = views.TrialFilter.of(request)
        after = views.parse_trials_page_token(request.page_token, request.sweep_id, chosen)
        self._check_ready()
        row = await self._sweep_row(request.sweep_id)
        if chosen.order == store.BY_OBJECTIVE and not (row.spec.get("objective") or {}).get(
            "metric"
        ):
            raise InvalidArgument("orderBy", "objective needs a sweep with one objective")
        size = request.page_size or DEFAULT_TRIALS_PAGE
        # One more than the page tells whether another page follows. On the reader
        # threads: a page of a large sweep must not wait behind the writes.
        rows, total = await self._db.read(
            functools.partial(
                store.trial_page,
                state=chosen.state,
                outcome=chosen.outcome,
                order=chosen.order,
                after=after,
                limit=size + 1,
            ),
            row.id,
        )
        artifacts = await self._db.read(store.artifacts_by_trial, [t.id for t in rows[:size]])
        shown = await asyncio.to_thread(views.trials_page, rows[:size], artifacts)
        last = rows[len(shown) - 1] if shown else None
        more = len(shown) < len(rows)
        token = ""
        if more and last is not None:
            rank = last.objective_rank if chosen.order == store.BY_OBJECTIVE else None
            token = views.trials_page_token(row.id, chosen, rank, last.position)
        return orchestrator_pb2.ListTrialsResponse(
            trials=shown, next_page_token=token, total_size=total
        )

    @rpc
    async def GetTrial(
        self, request: orchestrator_pb2.GetTrialRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.Trial:
        self._check_ready()
        return await self._answers.trial(request.sweep_id, request.index)

    @rpc
    async def GetTrialLogs(
        self, request: orchestrator_pb2.GetTrialLogsRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.TrialLogs:
        row = await self._trial(request.sweep_id, request.index, outputs=True)
        return await asyncio.to_thread(views.logs, row)  # up to 16 MiB of text to measure

    @rpc
    async def ListArtifacts(
        self, request: orchestrator_pb2.ListArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.ListArtifactsResponse:
        row = await self._trial(request.sweep_id, request.index)
        found = await self._db(store.artifacts, row.id)
        return orchestrator_pb2.ListArtifactsResponse(
            artifacts=[orchestrator_pb2.ArtifactInfo(name=n, size_bytes=s) for n, s in found],
            skipped=row.artifacts_skipped,
        )

    @rpc
    async def GetArtifact(
        self, request: orchestrator_pb2.GetArtifactRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        row = await self._trial(request.sweep_id, request.index)
        data = await self._db(store.artifact_data, row.id, request.name)
        if data is None:
            raise NotFound(f"trial {request.index} has no artifact {request.name[:200]!r}")
        # Never a type a browser would render: the bytes are the trial's, untrusted.
        return httpbody_pb2.HttpBody(content_type="application/octet-stream", data=data)
