"""The runner service called directly, as the orchestrator calls it."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

import docker
import docker.errors
import grpc
import pytest

from prism.runner_protocol import PROTOCOL_VERSION
from prism.sqlite import DbThread
from prism.v1 import runner_pb2, runner_pb2_grpc, trial_pb2
from runner_svc import store as runner_store
from runner_svc.config import Settings
from runner_svc.executor import TrialExecutor
from sandbox import MAX_ARTIFACT_BYTES, MAX_SCRIPT_BYTES, Sandbox
from sandbox.container import OWNER_LABEL, container_name
from sandbox.images import ensure_requirements_image
from tests.conftest import RunningStack, StackFactory, wait_until
from tests.test_requirements import write_wheel

PREVIOUS = runner_pb2.TrialAccepted
MiB = 2**20
# As the orchestrator's channel: a finished trial with its artifacts passes 4 MiB.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * MiB)]


def run(
    trial_id: str, script: str, *, requirements: Sequence[str] = (), **params: object
) -> runner_pb2.RunnerCommand:
    return runner_pb2.RunnerCommand(
        run_trial=runner_pb2.RunTrial(
            trial_id=trial_id,
            script=script,
            params_json=json.dumps(params),
            limits=trial_pb2.TrialLimits(wall_seconds=30),
            requirements=requirements,
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
    """Send `commands`, half-close, and collect events until the runner ends the
    stream; its first, the Hello, checked and left out, and so are heartbeats (sent
    when it is quiet for 2 s, as on a loaded machine)."""
    runner = runner or next(iter(stack.layout.runners))
    metadata = (
        ()
        if token is None
        else (("authorization", f"Bearer {stack.runner_token if token == 'default' else token}"),)
    )
    address = stack.layout.address(runner)
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = runner_pb2_grpc.RunnerStub(channel)
        events = list(stub.Connect(iter(commands), metadata=metadata, timeout=timeout))
    assert events[0].hello.runner == runner and events[0].hello.protocol == PROTOCOL_VERSION
    return [e for e in events[1:] if not e.HasField("heartbeat")]


def finished(events: list[runner_pb2.RunnerEvent]) -> dict[str, trial_pb2.TrialResult]:
    return {e.finished.trial_id: e.finished.result for e in events if e.HasField("finished")}


@contextmanager
def running(
    stack: RunningStack, runner: str, command: runner_pb2.RunnerCommand
) -> Iterator[docker.DockerClient]:
    """Send one trial on a stream held open until the block ends, once its
    container runs; yields a Docker client for looking at it."""
    metadata = (("authorization", f"Bearer {stack.runner_token}"),)
    trial = command.run_trial.trial_id
    with stack.channel(runner) as channel, closing(docker.from_env()) as client:
        events = runner_pb2_grpc.RunnerStub(channel).Connect(
            iter([command]), metadata=metadata, timeout=60
        )
        for event in events:
            if event.HasField("started"):
                break
        labels = {"label": f"{OWNER_LABEL}={runner}", "name": container_name(runner, trial)}
        wait_until(lambda: client.containers.list(filters=labels), what="the trial's container")
        yield client


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
    labels = {"label": f"{OWNER_LABEL}={runner}", "name": container_name(runner, "long/0")}
    with running(runner_stack, runner, run("long/0", script)) as client:
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


def test_runner_advertises_its_slots(make_stack: StackFactory) -> None:
    stack = make_stack(gateway=False, runners=1, env={"PRISM_RUNNER_SLOTS": "3"})
    [runner] = stack.layout.runners
    metadata = (("authorization", f"Bearer {stack.runner_token}"),)
    with stack.channel(runner) as channel:
        call = runner_pb2_grpc.RunnerStub(channel).Connect(iter(()), metadata=metadata, timeout=30)
        # In its Hello, and in the stream's metadata for orchestrators older than Hello.
        assert dict(call.initial_metadata())["prism-slots"] == "3"
        [hello] = list(call)
    assert (hello.hello.runner, hello.hello.slots) == (runner, 3)
    assert "metric_batches" in hello.hello.capabilities


def test_metrics_arrive_on_the_stream_before_the_trial_finishes(
    runner_stack: RunningStack,
) -> None:
    script = (
        "import time\n"
        "for step in range(3):\n"
        '    print(\'PRISM_METRIC {"step": %d, "loss": %s}\' % (step, 1 / (step + 1)))\n'
        "print('plain output')\n"
        "print('{\"loss\": 0.33}')\n"
    )
    events = connect(runner_stack, [run("m/0", script)])

    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[:2] == ["accepted", "started"] and kinds[-1] == "finished"
    assert set(kinds[2:-1]) == {"metric"}
    metrics = [e.metric for e in events if e.HasField("metric")]
    assert {m.trial_id for m in metrics} == {"m/0"}
    assert [json.loads(v) for m in metrics for v in m.values_json] == [
        {"step": 0, "loss": 1.0},
        {"step": 1, "loss": 0.5},
        {"step": 2, "loss": 1 / 3},
    ]
    result = finished(events)["m/0"]
    assert result.outcome == trial_pb2.OUTCOME_SUCCEEDED
    assert json.loads(result.result_json) == {"loss": 0.33}


def test_a_flood_of_metrics_arrives_whole_and_in_order(runner_stack: RunningStack) -> None:
    lines = 5000
    script = (
        "import sys\n"
        f"for step in range({lines}):\n"
        "    sys.stdout.write('PRISM_METRIC {\"step\": %d}\\n' % step)\n"
        "sys.stdout.flush()\n"
    )
    events = connect(runner_stack, [run("flood/0", script)])

    metrics = [e.metric for e in events if e.HasField("metric")]
    values = [json.loads(v) for metric in metrics for v in metric.values_json]
    assert values == [{"step": step} for step in range(lines)]
    # Batched: whatever arrived since the runner's loop last woke is one message.
    assert len(metrics) < lines / 10
    assert events[-1].HasField("finished")
    assert finished(events)["flood/0"].outcome == trial_pb2.OUTCOME_SUCCEEDED


def test_a_resent_trial_replays_its_result_and_artifacts(runner_stack: RunningStack) -> None:
    script = """
