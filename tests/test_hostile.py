"""Hostile trials against a real runner: each is contained and ends with the right
outcome, while an ordinary trial sent with them succeeds and the services stay healthy.

All of them go down one runner stream at once, with small limits, so the batch takes
seconds. The stack is this module's own (the functions behind the `make_stack`
fixture, kept for the whole module so every case is its own test). Network isolation
is shown from inside the sandbox only (interfaces, routes, a failed name lookup):
nothing here connects anywhere.
"""

from __future__ import annotations

import errno
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from prism.healthcheck import serving
from prism.stack import ORCHESTRATOR
from prism.v1 import runner_pb2, trial_pb2
from sandbox.container import OWNER_LABEL
from tests.conftest import RunningStack, start_stack, stop_stack, wait_until
from tests.test_runner import connect, finished

MiB = 2**20
# Unique to this run: found in the command line of the process a trial leaves behind.
MARKER = f"prism-hostile-leftover-{secrets.token_hex(4)}"


def limits(**given: float) -> trial_pb2.TrialLimits:
    values = {
        "wall_seconds": 10,
        "memory_bytes": 64 * MiB,
        "cpus": 0.5,
        "processes": 64,
        "output_bytes": 256 * 1024,
        "workspace_bytes": 8 * MiB,
    }
    values.update(given)
    return trial_pb2.TrialLimits(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Case:
    script: str
    limits: trial_pb2.TrialLimits
    outcomes: frozenset[str]


ORDINARY = """
import json, math, os
n = json.loads(os.environ["PRISM_PARAMS"])["n"]
print(json.dumps({"total": sum(range(n)), "root": math.isqrt(n)}))
"""

FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""

MEMORY_BOMB = """
hoard = []
while True:
    hoard.append(b"x" * (4 * 2**20))
"""

# The hoarder is a child: its death is not the script's exit status.
MEMORY_BOMB_IN_CHILD = """
import subprocess, sys
hoard = "hoard = []\\nwhile True:\\n    hoard.append(b'x' * (4 * 2**20))"
code = subprocess.run([sys.executable, "-c", hoard]).returncode
print("child exited with", code, flush=True)
sys.exit(1)
"""

CPU_LOOP = """
while True:
    pass
"""

SLEEP_FOREVER = """
import signal, time
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
print("sleeping", flush=True)
time.sleep(10**6)
"""

DISK_FILL = """
import errno, json
filled = {}
for place in ("/workspace", "/tmp", "/dev/shm"):
    try:
        for i in range(1000):
            with open(f"{place}/fill{i}", "wb") as f:
                f.write(b"x" * 2**20)
        filled[place] = "no limit"
    except OSError as error:
        filled[place] = errno.errorcode[error.errno]
print(json.dumps(filled))
raise SystemExit("disk full: " + json.dumps(filled))
"""

OUTPUT_FLOOD = """
import sys
while True:
    print("x" * 999)
    print("e" * 99, file=sys.stderr)
"""

OPEN_FILES = """
import errno
opened = []
try:
    while True:
        opened.append(open("/dev/null"))
except OSError as error:
    count, code = len(opened), errno.errorcode[error.errno]
for f in opened:
    f.close()
raise SystemExit(f"{code} after {count} open files")
"""

PRIVILEGE_ESCALATION = """
import ctypes, ctypes.util, errno, json, os, subprocess

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def attempt(action):
    try:
        return f"done: {action()!r}"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))


def syscall(name, *args):
    def call():
        if getattr(libc, name)(*args) != 0:
            raise OSError(ctypes.get_errno(), name)
    return call


def command(*argv):
    def run():  # a missing program raises ENOENT
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=5)
        if done.returncode != 0:
            raise OSError(errno.EPERM, "refused")
        return done.stdout.decode()
    return run


def write(path, data):
    return lambda: open(path, "w").write(data)


setuid_binaries = sorted(
    os.path.join(folder, name)
    for folder in ("/bin", "/sbin", "/usr/bin", "/usr/sbin")
    if os.path.isdir(folder)
    for name in os.listdir(folder)
    if os.path.isfile(os.path.join(folder, name))
    and os.stat(os.path.join(folder, name)).st_mode & 0o4000
)
os.makedirs("/workspace/mnt", exist_ok=True)
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print(json.dumps({
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
    "caps": {key: int(status[key], 16) for key in status if key.startswith("Cap")},
    "no_new_privs": status["NoNewPrivs"].strip(),
    "setuid_binaries": len(setuid_binaries),
    "attempts": {
        "setuid(0)": attempt(lambda: os.setuid(0)),
        "setgid(0)": attempt(lambda: os.setgid(0)),
        "su": attempt(command("su", "-c", "id -u", "root")),
        "sudo": attempt(command("sudo", "id", "-u")),
        "mount command": attempt(command("mount", "-t", "tmpfs", "none", "/workspace/mnt")),
        "mount(2)": attempt(syscall("mount", b"none", b"/workspace/mnt", b"tmpfs", 0, None)),
        "unshare user namespace": attempt(syscall("unshare", 0x10000000)),
        "unshare mount namespace": attempt(syscall("unshare", 0x00020000)),
        "chroot": attempt(syscall("chroot", b"/workspace")),
        "mknod disk": attempt(lambda: os.mknod("/workspace/sda", 0o060600, os.makedev(8, 0))),
        "/proc/sys/kernel/hostname": attempt(write("/proc/sys/kernel/hostname", "owned")),
        "/proc/sys/kernel/core_pattern": attempt(write("/proc/sys/kernel/core_pattern", "|/x")),
        "/proc/sys/vm/drop_caches": attempt(write("/proc/sys/vm/drop_caches", "3")),
    },
}))
os.setuid(0)
"""

WRITES_OUTSIDE = """
import errno, json
places = [
    "/etc/prism-escape", "/prism-escape", "/var/tmp/prism-escape", "/home/prism-escape",
    "/usr/lib/python3/dist-packages/prism.pth", "/opt/prism/bootstrap.py",
    "/root/prism-escape", "/sys/prism-escape",
]
results = {}
for path in places:
    try:
        with open(path, "a") as f:
            f.write("x")
        results[path] = "written"
    except OSError as error:
        results[path] = errno.errorcode[error.errno]
print(json.dumps(results))
open("/etc/prism-escape", "w")
"""

BACKGROUND = f"""
import subprocess, sys
stay = "import time\\nwhile True:\\n    time.sleep(0.2)\\n    print('still here', flush=True)"
subprocess.Popen([sys.executable, "-c", stay, {MARKER!r}], start_new_session=True)
print("leaving a process behind", flush=True)
"""

# PID 1 of the container's namespace ignores SIGKILL from inside it; everything
# else the trial may do to it must end only this trial.
KILL_INIT = """
import os, signal, time
os.kill(1, signal.SIGKILL)
time.sleep(0.5)
print("init survived SIGKILL", flush=True)
try:
    os.kill(-1, signal.SIGKILL)  # every process but init and the caller
except ProcessLookupError:
    pass  # there was none
print("kill -9 -1 spared the caller", flush=True)
os.kill(1, signal.SIGTERM)
time.sleep(30)
print("not reached")
"""

KILL_EVERYTHING = """
import subprocess, sys, time
killer = "import os, signal, time\\ntime.sleep(0.5)\\nos.kill(-1, signal.SIGKILL)"
subprocess.Popen([sys.executable, "-c", killer])
print("waiting", flush=True)
time.sleep(30)
print("not reached")
"""

# The init runs as the trial's own user, but it is not dumpable: tracing it is
# refused (EPERM), so the trial cannot stop it and ends by itself.
TRACE_INIT = """
import ctypes, ctypes.util
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
PTRACE_ATTACH = 16
print("attach:", libc.ptrace(PTRACE_ATTACH, 1, None, None), ctypes.get_errno(), flush=True)
"""

HOST_SECRETS = """
import errno, json, os
def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError as error:
        return errno.errorcode[error.errno]
print(json.dumps({
    "sockets": [
        path
        for path in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock")
        if os.path.exists(path)
    ],
    "shadow": read("/etc/shadow"),
    "environ": dict(os.environ),
    "init_environ": read("/proc/1/environ"),
    "mounts": read("/proc/self/mountinfo"),
}))
"""

NETWORK = """
import json, os, socket
try:
    socket.getaddrinfo("example.com", 443)
    lookup = "resolved"
except socket.gaierror:
    lookup = "failed"
print(json.dumps({
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "routes": open("/proc/net/route").read().splitlines()[1:],
    "lookup": lookup,
}))
"""

CASES = {
    "ordinary": Case(ORDINARY, limits(wall_seconds=60), frozenset({"succeeded"})),
    "fork_bomb": Case(
        FORK_BOMB,
        limits(wall_seconds=5, processes=32, memory_bytes=256 * MiB),
        frozenset({"timed_out", "failed"}),
    ),
    "memory_bomb": Case(MEMORY_BOMB, limits(memory_bytes=32 * MiB), frozenset({"oom_killed"})),
    "memory_bomb_in_child": Case(
        MEMORY_BOMB_IN_CHILD, limits(memory_bytes=32 * MiB), frozenset({"oom_killed"})
    ),
    "cpu_loop": Case(CPU_LOOP, limits(wall_seconds=3), frozenset({"timed_out"})),
    "sleep_forever": Case(SLEEP_FOREVER, limits(wall_seconds=3), frozenset({"timed_out"})),
    "disk_fill": Case(DISK_FILL, limits(), frozenset({"failed"})),
    "output_flood": Case(OUTPUT_FLOOD, limits(output_bytes=64 * 1024), frozenset({"output_limit"})),
    "open_files": Case(OPEN_FILES, limits(), frozenset({"failed"})),
    "privilege_escalation": Case(PRIVILEGE_ESCALATION, limits(), frozenset({"failed"})),
    "writes_outside": Case(WRITES_OUTSIDE, limits(), frozenset({"failed"})),
    # Long wall limits: ending well before them shows the trial ended by itself.
    "background_process": Case(BACKGROUND, limits(wall_seconds=40), frozenset({"succeeded"})),
    "kill_init": Case(KILL_INIT, limits(wall_seconds=40), frozenset({"failed"})),
    "kill_everything": Case(KILL_EVERYTHING, limits(wall_seconds=40), frozenset({"failed"})),
    "trace_init": Case(TRACE_INIT, limits(wall_seconds=10), frozenset({"succeeded"})),
    "host_secrets": Case(HOST_SECRETS, limits(), frozenset({"succeeded"})),
    "network": Case(NETWORK, limits(), frozenset({"succeeded"})),
}


def outcome_name(result: trial_pb2.TrialResult) -> str:
    return trial_pb2.Outcome.Name(result.outcome).removeprefix("OUTCOME_").lower()


@dataclass
class Batch:
    stack: RunningStack
    results: dict[str, trial_pb2.TrialResult]
    seconds: float

    @property
    def runner(self) -> str:
        return next(iter(self.stack.layout.runners))


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[Batch]:
    # Slots for every case at once, so a slow case cannot delay the others.
    stack = start_stack(
        tmp_path_factory.mktemp("hostile"),
        sandbox_image,
        runners=1,
        gateway=False,
        env={"PRISM_RUNNER_SLOTS": str(len(CASES))},
    )
    try:
        commands = [
            runner_pb2.RunnerCommand(
                run_trial=runner_pb2.RunTrial(
                    trial_id=f"hostile/{name}",
                    script=case.script,
                    params_json=json.dumps({"n": 1000}),
                    limits=case.limits,
                )
            )
            for name, case in CASES.items()
        ]
        began = time.monotonic()
        events = connect(stack, commands, timeout=180)
        seconds = time.monotonic() - began
        results = {
            trial_id.removeprefix("hostile/"): result
            for trial_id, result in finished(events).items()
        }
        for name, result in results.items():
            print(
                f"{name:22} {outcome_name(result):13} {result.duration_seconds:5.2f} s  "
                f"{result.reason[:90]}"
            )
        yield Batch(stack, results, seconds)
    finally:
        stop_stack(stack)


def test_the_whole_batch_ends_quickly(batch: Batch) -> None:
    assert set(batch.results) == set(CASES)
    assert batch.seconds < 60


@pytest.mark.parametrize("name", list(CASES))
def test_each_trial_ends_with_its_outcome(batch: Batch, name: str) -> None:
    result = batch.results[name]
    assert outcome_name(result) in CASES[name].outcomes, result
    assert result.reason


def test_the_ordinary_trial_succeeds_beside_them(batch: Batch) -> None:
    result = batch.results["ordinary"]
    assert (outcome_name(result), result.exit_code) == ("succeeded", 0)
    assert json.loads(result.stdout) == {"total": 499500, "root": 31}


def test_memory_bombs_are_reported_as_out_of_memory(batch: Batch) -> None:
    for name in ("memory_bomb", "memory_bomb_in_child"):
        assert "out of memory" in batch.results[name].reason, name
    assert "child exited with -9" in batch.results["memory_bomb_in_child"].stdout


def test_disk_fill_stops_at_every_writable_place(batch: Batch) -> None:
    result = batch.results["disk_fill"]
    assert json.loads(result.stdout.splitlines()[0]) == {
        "/workspace": "ENOSPC",
        "/tmp": "ENOSPC",
        "/dev/shm": "ENOSPC",
    }
    assert result.exit_code == 1


def test_output_flood_keeps_only_the_cap(batch: Batch) -> None:
    result = batch.results["output_flood"]
    assert result.output_truncated
    kept = len(result.stdout.encode()) + len(result.stderr.encode())
    assert 64 * 1024 - 1000 < kept <= 64 * 1024


def test_too_many_open_files_fail_with_emfile(batch: Batch) -> None:
    assert "EMFILE after" in batch.results["open_files"].reason


def test_privilege_escalation_is_denied(batch: Batch) -> None:
    result = batch.results["privilege_escalation"]
    report = json.loads(result.stdout)
    assert report["ids"] == [65534, 65534, 65534, 65534]
    assert set(report["caps"].values()) == {0}
    assert report["no_new_privs"] == "1"
    assert report["setuid_binaries"] > 0  # there are some to try: they gain nothing
    granted = {k: v for k, v in report["attempts"].items() if v.startswith("done")}
    assert granted == {}
    assert "PermissionError" in result.reason


def test_writes_outside_the_workspace_fail(batch: Batch) -> None:
    result = batch.results["writes_outside"]
    written = json.loads(result.stdout)
    # A read-only root: EROFS wherever permissions alone would have allowed it.
    assert written["/etc/prism-escape"] == written["/var/tmp/prism-escape"] == "EROFS"
    assert set(written.values()) <= {"EROFS", "EACCES"}
    assert f"[Errno {errno.EROFS}] Read-only file system" in result.reason


def test_a_background_process_does_not_outlive_its_trial(batch: Batch) -> None:
    result = batch.results["background_process"]
    assert result.stdout.startswith("leaving a process behind\n")
    assert result.duration_seconds < 20  # ended with the script, not at the wall limit
    leftovers = [
        path.parent.name
        for path in Path("/proc").glob("[0-9]*/cmdline")
        if MARKER.encode() in _read(path)
    ]
    assert leftovers == []


def test_killing_the_containers_init_ends_only_that_trial(batch: Batch) -> None:
    kill_init = batch.results["kill_init"]
    assert "init survived SIGKILL" in kill_init.stdout
    assert "not reached" not in kill_init.stdout
    kill_everything = batch.results["kill_everything"]
    assert "not reached" not in kill_everything.stdout
    assert max(kill_init.duration_seconds, kill_everything.duration_seconds) < 20


def test_tracing_init_is_refused(batch: Batch) -> None:
    assert batch.results["trace_init"].stdout == f"attach: -1 {errno.EPERM}\n"


def test_host_secrets_are_out_of_reach(batch: Batch) -> None:
    result = batch.results["host_secrets"]
    seen = json.loads(result.stdout)
    assert seen["sockets"] == []
    assert seen["shadow"] == "EACCES"
    assert not any(name.startswith("PRISM_") and "TOKEN" in name for name in seen["environ"])
    assert "PRISM_RUNNER_TOKEN" not in seen["init_environ"]
    for secret in (batch.stack.runner_token, batch.stack.token):
        assert secret not in result.stdout
        assert secret not in result.stderr
    # No host folder is mounted in: neither the runner's data nor the engine's socket.
    assert str(batch.stack.layout.data_dir) not in seen["mounts"]
    assert "docker.sock" not in seen["mounts"]


def test_the_network_is_only_loopback(batch: Batch) -> None:
    seen = json.loads(batch.results["network"].stdout)
    assert seen == {"interfaces": ["lo"], "routes": [], "lookup": "failed"}


def test_the_services_stay_healthy_and_run_the_next_trial(batch: Batch) -> None:
    stack = batch.stack
    assert serving(stack.layout.address(batch.runner))
    assert serving(stack.layout.address(ORCHESTRATOR))
    # No trial's container is left: what remains was prepared for the next trials and
    # never started.
    with closing(docker.from_env()) as client:
        ours = {"label": f"{OWNER_LABEL}={batch.runner}"}
        wait_until(
            lambda: (
                {c.status for c in client.containers.list(all=True, filters=ours)} <= {"created"}
            ),
            what="the trials' containers removed",
        )

    after = runner_pb2.RunnerCommand(
        run_trial=runner_pb2.RunTrial(
            trial_id="after/0", script="print('fine')", limits=limits(wall_seconds=30)
        )
    )
    result = finished(connect(stack, [after]))["after/0"]
    assert (outcome_name(result), result.stdout) == ("succeeded", "fine\n")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""
