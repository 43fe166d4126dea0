"""The live event stream: over HTTP as server-sent events through the gateway
and over gRPC, resumable by sequence number, ending with a final event."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import docker
import grpc
import pytest

from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.conftest import RunningStack, wait_until

PROGRESS = """\
import json, time
for step in range(3):
    print("PRISM_METRIC " + json.dumps({"step": step}), flush=True)
    time.sleep(0.3)
print(json.dumps({"done": True}))
"""


def sse(stack: RunningStack, sweep_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
    """Events from GET /v1/sweeps/{id}/events, as the server sends them."""
    request = urllib.request.Request(
        f"http://{stack.gateway}/v1/sweeps/{sweep_id}/events?afterSeq={after}",
        headers={"Authorization": f"Bearer {stack.token}"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert reply.status == 200
        for raw in reply:
            line = raw.decode().strip()
            if line.startswith("data:"):
                yield json.loads(line.removeprefix("data:"))


def until_final(events: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = []
    for event in events:
        seen.append(event)
        if event["final"]:
            break
    return seen


def real(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] not in ("heartbeat", "end")]


def create(stack: RunningStack, trials: int = 2) -> str:
    spec = {
        "task": "watch me",
        "script": PROGRESS,
        "parameters": {"list": [{"i": i} for i in range(trials)]},
    }
    reply = stack.create(spec)
    assert reply.status == 200, reply.body
    return str(reply.body["id"])


def test_watch_shows_a_sweep_live_and_ends_with_its_outcome(stack: RunningStack) -> None:
    sweep_id = create(stack)
    events = until_final(sse(stack, sweep_id))
    seqs = [e["seq"] for e in real(events)]
    assert seqs == list(range(1, len(seqs) + 1))
    kinds = [e["kind"] for e in real(events)]
    assert kinds[0] == "sweep_created" and kinds[-1] == "sweep_finished"
    assert kinds.count("trial_queued") == 2 and kinds.count("trial_finished") == 2
    metrics = [e for e in events if e["kind"] == "metric"]
    assert sorted((e["trialIndex"], e["data"]["values"]["step"]) for e in metrics) == [
        (i, step) for i in range(2) for step in range(3)
    ]
    final = events[-1]
    assert final["final"] is True and final["sweepState"] == "done"
    # Every trial's finish came before the end, with its outcome.
    finished = [e for e in events if e["kind"] == "trial_finished"]
    assert {e["data"]["outcome"] for e in finished} == {"succeeded"}


def test_reconnecting_with_the_last_seq_loses_and_repeats_nothing(stack: RunningStack) -> None:
    sweep_id = create(stack)
    first = []
    for event in sse(stack, sweep_id):
        first.append(event)
        if len(first) == 4:
            break  # the client goes away mid-sweep
    rest = until_final(sse(stack, sweep_id, after=first[-1]["seq"]))
    joined = [e["seq"] for e in real(first + rest)]
    assert joined == list(range(1, len(joined) + 1))
    replay = until_final(sse(stack, sweep_id))
    assert [(e["seq"], e["kind"]) for e in real(replay)] == [
        (e["seq"], e["kind"]) for e in real(first + rest)
    ]


def test_a_finished_sweep_replays_and_then_says_end(stack: RunningStack) -> None:
    sweep_id = create(stack, trials=1)
    stack.finished(sweep_id)
    replay = until_final(sse(stack, sweep_id))
    assert replay[-1]["kind"] == "sweep_finished"
    last = replay[-1]["seq"]
    [end] = until_final(sse(stack, sweep_id, after=last))
    assert (end["kind"], end["seq"], end["final"], end["sweepState"]) == ("end", last, True, "done")


def test_watch_errors_are_json_before_the_stream(stack: RunningStack) -> None:
    missing = stack.http("GET", "/v1/sweeps/nope/events")
    assert missing.status == 404 and "no sweep" in missing.body["message"]
    sweep_id = create(stack, trials=1)
    beyond = stack.http("GET", f"/v1/sweeps/{sweep_id}/events?afterSeq=100000")
    assert beyond.status == 400 and "afterSeq" in beyond.body["message"]
    unauthenticated = stack.http("GET", f"/v1/sweeps/{sweep_id}/events", token="wrong")
    assert unauthenticated.status == 401


@pytest.mark.parametrize("service", ["orchestrator", "gateway"])
def test_watch_over_grpc(stack: RunningStack, service: str) -> None:
    sweep_id = create(stack, trials=1)
    with grpc.insecure_channel(stack.layout.address(service)) as channel:
        stream = orchestrator_pb2_grpc.OrchestratorStub(channel).WatchSweep(
            orchestrator_pb2.WatchSweepRequest(sweep_id=sweep_id),
            metadata=stack.metadata(),
            timeout=60,
        )
        events = [e for e in stream if e.kind != "heartbeat"]
    assert events[-1].final and events[-1].sweep_state == "done"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


SLOW = "import time\ntime.sleep(60)\nprint('{}')"


def wait_final(stack: RunningStack, sweep_id: str) -> dict[str, Any]:
    """Until the sweep has its final state (a cancelled one may still be stopping)."""
    events = until_final(sse(stack, sweep_id))
    assert events[-1]["final"]
    return dict(stack.http("GET", f"/v1/sweeps/{sweep_id}").body)


def test_cancel_stops_running_trials_and_skips_the_rest(stack: RunningStack) -> None:
    spec = {
        "task": "cancel me",
        "script": SLOW,
        "maxParallel": 2,
        "parameters": {"list": [{"i": i} for i in range(5)]},
    }
    sweep_id = stack.create(spec).body["id"]
    wait_until(
        lambda: (
            len(
                [
                    t
                    for t in stack.http("GET", f"/v1/sweeps/{sweep_id}").body["trials"]
                    if t["state"] == "running"
                ]
            )
            == 2
        ),
        what="two trials running",
    )
    cancelled = stack.http("POST", f"/v1/sweeps/{sweep_id}:cancel", b"{}")
    assert cancelled.status == 200, cancelled.body
    assert cancelled.body["state"] == "cancelled"
    sweep = wait_final(stack, sweep_id)
    assert sweep["state"] == "cancelled" and sweep["finishTime"]
    # The two running trials were killed (they would have succeeded after 60 s).
    outcomes = [t["outcome"] for t in sweep["trials"]]
    assert outcomes == ["cancelled"] * 5
    reasons = {t["reason"] for t in sweep["trials"]}
    assert "the sweep was cancelled before the trial started" in reasons
    # Nothing of it is left running on the runners (what they prepared for the next
    # trials is created, not started).
    with closing(docker.from_env()) as client:
        for runner in stack.layout.runners:
            mine = client.containers.list(
                filters={"label": f"prism.owner={runner}", "status": "running"}
            )
            assert mine == []
    # Cancelling again changes nothing.
    again = stack.http("POST", f"/v1/sweeps/{sweep_id}:cancel", b"{}")
    assert again.status == 200 and again.body["state"] == "cancelled"


def test_cancel_a_finished_sweep_changes_nothing_and_unknown_is_404(stack: RunningStack) -> None:
    sweep_id = create(stack, trials=1)
    done = stack.finished(sweep_id)
    assert stack.http("POST", f"/v1/sweeps/{sweep_id}:cancel", b"{}").body["state"] == done["state"]
    assert stack.http("POST", "/v1/sweeps/nope:cancel", b"{}").status == 404


def test_cancel_over_grpc(stack: RunningStack) -> None:
    sweep_id = stack.create({"task": "grpc cancel", "script": SLOW}).body["id"]
    with stack.channel() as channel:
        reply = orchestrator_pb2_grpc.OrchestratorStub(channel).CancelSweep(
            orchestrator_pb2.CancelSweepRequest(sweep_id=sweep_id),
            metadata=stack.metadata(),
            timeout=30,
        )
    assert reply.state == "cancelled"
    assert wait_final(stack, sweep_id)["trials"][0]["outcome"] == "cancelled"