import json, os, random
print('PRISM_METRIC {"step": 1}')
os.makedirs("/workspace/output/nested")
open("/workspace/output/nested/model.bin", "wb").write(os.urandom(1000))
open("/workspace/output/random.txt", "w").write(str(random.random()))
os.symlink("/etc/hostname", "/workspace/output/link")
json.dump({"value": random.random()}, open("/workspace/result.json", "w"))
"""
    first = connect(runner_stack, [run("art/0", script)])
    result = finished(first)["art/0"]
    assert result.outcome == trial_pb2.OUTCOME_SUCCEEDED, result
    assert set(json.loads(result.result_json)) == {"value"}
    assert [(a.name, len(a.data)) for a in result.artifacts] == [
        ("nested/model.bin", 1000),
        ("random.txt", len(result.artifacts[1].data)),
    ]
    assert list(result.artifacts_skipped) == ["link: a symlink, not a regular file"]
    assert 0 < result.peak_memory_bytes < 256 * MiB

    again = connect(runner_stack, [run("art/0", script)])
    # Replayed from the record: the same result, artifacts included; metrics are not.
    assert [e.WhichOneof("event") for e in again] == ["accepted", "finished"]
    assert again[0].accepted.previous == PREVIOUS.PREVIOUS_FINISHED
    assert finished(again)["art/0"] == result
    assert runner_stack.executions() == {"art/0": 1}


def test_a_result_larger_than_grpcs_default_message_reaches_the_orchestrator(
    runner_stack: RunningStack,
) -> None:
    # 4 MiB of artifacts and 1 MiB of output: over gRPC's 4 MiB default.
    script = f"""
