"""A sweep outlives its orchestrator and its caller."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

import grpc
import pytest

from prism.healthcheck import serving
from prism.stack import ORCHESTRATOR
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.conftest import RunningStack, StackFactory, wait_until

SLOW = """\
import json, os, time
time.sleep(float(json.loads(os.environ["PRISM_PARAMS"]).get("delay", 3)))
print(json.dumps({"slept": True, "task": json.loads(os.environ["PRISM_PARAMS"])["task"]}))
"""
SLOW_RUNNERS = {"slow-1": SLOW, "slow-2": SLOW, "slow-3": SLOW}


@pytest.fixture
def slow_stack(make_stack: StackFactory) -> RunningStack:
    return make_stack(
        examples=SLOW_RUNNERS,
        env={"PRISM_EXAMPLE_RUNNERS": ",".join(SLOW_RUNNERS)},
        gateway=False,
    )


def stub(stack: RunningStack) -> orchestrator_pb2_grpc.OrchestratorStub:
    return orchestrator_pb2_grpc.OrchestratorStub(stack.channel())


def finished_status(stack: RunningStack, sweep_id: str) -> orchestrator_pb2.SweepStatus:
    def poll() -> orchestrator_pb2.SweepStatus | None:
        with stack.channel() as channel:
            status = orchestrator_pb2_grpc.OrchestratorStub(channel).GetSweepStatus(
                orchestrator_pb2.GetSweepStatusRequest(sweep_id=sweep_id),
                metadata=stack.metadata(),
                timeout=5,
            )
        return status if status.status != "running" else None

    return wait_until(poll, what=f"sweep {sweep_id} to finish")


def test_sigkill_after_dispatch_then_restart_completes_the_sweep(slow_stack: RunningStack) -> None:
    with slow_stack.channel() as channel:
        call = orchestrator_pb2_grpc.OrchestratorStub(channel).RunSweep.future(
            orchestrator_pb2.RunSweepRequest(task="survive"),
            metadata=slow_stack.metadata(),
            timeout=60,
        )
        # Every trial is on a runner (and running there) when the orchestrator dies.
        wait_until(lambda: len(slow_stack.executions()) == 3, what="three trials to start")
        slow_stack.stack.kill(ORCHESTRATOR)
        with pytest.raises(grpc.RpcError) as caught:
            call.result()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    [(sweep_id, state)] = slow_stack.orchestrator_query("SELECT id, status FROM sweep")
    assert state == "running"
    slow_stack.stack.start(ORCHESTRATOR)
    slow_stack.stack.wait_ready(ORCHESTRATOR)

    status = finished_status(slow_stack, sweep_id)
    assert status.status == "done"
    assert status.pending == []
    assert [r.runner for r in status.completed] == list(SLOW_RUNNERS)
    assert all(r.status == "done" for r in status.completed)
    assert all(json.loads(r.output) == {"slept": True, "task": "survive"} for r in status.completed)
    # Each trial ran exactly once: the restart re-attached, it did not re-run.
    assert slow_stack.executions() == {f"{sweep_id}/{i}": 1 for i in range(3)}


def test_a_caller_that_gives_up_gets_the_id_and_the_sweep_completes(
    slow_stack: RunningStack,
) -> None:
    with slow_stack.channel() as channel, pytest.raises(grpc.RpcError) as caught:
        orchestrator_pb2_grpc.OrchestratorStub(channel).RunSweep(
            orchestrator_pb2.RunSweepRequest(task="impatient"),
            metadata=slow_stack.metadata(),
            timeout=2,
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    match = re.search(r"sweep ([0-9a-f-]{36}) is still running", caught.value.details() or "")
    assert match, caught.value.details()
    status = finished_status(slow_stack, match.group(1))
    assert status.status == "done"
    assert len(status.completed) == 3


def test_a_caller_that_disconnects_does_not_stop_the_sweep(slow_stack: RunningStack) -> None:
    with slow_stack.channel() as channel:
        call = orchestrator_pb2_grpc.OrchestratorStub(channel).RunSweep.future(
            orchestrator_pb2.RunSweepRequest(task="gone"),
            metadata=slow_stack.metadata(),
        )
        wait_until(lambda: slow_stack.orchestrator_query("SELECT id FROM sweep"), what="the sweep")
        call.cancel()
    [(sweep_id,)] = slow_stack.orchestrator_query("SELECT id FROM sweep")
    status = finished_status(slow_stack, sweep_id)
    assert status.status == "done"
    assert [json.loads(r.output)["task"] for r in status.completed] == ["gone"] * 3


def test_restarted_orchestrator_serves_only_after_runners_report(make_stack: StackFactory) -> None:
    stack = make_stack(
        examples=SLOW_RUNNERS,
        env={"PRISM_EXAMPLE_RUNNERS": ",".join(SLOW_RUNNERS), "PRISM_RECONCILE_SECONDS": "60"},
        gateway=False,
    )
    with stack.channel() as channel:
        call = orchestrator_pb2_grpc.OrchestratorStub(channel).RunSweep.future(
            orchestrator_pb2.RunSweepRequest(task="frozen"), metadata=stack.metadata()
        )
        wait_until(lambda: len(stack.executions()) == 3, what="three trials to start")
        stack.stack.kill(ORCHESTRATOR)
        with pytest.raises(grpc.RpcError):
            call.result()
    [(sweep_id,)] = stack.orchestrator_query("SELECT id FROM sweep")
    frozen = next(iter(stack.layout.runners))
    stack.stack.signal(frozen, signal.SIGSTOP)
    try:
        stack.stack.start(ORCHESTRATOR)
        # Up, but not serving: one runner holding a trial has not reported.
        wait_until(lambda: port_open(stack.orchestrator), what="the orchestrator to listen")
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            assert not serving(stack.orchestrator)
            time.sleep(0.1)
    finally:
        stack.stack.signal(frozen, signal.SIGCONT)
    started = time.monotonic()
    stack.stack.wait_ready(ORCHESTRATOR)
    assert time.monotonic() - started < 30, "serving should follow the runner's report"
    status = finished_status(stack, sweep_id)
    assert status.status == "done"
    assert stack.executions() == {f"{sweep_id}/{i}": 1 for i in range(3)}


def port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0
