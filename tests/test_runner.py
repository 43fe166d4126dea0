"""The runner service called directly, as the orchestrator calls it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import closing

import docker
import grpc
import pytest

from prism.v1 import runner_pb2, runner_pb2_grpc, trial_pb2
from sandbox import MAX_SCRIPT_BYTES
from sandbox.container import OWNER_LABEL, TRIAL_LABEL
from tests.conftest import RunningStack, StackFactory

PREVIOUS = runner_pb2.TrialAccepted


def run(trial_id: str, script: str, **params: object) -> runner_pb2.RunnerCommand:
    return runner_pb2.RunnerCommand(
        run_trial=runner_pb2.RunTrial(
            trial_id=trial_id,
            script=script,
            params_json=json.dumps(params),
            limits=trial_pb2.TrialLimits(wall_seconds=30),
        )
    )


def connect(
    stack: RunningStack,
    commands: Iterator[runner_pb2.RunnerCommand] | list[runner_pb2.RunnerCommand],
    *,
    token: str | None = "default",
    runner: str | None = None,
    timeout: float = 60,
) -> list[runner_pb2.RunnerEvent]:
    """Send `commands`, half-close, and collect events until the runner ends the stream."""
    runner = runner or next(iter(stack.layout.runners))
    metadata = (
        ()
        if token is None
        else (("authorization", f"Bearer {stack.runner_token if token == 'default' else token}"),)
    )
    with stack.channel(runner) as channel:
        stub = runner_pb2_grpc.RunnerStub(channel)
        return list(stub.Connect(iter(commands), metadata=metadata, timeout=timeout))


def finished(events: list[runner_pb2.RunnerEvent]) -> dict[str, trial_pb2.TrialResult]:
    return {e.finished.trial_id: e.finished.result for e in events if e.HasField("finished")}


@pytest.fixture
def runner_stack(make_stack: StackFactory) -> RunningStack:
    return make_stack(gateway=False, runners=1)


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_runner_refuses_a_missing_or_wrong_token(
    runner_stack: RunningStack, token: str | None
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        connect(runner_stack, [run("x/0", "print(1)")], token=token)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert runner_stack.executions() == {}


def test_runner_refuses_the_public_api_token(runner_stack: RunningStack) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        connect(runner_stack, [run("x/0", "print(1)")], token=runner_stack.token)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_runner_runs_a_trial_with_its_token(runner_stack: RunningStack) -> None:
    script = (
        "import json, os\n"
        "print(json.dumps({'doubled': json.loads(os.environ['PRISM_PARAMS'])['x'] * 2}))"
    )
    events = connect(runner_stack, [run("s1/0", script, x=21)])
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["accepted", "started", "finished"]
    assert events[0].accepted.previous == PREVIOUS.PREVIOUS_NONE
    result = finished(events)["s1/0"]
    assert result.outcome == trial_pb2.OUTCOME_SUCCEEDED
    assert json.loads(result.stdout) == {"doubled": 42}
    assert result.exit_code == 0


def test_same_trial_id_twice_runs_once(runner_stack: RunningStack) -> None:
    script = "import time, random\ntime.sleep(1)\nprint(random.random())"
    first = connect(runner_stack, [run("dup/0", script), run("dup/0", script)])
    previous = [e.accepted.previous for e in first if e.HasField("accepted")]
    assert previous == [PREVIOUS.PREVIOUS_NONE, PREVIOUS.PREVIOUS_RUNNING]
    again = connect(runner_stack, [run("dup/0", script)])
    assert [e.accepted.previous for e in again if e.HasField("accepted")] == [
        PREVIOUS.PREVIOUS_FINISHED
    ]
    # The recorded result comes back, not a new one (the script prints a random number).
    assert finished(again)["dup/0"] == finished(first)["dup/0"]
    assert finished(first)["dup/0"].outcome == trial_pb2.OUTCOME_SUCCEEDED
    assert runner_stack.executions() == {"dup/0": 1}


def test_a_failing_trial_reports_failed_with_its_traceback(runner_stack: RunningStack) -> None:
    events = connect(runner_stack, [run("bad/0", "raise ValueError('boom')")])
    result = finished(events)["bad/0"]
    assert result.outcome == trial_pb2.OUTCOME_FAILED
    assert result.exit_code == 1
    assert "ValueError: boom" in result.stderr


@pytest.mark.parametrize("trial_id", ["", "x" * 201])
def test_runner_ends_the_stream_on_a_malformed_trial_id(
    runner_stack: RunningStack, trial_id: str
) -> None:
    command = runner_pb2.RunnerCommand(
        run_trial=runner_pb2.RunTrial(trial_id=trial_id, script="print(1)")
    )
    with pytest.raises(grpc.RpcError) as caught:
        connect(runner_stack, [command])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "trial_id" in (caught.value.details() or "")
    assert runner_stack.executions() == {}


@pytest.mark.parametrize(
    ("script", "params_json", "reason"),
    [
        ("  ", "{}", "empty"),
        ("x = 1\n" * (MAX_SCRIPT_BYTES // 6 + 1), "{}", "larger than"),
        ("print(1)", "[1]", "JSON object"),
        ("print(1)", "{", "JSON object"),
    ],
)
def test_an_unrunnable_trial_fails_alone(
    runner_stack: RunningStack, script: str, params_json: str, reason: str
) -> None:
    bad = runner_pb2.RunnerCommand(
        run_trial=runner_pb2.RunTrial(trial_id="bad/0", script=script, params_json=params_json)
    )
    events = connect(runner_stack, [bad, run("good/0", "print('fine')")])
    results = finished(events)
    assert results["bad/0"].outcome == trial_pb2.OUTCOME_FAILED
    assert reason in results["bad/0"].reason
    assert results["good/0"].outcome == trial_pb2.OUTCOME_SUCCEEDED
    assert runner_stack.executions() == {"good/0": 1}


def test_restarted_runner_removes_orphans_and_keeps_its_record(runner_stack: RunningStack) -> None:
    runner = next(iter(runner_stack.layout.runners))
    script = "import time\nprint('working', flush=True)\ntime.sleep(300)"
    metadata = (("authorization", f"Bearer {runner_stack.runner_token}"),)
    with runner_stack.channel(runner) as channel, closing(docker.from_env()) as client:
        stream = runner_pb2_grpc.RunnerStub(channel).Connect(
            iter([run("long/0", script)]), metadata=metadata, timeout=60
        )
        for event in stream:
            if event.HasField("started"):
                break
        labels = {"label": [f"{OWNER_LABEL}={runner}", f"{TRIAL_LABEL}=long/0"]}
        deadline = time.monotonic() + 10
        while not client.containers.list(filters=labels) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.containers.list(filters=labels), "the trial's container should be running"

        runner_stack.stack.kill(runner)
        assert client.containers.list(all=True, filters=labels), "SIGKILL leaves the container"
        runner_stack.stack.start(runner)
        runner_stack.stack.wait_ready(runner)
        assert client.containers.list(all=True, filters=labels) == []

    events = connect(runner_stack, [run("long/0", script)])
    assert [e.accepted.previous for e in events if e.HasField("accepted")] == [
        PREVIOUS.PREVIOUS_FINISHED
    ]
    result = finished(events)["long/0"]
    assert result.outcome == trial_pb2.OUTCOME_SANDBOX_ERROR
    assert "restarted" in result.reason
    assert runner_stack.executions() == {"long/0": 1}


def test_a_runner_without_a_token_configured_is_closed(make_stack: StackFactory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty"
    empty.write_text("")
    stack = make_stack(runners=1, gateway=False, env={"PRISM_RUNNER_TOKEN_FILE": str(empty)})
    with pytest.raises(grpc.RpcError) as caught:
        connect(stack, [run("x/0", "print(1)")], token="anything")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no runner token" in (caught.value.details() or "")
