"""The sandbox against the real Docker engine: what a trial can and cannot do.

Every container made here carries an owner label unique to this module's run; the
finalizer removes exactly those, and each test checks that none was left behind.
Isolation is shown from inside the sandbox (interfaces, a failed name lookup),
never by aiming a connection at an outside address.
"""

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path

import docker
import docker.errors
import pytest

from sandbox import OUTCOMES, Execution, Limits, Sandbox
from sandbox.container import OWNER_LABEL, TRIAL_LABEL
from sandbox.engine import ensure_engine, stop_engine
from sandbox.images import ensure_sandbox_image

MiB = 2**20
SMALL = Limits(wall_seconds=20, memory_bytes=64 * MiB, workspace_bytes=8 * MiB, output_bytes=MiB)


@pytest.fixture(scope="module")
def docker_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[docker.DockerClient]:
    run_dir = tmp_path_factory.mktemp("engine")
    started = ensure_engine(run_dir)
    with closing(docker.from_env(max_pool_size=32)) as client:
        yield client
    if started is not None:
        stop_engine(run_dir)


@pytest.fixture(scope="module")
def owner(docker_client: docker.DockerClient) -> Iterator[str]:
    owner = f"test-{secrets.token_hex(4)}"
    yield owner
    for container in ours(docker_client, owner):
        docker_client.api.remove_container(container["Id"], force=True)


@pytest.fixture(scope="module")
def box(docker_client: docker.DockerClient, owner: str) -> Sandbox:
    return Sandbox(docker_client, image=ensure_sandbox_image(docker_client), owner=owner)


@pytest.fixture(autouse=True)
def nothing_left_behind(docker_client: docker.DockerClient, owner: str) -> Iterator[None]:
    yield
    assert ours(docker_client, owner) == []


def ours(client: docker.DockerClient, owner: str) -> list[dict[str, object]]:
    return client.api.containers(all=True, filters={"label": f"{OWNER_LABEL}={owner}"})  # type: ignore[no-any-return]


def run(box: Sandbox, script: str, limits: Limits = SMALL, params: str = "{}") -> Execution:
    execution = box.run(f"t-{secrets.token_hex(4)}", script, params, limits)
    assert execution.outcome in OUTCOMES
    return execution


def test_script_output_and_params_reach_the_trial(box: Sandbox) -> None:
    script = """
import json, os
print(json.dumps({
    "env": json.loads(os.environ["PRISM_PARAMS"]),
    "file": json.load(open("/workspace/params.json")),
    "cwd": os.getcwd(),
    "script_in_env": "PRISM_SCRIPT" in os.environ,
    "output_dir": os.path.isdir("/workspace/output"),
}))
"""
    params = {"lr": 0.1, "name": "ünïcode"}
    execution = run(box, script, params=json.dumps(params))

    assert (execution.outcome, execution.exit_code) == ("succeeded", 0)
    assert json.loads(execution.stdout) == {
        "env": params,
        "file": params,
        "cwd": "/workspace",
        "script_in_env": False,
        "output_dir": True,
    }
    assert execution.stderr == ""
    assert not execution.output_truncated
    assert 0 < execution.duration_seconds < 10


def test_no_network_but_loopback(box: Sandbox) -> None:
    script = """
import os, socket
print(sorted(os.listdir("/sys/class/net")))
print(sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:]))
try:
    socket.getaddrinfo("example.com", 443)
    print("resolved")
except socket.gaierror:
    print("lookup failed")
"""
    execution = run(box, script)

    assert execution.outcome == "succeeded", execution
    assert execution.stdout.splitlines() == ["['lo']", "['lo']", "lookup failed"]


