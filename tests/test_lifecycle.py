"""Graceful SIGTERM: each service drains and exits 0; a runner stopping mid-trial
hands the trial back past its drain, records it as an infrastructure failure (so it
never runs there again) and leaves no container."""

from __future__ import annotations

import signal
import subprocess

from prism.healthcheck import serving
from prism.stack import GATEWAY, ORCHESTRATOR
from prism.v1 import trial_pb2
from sandbox.container import OWNER_LABEL
from tests.conftest import StackFactory
from tests.test_runner import PREVIOUS, connect, finished, run, running


def terminate(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_every_service_exits_cleanly_on_sigterm(make_stack: StackFactory) -> None:
    stack = make_stack(runners=1)
    procs = stack.stack.procs
    assert terminate(procs.pop(GATEWAY)) == 0
    assert terminate(procs.pop(ORCHESTRATOR)) == 0
    [runner] = stack.layout.runners
    assert terminate(procs.pop(runner)) == 0
    assert not serving(stack.layout.address(runner))


def test_runner_sigterm_mid_trial_records_it_and_removes_the_container(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(runners=1, gateway=False, env={"PRISM_RUNNER_DRAIN_SECONDS": "1"})
    [runner] = stack.layout.runners
    script = "import time\ntime.sleep(300)"
    with running(stack, runner, run("term/0", script)) as client:
        mine = {"label": f"{OWNER_LABEL}={runner}"}
        assert terminate(stack.stack.procs.pop(runner)) == 0
        assert client.containers.list(all=True, filters=mine) == []

    stack.stack.layout.pid_file(runner).unlink()
    stack.stack.start(runner)
    stack.stack.wait_ready(runner)
    again = connect(stack, [run("term/0", script)])
    assert [e.accepted.previous for e in again if e.HasField("accepted")] == [
        PREVIOUS.PREVIOUS_FINISHED
    ]
    result = finished(again)["term/0"]
    assert result.outcome == trial_pb2.OUTCOME_SANDBOX_ERROR
    assert result.reason == "handed back: runner stopping"
    assert stack.executions() == {"term/0": 1}
