"""Attacks on the channel between a trial and its sandbox's supervisor, end to end.

The bootstrap (the container's PID 1) reports what a trial left in a frame on stderr
keyed by a secret only it and the host know. A trial that could learn the key, or
make its own frame pass for the real one, or stop, trace or starve the bootstrap,
could name artifacts that break the orchestrator's store, forge peak memory, or turn
its outcome into sandbox_error (which is retried, on someone else's runner). So each
trial here tries, and must end with the outcome its script chose, its real artifact
kept, nothing forged, and a peak memory the host measured; its sweep must answer on
every route; and the runner's stream must never drop (`tests/hostile.py`).

Every attack is its own sweep, all created at once on one stack with one runner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hostile import (
    Attack,
    Batch,
    MiB,
    assert_readable,
    assert_survived,
    module_batch,
)

# A frame the way the bootstrap writes one, but with whatever key the trial has: it
# claims artifacts that escape the output folder (twice: once broke the store), a
# forged result and an impossible peak memory.
FORGE = r"""
import json, os, secrets, sys, time

REAL = b"mine"
with open("/workspace/output/real.txt", "wb") as f:
    f.write(REAL)
meta = {
    "setup_error": None,
    "result": '{"forged": true}',
    "result_error": None,
    "signal": 0,
    "peak_memory_bytes": 10**30,
    "oom_kills": 0,
    "artifacts": [["../../../etc/passwd", 5], ["../../../etc/passwd", 5], ["forged.txt", 6]],
    "artifacts_skipped": ["\x1b[2Jforged note"],
}
PAYLOAD = json.dumps(meta).encode() + b"\n" + b"owned" + b"owned" + b"forged"


def frame(key, length=None):
    size = len(PAYLOAD) if length is None else length
    return b"\x1ePRISM-REPORT " + key + b" %d\n" % size + PAYLOAD


def guess():
    return secrets.token_hex(16).encode()

"""

FORGED_FRAMES = (
    FORGE
    + r"""
# Keys anyone could guess, through every way of reaching the stderr pipe.
for key in (b"0" * 32, b"f" * 32, guess(), b"", b"PRISM_REPORT_KEY"):
    sys.stderr.buffer.write(frame(key))
    sys.stderr.flush()
os.write(2, frame(guess()))
for path in ("/dev/stderr", "/proc/self/fd/2"):
    with open(path, "wb", buffering=0) as f:
        f.write(frame(guess()))
# The mark split across writes, a byte at a time.
for byte in frame(guess())[:80]:
    os.write(2, bytes([byte]))
    time.sleep(0.001)
# A mark with no length; a length of 5 MB never delivered; garbage after a frame.
os.write(2, b"\x1ePRISM-REPORT " + guess() + b" \n")
os.write(2, b"\x1ePRISM-REPORT " + guess() + b" 5000000\n{")
os.write(2, b"\n" + frame(guess()) + b"garbage after the frame\x00\xff\n")
print(json.dumps({"frames": "written"}), flush=True)
# The last bytes are the start of a mark: held back until the real report shows.
os.write(2, b"\x1ePRISM-REPORT ")
sys.exit(json.loads(os.environ["PRISM_PARAMS"])["exit"])
"""
)

# Look for the key wherever a process of the trial can look, then forge a frame with
# every candidate found (any 32 hex digits in a readable /proc file of any process).
STEAL_THE_KEY = (
    FORGE
    + r"""
import ctypes, ctypes.util, errno, re

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read(2**20)
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))


def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))


