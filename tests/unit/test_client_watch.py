"""The client's watch against a scripted orchestrator on a loopback port: what it yields,
how it resumes, what it raises. In-process, no stack."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from prism import client
from prism.client import AsyncClient, Client, DeadlineExceeded, Internal, NotFound, Unavailable
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc

Event = orchestrator_pb2.SweepEvent


def event(seq: int, kind: str = "trial_finished", *, final: bool = False) -> Event:
    return Event(seq=seq, kind=kind, trial_index=-1 if final else 0, final=final)


FINAL = "sweep_finished"
# What one stream does: events to send, then how it ends (None: it just ends).
Stream = tuple[list[Event], grpc.StatusCode | None]


class Scripted(orchestrator_pb2_grpc.OrchestratorServicer):
    """Each WatchSweep call plays the next stream of the script (the last one again when
    the script runs out), recording the after_seq it was asked for."""

    def __init__(self, streams: list[Stream], pause: float = 0.0) -> None:
        self.streams = streams
        self.asked: list[int] = []
        self.pause = pause

    def WatchSweep(
        self, request: orchestrator_pb2.WatchSweepRequest, context: grpc.ServicerContext
    ) -> Iterator[Event]:
        self.asked.append(request.after_seq)
        events, ending = self.streams[min(len(self.asked), len(self.streams)) - 1]
        for item in events:
            if item.seq > request.after_seq or item.kind in ("heartbeat", "error"):
                yield item
            time.sleep(self.pause)
        if ending is not None:
            context.abort(ending, "scripted")


def serve(servicer: Scripted, use: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(client, "RECONNECT_BACKOFF_SECONDS", 0.01)
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        return use(f"127.0.0.1:{port}")
    finally:
        server.stop(0)


def watched(target: str, **options: Any) -> list[tuple[int, str]]:
    with Client(target, "t") as prism:
        return [(e.seq, e.kind) for e in prism.watch("s", **options)]


def test_a_dropped_stream_resumes_after_the_last_event(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Scripted(
        [
            ([event(1), Event(seq=1, kind="heartbeat"), event(2)], grpc.StatusCode.UNAVAILABLE),
            ([event(1), event(2), event(3), event(4, FINAL, final=True)], None),
        ]
    )
    seen = serve(script, watched, monkeypatch)
    assert seen == [(1, "trial_finished"), (2, "trial_finished"), (3, "trial_finished"), (4, FINAL)]
    assert script.asked == [0, 2]


@pytest.mark.parametrize(
    "first",
    [
        ([event(1)], None),  # ended without its final event
        ([event(1)], grpc.StatusCode.INTERNAL),  # a proxy whose upstream died
        ([event(1), Event(seq=1, kind="error", trial_index=-1, final=True)], None),
    ],
    ids=["ended", "internal", "error-event"],
)
def test_other_failures_of_the_stream_resume_too(
    first: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Scripted([first, ([event(1), event(2, FINAL, final=True)], None)])
    assert serve(script, watched, monkeypatch) == [(1, "trial_finished"), (2, FINAL)]
    assert script.asked == [0, 1]


def test_an_answer_of_the_service_is_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Scripted([([], grpc.StatusCode.NOT_FOUND)])
    with pytest.raises(NotFound):
        serve(script, watched, monkeypatch)
    assert script.asked == [0]


@pytest.mark.parametrize(
    "stream, raised",
    [
        (([], grpc.StatusCode.UNAVAILABLE), Unavailable),
        (([Event(seq=0, kind="error", trial_index=-1, final=True)], None), Internal),
        (([], None), Unavailable),
    ],
    ids=["unavailable", "error-events", "empty-streams"],
)
def test_failures_in_a_row_end_the_watch_after_its_patience(
    stream: Stream, raised: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Scripted([stream])
    started = time.monotonic()
    with pytest.raises(raised):
        serve(script, lambda t: watched(t, reconnect_seconds=0.3), monkeypatch)
    assert 0.3 <= time.monotonic() - started < 10
    assert len(script.asked) >= 3  # tried again, with waits that grow


def test_a_watch_ends_at_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    beats = [Event(seq=0, kind="heartbeat", trial_index=-1)] * 100
    script = Scripted([(beats, None)], pause=0.05)
    with pytest.raises(DeadlineExceeded):
        serve(script, lambda t: watched(t, timeout=0.3), monkeypatch)


def test_the_async_twin_resumes_the_same_way_and_may_be_made_before_its_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = Scripted(
        [
            ([event(1)], grpc.StatusCode.UNAVAILABLE),
            ([event(1), event(2, FINAL, final=True)], None),
        ]
    )

    def use(target: str) -> list[int]:
        prism = AsyncClient(target, "t")  # no loop runs yet

        async def watch() -> list[int]:
            async with prism:
                return [e.seq async for e in prism.watch("s")]

        return asyncio.run(watch())

    assert serve(script, use, monkeypatch) == [1, 2]
    assert script.asked == [0, 1]