def test_read_only_root_unprivileged_user_no_capabilities(box: Sandbox) -> None:
    script = """
import json, os
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
writes = {}
for path in ("/etc/prism-probe", "/opt/prism/probe"):
    try:
        open(path, "w").close()
        writes[path] = "written"
    except OSError as error:
        writes[path] = error.errno
print(json.dumps({
    "root_read_only": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
    "ids": [os.getuid(), os.geteuid(), os.getgid()],
    "caps": [int(status[k], 16) for k in ("CapEff", "CapPrm", "CapBnd")],
    "no_new_privs": status["NoNewPrivs"].strip(),
    "writes": writes,
}))
"""
    execution = run(box, script)

    assert execution.outcome == "succeeded", execution
    seen = json.loads(execution.stdout)
    assert seen["root_read_only"] is True
    assert seen["ids"] == [65534, 65534, 65534]
    assert seen["caps"] == [0, 0, 0]
    assert seen["no_new_privs"] == "1"
    assert set(seen["writes"].values()) <= {30, 13}  # EROFS, EACCES: never "written"


def test_workspace_is_writable_and_capped(box: Sandbox) -> None:
    # Files of 1 MiB each, so the file size ulimit cannot be what stops the writes.
    script = """
import errno
written = 0
try:
    for i in range(32):
        with open(f"part{i}", "wb") as f:
            f.write(b"x" * 2**20)
        written += 1
except OSError as error:
    print(written, errno.errorcode[error.errno])
"""
    execution = run(box, script)  # an 8 MiB workspace

    assert execution.outcome == "succeeded", execution
    written, error = execution.stdout.split()
    assert 4 <= int(written) < 8
    assert error == "ENOSPC"


@pytest.mark.parametrize(
    "script",
    ["import time\nprint('started')\ntime.sleep(1000)", "print('started')\nwhile True: pass"],
    ids=["sleep", "busy"],
)
def test_wall_clock_limit_kills(box: Sandbox, script: str) -> None:
    began = time.monotonic()
    execution = run(box, script, Limits(wall_seconds=2))

    assert (execution.outcome, execution.exit_code) == ("timed_out", -1)
    assert time.monotonic() - began < 10
    assert execution.stdout == "started\n"  # output printed before the kill is kept


def test_output_flood_is_cut_and_killed(box: Sandbox) -> None:
    cap = 64 * 1024
    script = "import sys\nwhile True:\n    print('x' * 999)\n    print('e' * 99, file=sys.stderr)"
    began = time.monotonic()
    execution = run(box, script, Limits(wall_seconds=20, output_bytes=cap))

    assert (execution.outcome, execution.exit_code) == ("output_limit", -1)
    assert execution.output_truncated
    kept = len(execution.stdout.encode()) + len(execution.stderr.encode())
    assert cap - 1000 < kept <= cap
    assert time.monotonic() - began < 10


def test_memory_bomb_is_oom_killed(box: Sandbox) -> None:
    script = "hoard = []\nwhile True:\n    hoard.append(b'x' * (8 * 2**20))"
    execution = run(box, script, Limits(wall_seconds=20, memory_bytes=64 * 2**20))

    assert (execution.outcome, execution.exit_code) == ("oom_killed", -1)


def test_process_limit_holds(box: Sandbox) -> None:
    script = """
import os, time
children = []
try:
    for _ in range(100):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
except OSError as error:
    print(len(children), error.errno)
"""
    execution = run(box, script, Limits(wall_seconds=20, processes=16))

    assert execution.outcome == "succeeded", execution
    forked, errno = map(int, execution.stdout.split())
    assert forked < 16
    assert errno == 11  # EAGAIN


def test_fork_bomb_is_contained(box: Sandbox) -> None:
    script = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    )
    began = time.monotonic()
    execution = run(box, script, Limits(wall_seconds=3, processes=32))

    assert execution.outcome == "timed_out"
    assert time.monotonic() - began < 15


@pytest.mark.parametrize(
    ("script", "exit_code", "last_line"),
    [
        ("def f():\n    raise ValueError('boom')\nf()", 1, "ValueError: boom"),
        ("import sys\nsys.exit(3)", 3, None),
    ],
    ids=["exception", "exit"],
)
def test_failure_reports_code_and_traceback(
    box: Sandbox, script: str, exit_code: int, last_line: str | None
) -> None:
    execution = run(box, script)

    assert (execution.outcome, execution.exit_code) == ("failed", exit_code)
    assert execution.reason.startswith(f"exited with code {exit_code}")
    if last_line is not None:
        assert "Traceback (most recent call last)" in execution.stderr
        assert 'File "/workspace/trial.py", line 2, in f' in execution.stderr
        assert execution.reason.endswith(last_line)