HEX = re.compile(rb"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
candidates, named, pid1 = set(), False, {}
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
for pid in pids:
    for name in ("environ", "cmdline", "mem", "maps", "auxv", "stack", "io", "status",
                 f"task/{pid}/environ", "fdinfo/2"):
        got = read(f"/proc/{pid}/{name}")
        if isinstance(got, bytes):
            named = named or b"PRISM_REPORT_KEY" in got
            candidates.update(HEX.findall(got))
        elif pid == 1:
            pid1[name] = got
for name in ("fd", "root", "cwd", "task/1/fd"):
    pid1[name + "/"] = listing(f"/proc/1/{name}")
for path in ("/proc/1/fd/2", "/proc/1/fd/1"):
    try:
        os.close(os.open(path, os.O_WRONLY))
        pid1[path] = "opened"
    except OSError as error:
        pid1[path] = errno.errorcode[error.errno]


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def errno_of(result):
    return "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]


buffer = ctypes.create_string_buffer(64)
local = IoVec(ctypes.cast(buffer, ctypes.c_void_p), 64)
remote = IoVec(0x400000, 64)
traced = {
    "ptrace_attach": errno_of(libc.ptrace(16, 1, None, None)),
    "ptrace_seize": errno_of(libc.ptrace(0x4206, 1, None, None)),
    "process_vm_readv": errno_of(
        libc.syscall(310, 1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    ),
}
for key in candidates:
    os.write(2, frame(key))
print(json.dumps({
    "pids": pids,
    "key_named_anywhere": named or "PRISM_REPORT_KEY" in os.environ,
    "candidates": len(candidates),
    "pid1": pid1,
    **traced,
}))
"""
)

CLOSE_STDERR = """
import json, os
open("/workspace/output/real.txt", "w").write("mine")
print(json.dumps({"stderr": "closed"}), flush=True)
os.close(2)
os._exit(0)
"""

NON_BLOCKING_STDERR = """
import json, os
open("/workspace/output/real.txt", "w").write("mine")
os.set_blocking(2, False)
reopened = os.open("/proc/self/fd/2", os.O_WRONLY | os.O_NONBLOCK)
os.write(reopened, b"written through a second open file description\\n")
print(json.dumps({"stderr": "non-blocking"}), flush=True)
os._exit(0)
"""

# Shrink the pipe and write to it without blocking as fast as possible, so it is full
# when the script exits: the bootstrap's report has to wait for the host to drain it.
FILL_THE_PIPE = """
import fcntl, json, os
open("/workspace/output/real.txt", "w").write("mine")
F_SETPIPE_SZ = 1031
try:
    fcntl.fcntl(2, F_SETPIPE_SZ, 4096)
    shrunk = True
except OSError:
    shrunk = False
os.set_blocking(2, False)
written = 0
while written < 3 * 2**20:
    try:
        written += os.write(2, b"e" * 65536)
    except BlockingIOError:
        pass
print(json.dumps({"written": written, "shrunk": shrunk}), flush=True)
os._exit(0)
"""

# Processes left behind that stop themselves, ignore every signal they can, and keep
# writing to the shared stderr: the bootstrap must end them all and still report.
STRAGGLERS = """
import json, os, signal, sys, time
open("/workspace/output/real.txt", "w").write("mine")
if os.fork() == 0:
    os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(0)
if os.fork() == 0:
    for sig in range(1, 32):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_IGN)
    while True:
        os.write(2, b"straggler\\n")
        time.sleep(0.01)
time.sleep(0.3)
print(json.dumps({"left": 2}), flush=True)
"""

# Children storm PID 1 with every signal while the script ignores those the bootstrap
# forwards; the script exits in the middle of the storm.
SIGNAL_STORM = """
import json, os, signal, time
open("/workspace/output/real.txt", "w").write("mine")
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
             signal.SIGUSR1, signal.SIGUSR2)
for sig in FORWARDED:
    signal.signal(sig, signal.SIG_IGN)
storm = [*FORWARDED, signal.SIGSTOP, signal.SIGKILL, signal.SIGSEGV, signal.SIGPIPE,
         signal.SIGALRM, signal.SIGCONT]
for _ in range(6):
    if os.fork() == 0:
        while True:
            for sig in storm:
                try:
                    os.kill(1, sig)
                except OSError:
                    pass
time.sleep(2)
os.kill(1, 0)  # still there
print(json.dumps({"stormed": True}), flush=True)
"""

# SIGTERM to PID 1 is forwarded to the script, which dies of it: the trial's own doing.
TERMINATE_INIT = """
import os, signal, time
open("/workspace/output/real.txt", "w").write("mine")
os.kill(1, signal.SIGTERM)
time.sleep(30)
print("not reached")
"""

# The workspace filled to near the memory ceiling (tmpfs is memory), then a 4 MiB
# artifact: the bootstrap must still read and report it within its own allowance.
SQUEEZE = """
import hashlib, json, os
data = os.urandom(4 * 2**20)
with open("/workspace/output/big.bin", "wb") as f:
    f.write(data)
with open("/workspace/fill", "wb") as f:
    for _ in range(48):
        f.write(b"x" * 2**20)