import os
for name in ("a", "b"):
    open(f"/workspace/output/{{name}}.bin", "wb").write(os.urandom({MAX_ARTIFACT_BYTES // 2}))
print("x" * ({MiB} - 100))
"""
    events = connect(runner_stack, [run("big/0", script)])
    result = finished(events)["big/0"]
    assert result.outcome == trial_pb2.OUTCOME_SUCCEEDED, result.reason
    assert result.ByteSize() > 4 * MiB + MiB // 2
    assert sum(len(a.data) for a in result.artifacts) == MAX_ARTIFACT_BYTES


@pytest.fixture
def wheels(tmp_path: Path) -> tuple[Path, str]:
    """A folder with one wheel whose module holds a value unique to this test."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    value = secrets.token_hex(8)
    write_wheel(
        folder, "prism-runner-probe", "1.0", {"prism_runner_probe.py": f"VALUE = {value!r}\n"}
    )
    return folder, value


def test_requirements_run_in_a_derived_image(
    make_stack: StackFactory, sandbox_image: str, wheels: tuple[Path, str]
) -> None:
    folder, value = wheels
    env = {"PRISM_PIP_FIND_LINKS": str(folder), "PRISM_PIP_NO_INDEX": "1"}
    stack = make_stack(gateway=False, runners=1, env=env)
    script = "import prism_runner_probe\nprint(prism_runner_probe.VALUE)"
    commands = [run(f"req/{i}", script, requirements=["prism-runner-probe"]) for i in range(2)]
    commands.append(run("req/bad", script, requirements=["prism-no-such-package"]))
    try:
        events = connect(stack, commands, timeout=300)
    finally:
        with closing(docker.from_env()) as client:
            # The same call finds the image the runner made (or makes it): remove it.
            tag = ensure_requirements_image(
                client, ["prism-runner-probe"], base=sandbox_image, find_links=folder, no_index=True
            )
            client.images.remove(tag, force=True)

    results = finished(events)
    for i in range(2):
        assert results[f"req/{i}"].outcome == trial_pb2.OUTCOME_SUCCEEDED, results[f"req/{i}"]
        assert results[f"req/{i}"].stdout == f"{value}\n"
    bad = results["req/bad"]
    assert bad.outcome == trial_pb2.OUTCOME_FAILED
    assert "No matching distribution found for prism-no-such-package" in bad.reason
    # It never started: no container for a trial whose image could not be made.
    assert stack.executions() == {"req/0": 1, "req/1": 1}


def test_pip_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISM_PIP_FIND_LINKS", "/srv/wheels")
    monkeypatch.setenv("PRISM_PIP_INDEX_URL", "http://127.0.0.1:3141/simple")
    monkeypatch.setenv("PRISM_PIP_NO_INDEX", "yes")
    settings = Settings.from_env()
    assert settings.pip_find_links == Path("/srv/wheels")
    assert settings.pip_index_url == "http://127.0.0.1:3141/simple"
    assert settings.pip_no_index is True
    monkeypatch.setenv("PRISM_PIP_NO_INDEX", "maybe")
    with pytest.raises(ValueError, match="PRISM_PIP_NO_INDEX"):
        Settings.from_env()
    for name in ("PRISM_PIP_FIND_LINKS", "PRISM_PIP_INDEX_URL", "PRISM_PIP_NO_INDEX"):
        monkeypatch.delenv(name)
    settings = Settings.from_env()
    assert (settings.pip_find_links, settings.pip_index_url, settings.pip_no_index) == (
        None,
        None,
        False,
    )


def test_the_pip_ca_bundle_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("bundle")
    monkeypatch.delenv("PRISM_PIP_CERT", raising=False)
    monkeypatch.setenv("PIP_CERT", str(bundle))
    assert Settings.from_env().pip_cert == bundle  # the host's pip bundle carries over
    monkeypatch.setenv("PIP_CERT", str(tmp_path / "gone.pem"))
    assert Settings.from_env().pip_cert is None  # pip's own setting: not ours to refuse
    monkeypatch.setenv("PRISM_PIP_CERT", str(tmp_path / "gone.pem"))
    with pytest.raises(ValueError, match="PRISM_PIP_CERT"):
        Settings.from_env()


@pytest.mark.parametrize("command", ["run", "cancel"])
def test_a_stream_cut_while_a_trial_is_admitted_leaves_it_answerable(
    runner_stack: RunningStack, command: str
) -> None:
    """The orchestrator may vanish (a crash, a silent stream it closes) at any
    instant after sending a trial, even while the runner is recording it. A
    trial cut off there must still be answered when it is sent again, never
    turned away for good (which would leave its sweep running forever)."""
    runner = next(iter(runner_stack.layout.runners))
    metadata = (("authorization", f"Bearer {runner_stack.runner_token}"),)
    ids = [f"cut/{i}" for i in range(40)]
    with runner_stack.channel(runner) as channel:
        stub = runner_pb2_grpc.RunnerStub(channel)
        for i, trial_id in enumerate(ids):
            held = threading.Event()

            def commands(
                trial_id: str = trial_id, held: threading.Event = held
            ) -> Iterator[runner_pb2.RunnerCommand]:
                if command == "run":
                    yield run(trial_id, "print('{}')")
                else:
                    yield runner_pb2.RunnerCommand(
                        cancel_trial=runner_pb2.CancelTrial(trial_id=trial_id)
                    )
                held.wait(30)  # the stream stays open until cut

            call = stub.Connect(commands(), metadata=metadata, timeout=30)
            # Cut at spread instants around the runner's write of the trial.
            time.sleep((i % 10) * 0.002)
            call.cancel()
            held.set()
    events = connect(runner_stack, [run(trial_id, "print('{}')") for trial_id in ids])
    results = finished(events)
    assert set(results) == set(ids)
    expected = trial_pb2.OUTCOME_SUCCEEDED if command == "run" else trial_pb2.OUTCOME_CANCELLED
    # A cancel that reached the runner stands; one cut before it did lets the trial run.
    allowed = {trial_pb2.OUTCOME_SUCCEEDED, expected}
    assert {r.outcome for r in results.values()} <= allowed, results
    assert all(n == 1 for n in runner_stack.executions().values())


def test_a_cut_while_the_runner_writes_a_trial_down_still_runs_it(
    tmp_path: Path, sandbox_image: str
) -> None:
    """The same cut, made certain: the trial's write is held inside the
    database (another connection holds its write lock) while the stream that
    sent it is cut. Once the write goes through, the trial runs, and sending it
    again re-attaches to it instead of being turned away."""
    path = tmp_path / "runner.db"
    db = DbThread(
        runner_store.db, path, runner_store.MODELS, schema_version=runner_store.SCHEMA_VERSION
    )
    blocker = sqlite3.connect(path, isolation_level=None)
    command = run("held/0", "print('{}')")

    async def cut_then_send_again() -> list[runner_pb2.RunnerEvent]:
        with closing(docker.from_env()) as client:
            sandbox = Sandbox(client, image=sandbox_image, owner=f"cut-{secrets.token_hex(4)}")
            executor = TrialExecutor(db, sandbox, None, slots=1)  # type: ignore[arg-type]
            blocker.execute("BEGIN IMMEDIATE")
            first = asyncio.create_task(executor.submit(command.run_trial, asyncio.Queue()))
            await asyncio.sleep(1)  # the write now waits on the lock, in the database thread
            first.cancel()  # the stream is cut
            blocker.execute("COMMIT")  # the write goes through
            again: asyncio.Queue[runner_pb2.RunnerEvent] = asyncio.Queue()
            await executor.submit(command.run_trial, again)
            events = [await asyncio.wait_for(again.get(), 60)]
            while not events[-1].HasField("finished"):
                events.append(await asyncio.wait_for(again.get(), 60))
            return events

    try:
        events = asyncio.run(cut_then_send_again())
    finally:
        blocker.close()
        db.close()
    assert events[0].accepted.previous == PREVIOUS.PREVIOUS_RUNNING
    result = finished(events)["held/0"]
    assert result.outcome == trial_pb2.OUTCOME_SUCCEEDED, result.reason
    with closing(sqlite3.connect(path)) as check:
        assert check.execute("SELECT COUNT(*) FROM execution").fetchall() == [(1,)]


def test_a_trial_recorded_but_not_executing_is_answered_not_refused(tmp_path: Path) -> None:
    """Should a trial ever be recorded as queued here with nothing executing it
    (a bug, a failed write), sending it again gets an answer, sandbox_error,
    which the orchestrator may retry; a refusal would end every stream that
    carries it and hold its sweep forever."""
    db = DbThread(
        runner_store.db,
        tmp_path / "runner.db",
        runner_store.MODELS,
        schema_version=runner_store.SCHEMA_VERSION,
    )

    async def send_again() -> list[runner_pb2.RunnerEvent]:
        await db(runner_store.admit, "stray/0", "{}")
        executor = TrialExecutor(db, None, None, slots=1)  # type: ignore[arg-type]
        outbox: asyncio.Queue[runner_pb2.RunnerEvent] = asyncio.Queue()
        await executor.submit(run("stray/0", "print(1)").run_trial, outbox)
        return [outbox.get_nowait() for _ in range(outbox.qsize())]

    try:
        events = asyncio.run(send_again())
    finally:
        db.close()
    assert [e.WhichOneof("event") for e in events] == ["accepted", "finished"]
    result = finished(events)["stray/0"]
    assert result.outcome == trial_pb2.OUTCOME_SANDBOX_ERROR
    assert "lost track" in result.reason


def test_a_second_runner_process_on_a_taken_port_stops_before_touching_anything(
    runner_stack: RunningStack,
) -> None:
    runner = next(iter(runner_stack.layout.runners))
    script = "import time\ntime.sleep(120)"
    labels = {"label": f"{OWNER_LABEL}={runner}", "name": container_name(runner, "held/0")}
    with running(runner_stack, runner, run("held/0", script)) as client:
        # The same runner started again by mistake: same name, data and port.
        second = subprocess.run(
            runner_stack.layout.command(runner),
            env=runner_stack.layout.service_env(runner),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2
        assert f"cannot listen on {runner_stack.layout.address(runner)}" in second.stdout
        # It removed no container of the first and recorded nothing.
        assert client.containers.list(filters=labels)
    # The first still holds the trial, running: stopping it is its answer.
    stop = runner_pb2.RunnerCommand(cancel_trial=runner_pb2.CancelTrial(trial_id="held/0"))
    events = connect(runner_stack, [stop])
    assert events[0].accepted.previous == PREVIOUS.PREVIOUS_RUNNING
    assert finished(events)["held/0"].outcome == trial_pb2.OUTCOME_CANCELLED
    assert runner_stack.executions() == {"held/0": 1}