def test_cancel_kills_a_running_trial(
    box: Sandbox, docker_client: docker.DockerClient, owner: str
) -> None:
    trial_id = f"cancel-{secrets.token_hex(4)}"
    results: list[Execution] = []
    worker = threading.Thread(
        target=lambda: results.append(box.run(trial_id, "import time\ntime.sleep(60)", "{}", SMALL))
    )
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while not docker_client.api.containers(
            filters={"label": f"{TRIAL_LABEL}={trial_id}", "status": "running"}
        ):
            assert time.monotonic() < deadline, "the trial's container never ran"
            time.sleep(0.05)
        cancelled_at = time.monotonic()
        assert box.cancel(trial_id)
    finally:
        worker.join(30)

    assert [(r.outcome, r.exit_code) for r in results] == [("cancelled", -1)]
    assert time.monotonic() - cancelled_at < 5
    assert not box.cancel(trial_id)  # no longer running


def test_concurrent_runs_keep_their_own_output(box: Sandbox) -> None:
    results: dict[int, Execution] = {}

    def one(i: int) -> None:
        results[i] = box.run(f"many-{secrets.token_hex(4)}-{i}", f"print({i})", "{}", SMALL)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)

    assert {i: (e.outcome, e.stdout) for i, e in results.items()} == {
        i: ("succeeded", f"{i}\n") for i in range(4)
    }


def test_remove_orphans_spares_kept_and_foreign_containers(
    box: Sandbox, docker_client: docker.DockerClient, owner: str
) -> None:
    api = docker_client.api
    image = ensure_sandbox_image(docker_client)
    labels = [
        {OWNER_LABEL: owner, TRIAL_LABEL: "orphan"},
        {OWNER_LABEL: owner, TRIAL_LABEL: "kept"},
        {OWNER_LABEL: f"other-{secrets.token_hex(4)}", TRIAL_LABEL: "orphan"},
    ]
    created = [api.create_container(image, labels=label)["Id"] for label in labels]
    try:
        assert box.remove_orphans(keep={"kept"}) == ["orphan"]
        remaining = {c["Id"] for c in api.containers(all=True, filters={"id": created})}
        assert remaining == set(created[1:])
    finally:
        for container_id in created:
            with suppress(docker.errors.NotFound):
                api.remove_container(container_id, force=True)


def test_too_large_script_is_refused_without_a_container(box: Sandbox) -> None:
    execution = run(box, "#" * (200 * 1024))

    assert execution.outcome == "sandbox_error"
    assert "PRISM_SCRIPT" in execution.reason


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="wall_seconds"):
        Limits(wall_seconds=0)


def test_engine_module_leaves_a_running_engine_alone(tmp_path: Path) -> None:
    assert ensure_engine(tmp_path) is None
    assert not (tmp_path / "dockerd.pid").exists()
    assert not stop_engine(tmp_path)


def test_stop_engine_signals_only_a_dockerd(tmp_path: Path) -> None:
    (tmp_path / "dockerd.pid").write_text(f"{os.getpid()}\n")  # a pid that is not dockerd

    assert not stop_engine(tmp_path)
    assert not (tmp_path / "dockerd.pid").exists()


def test_engine_refusal_is_a_sandbox_error(docker_client: docker.DockerClient, owner: str) -> None:
    # (An unreachable engine is not shown here: the SDK leaks the socket of a failed
    # connect, which this module's warnings-as-errors would report.)
    missing_image = Sandbox(docker_client, image="prism-no-such-image:never", owner=owner)
    execution = missing_image.run("x", "pass", "{}", SMALL)

    assert execution.outcome == "sandbox_error"
    assert "prism-no-such-image" in execution.reason