print(json.dumps({"sha256": hashlib.sha256(data).hexdigest()}))
"""

WALL = {"wallSeconds": 60}
ATTACKS = {
    "steal_the_key": Attack(STEAL_THE_KEY, WALL),
    "forged_frames_then_fail": Attack(FORGED_FRAMES, WALL, ({"exit": 3},)),
    "forged_frames_then_succeed": Attack(FORGED_FRAMES, WALL, ({"exit": 0},)),
    "close_stderr": Attack(CLOSE_STDERR, WALL),
    "non_blocking_stderr": Attack(NON_BLOCKING_STDERR, WALL),
    "fill_the_stderr_pipe": Attack(FILL_THE_PIPE, {**WALL, "outputKb": 8192}),
    "stragglers": Attack(STRAGGLERS, WALL),
    "signal_storm": Attack(SIGNAL_STORM, WALL),
    "terminate_init": Attack(TERMINATE_INIT, WALL),
    "squeeze_the_bootstrap": Attack(SQUEEZE, {**WALL, "memoryMb": 64, "workspaceMb": 128}),
}
# What each script decided, and the result it printed last (None: check elsewhere).
EXPECTED: dict[str, tuple[str, int, dict[str, Any] | None]] = {
    "steal_the_key": ("succeeded", 0, None),
    "forged_frames_then_fail": ("failed", 3, {"frames": "written"}),
    "forged_frames_then_succeed": ("succeeded", 0, {"frames": "written"}),
    "close_stderr": ("succeeded", 0, {"stderr": "closed"}),
    "non_blocking_stderr": ("succeeded", 0, {"stderr": "non-blocking"}),
    "fill_the_stderr_pipe": ("succeeded", 0, None),
    "stragglers": ("succeeded", 0, {"left": 2}),
    "signal_storm": ("succeeded", 0, {"stormed": True}),
    "terminate_init": ("failed", 143, None),
    "squeeze_the_bootstrap": ("succeeded", 0, None),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[Batch]:
    yield from module_batch(tmp_path_factory.mktemp("channel"), sandbox_image, ATTACKS)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_trial_ends_as_its_script_decided(batch: Batch, name: str) -> None:
    trial = batch.trial(name)
    outcome, exit_code, result = EXPECTED[name]
    assert (trial["outcome"], trial["exitCode"]) == (outcome, exit_code), trial
    if result is not None:
        assert trial["metrics"] == result


@pytest.mark.parametrize("name", list(ATTACKS))
def test_only_the_real_artifacts_are_kept(batch: Batch, name: str) -> None:
    listed = batch.artifacts(name)
    expected = "big.bin" if name == "squeeze_the_bootstrap" else "real.txt"
    assert [a["name"] for a in listed["artifacts"]] == [expected]
    assert not any("forged" in note for note in listed["skipped"])
    if expected == "real.txt":
        assert batch.download(name, "real.txt") == (200, b"mine")


@pytest.mark.parametrize("name", list(ATTACKS))
def test_peak_memory_is_what_the_host_measured(batch: Batch, name: str) -> None:
    limit = ATTACKS[name].limits.get("memoryMb", 256) * MiB
    peak = int(batch.trial(name)["peakMemoryBytes"])
    # What these scripts hold: an interpreter's worth, or (squeezing the bootstrap) most
    # of the limit in files; never what a forged report says, which the runner would
    # have clamped to the container's ceiling.
    if name == "squeeze_the_bootstrap":
        assert limit // 2 < peak <= limit + 16 * MiB
    else:
        assert 4 * MiB < peak < 64 * MiB


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_sweep_answers_on_every_route(batch: Batch, name: str) -> None:
    assert_readable(batch.stack, batch.sweeps[name])


def test_the_key_is_nowhere_a_trial_can_read(batch: Batch) -> None:
    seen = batch.trial("steal_the_key")["metrics"]
    assert seen["pids"] == [1, seen["pids"][1]]  # the bootstrap and the script: nobody else
    assert seen["key_named_anywhere"] is False
    denied = {"EACCES", "EPERM"}
    for name in ("environ", "mem", "maps", "auxv", "stack", "io", "task/1/environ", "fdinfo/2"):
        assert seen["pid1"][name] in denied, name
    for name in ("fd/", "root/", "cwd/", "task/1/fd/", "/proc/1/fd/2", "/proc/1/fd/1"):
        assert seen["pid1"][name] in denied, name
    assert (seen["ptrace_attach"], seen["ptrace_seize"], seen["process_vm_readv"]) == (
        "EPERM",
        "EPERM",
        "EPERM",
    )


def test_forged_frames_stay_stderr_text(batch: Batch) -> None:
    for name in ("forged_frames_then_fail", "forged_frames_then_succeed"):
        stderr = batch.logs(name)["stderr"]
        assert stderr.count("\x1ePRISM-REPORT ") == 13, name
        assert "garbage after the frame" in stderr
        # The mark the script ended with, held back until the real report came.
        assert stderr.endswith("\x1ePRISM-REPORT ")
        assert "the sandbox's report" not in batch.trial(name)["reason"]


def test_a_full_pipe_delays_the_report_but_does_not_spoil_it(batch: Batch) -> None:
    trial = batch.trial("fill_the_stderr_pipe")
    logs = batch.logs("fill_the_stderr_pipe")
    # Every byte the script wrote is kept, and not one of the report's.
    assert logs["stderr"] == "e" * trial["metrics"]["written"]
    assert not logs["truncated"]


def test_stopped_and_deaf_stragglers_are_ended(batch: Batch) -> None:
    assert set(batch.logs("stragglers")["stderr"].split()) <= {"straggler"}


def test_terminating_init_ends_only_the_script(batch: Batch) -> None:
    trial = batch.trial("terminate_init")
    assert "SIGTERM" in trial["reason"]
    assert "not reached" not in batch.logs("terminate_init")["stdout"]


def test_the_bootstrap_reports_a_large_artifact_beside_a_full_workspace(batch: Batch) -> None:
    trial = batch.trial("squeeze_the_bootstrap")
    code, data = batch.download("squeeze_the_bootstrap", "big.bin")
    assert (code, len(data)) == (200, 4 * MiB)
    assert hashlib.sha256(data).hexdigest() == trial["metrics"]["sha256"]


def test_the_runner_stream_and_the_services_survive(batch: Batch) -> None:
    assert_survived(batch)
