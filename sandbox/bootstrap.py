"""Trial bootstrap: the supervisor of every sandbox container, its PID 1.

It writes the trial's files into the workspace, runs the script as its child (stdio
inherited: the output goes straight to the container's streams, nothing is copied),
reaps every process that ends, and when the script has ended kills every process it
left behind, then tells the host what the trial left: its result file, the files of its
output folder, the container's peak memory and how many processes the kernel killed
for lack of memory. The trial contract itself is described in ``sandbox/__init__.py``.

The trial's processes run as the same user, so what keeps them from posing as the
bootstrap is the kernel's treatment of a namespace's init and of a process that is
not dumpable: the bootstrap is PID 1 of the container's PID namespace, so no process
in it can kill or stop it (signals it has no handler for are dropped), and the first
thing it does is make itself non-dumpable, so its /proc files (its environment, its
memory, its open files) belong to root and no process of the trial can read them or
ptrace it (the seccomp profile denies ptrace besides). The key below therefore stays
the bootstrap's and the host's alone.

The trial arrives on stdin, once the container runs: the root filesystem is read-only
and the workspace is a tmpfs that exists only then, so there is no earlier moment to
copy files in, and the container itself is made before its trial is known (the runner
prepares containers ahead of demand). The host writes a line with the key it made for
this run, a line with a length, then that many bytes: one JSON object (``script``,
``params``, ``trial_id``). Nothing depends on the stream's end (which a proxy or TLS
between the host and the engine may not pass on). The trial's own stdin is /dev/null.
For the same reasons (and because the engine cannot copy files out of a tmpfs) the
findings leave through stderr, as one report framed by that key:

    \\x1ePRISM-REPORT <key> <length>\\n<length bytes>

The bytes are one line of JSON (``setup_error``: why the script could not be started,
or null; ``result``: the result file's text or null; ``result_error``: why the file
could not be taken, or null; ``signal``: the signal that ended the script or 0;
``peak_memory_bytes``; ``oom_kills``; ``artifacts``: ``[name, size]`` pairs;
``artifacts_skipped``: strings), then the artifacts' contents one after another. The
host strips the report from stderr and checks all of it again.

Standard library only: it runs on any base image with python3. The caps repeat those
of ``prism.trial`` (a test keeps them equal): this file is shipped alone.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import stat
import sys
import time
from contextlib import suppress

WORKSPACE = "/workspace"
TRIAL_FILE = "/workspace/trial.py"
PARAMS_FILE = "/workspace/params.json"
RESULT_FILE = "/workspace/result.json"
OUTPUT_DIR = "/workspace/output"
# Where prism_trial.py is: put on the script's PYTHONPATH.
HELPER_DIR = "/opt/prism"

MAX_RESULT_BYTES = 64 * 1024
# The rule is on the result's compact form, which the host makes: a file written
# loosely may be this much longer and still be read.
MAX_RESULT_FILE_BYTES = 8 * MAX_RESULT_BYTES
MAX_ARTIFACT_FILES = 32
MAX_ARTIFACT_BYTES = 4 * 2**20
MAX_NAME_PART_BYTES = 255
MAX_NAME_BYTES = 1024
# Entries of the output folder looked at, at most: the rest is not examined.
MAX_OUTPUT_ENTRIES = 10_000
# artifacts_skipped lists at most this many files, the last entry counting the rest.
MAX_SKIPPED_LISTED = 64
MAX_SKIPPED_CHARS = 512

REPORT_MARK = b"\x1ePRISM-REPORT "
# What the host may write on stdin, at most: a script, its parameters and its id
# (the host's caps are far below), and JSON's escaping of them.
MAX_TRIAL_BYTES = 8 * 2**20
# The exit status of a bootstrap that could not prepare the trial: no trial code has
# run, so whatever the reason, it is the sandbox's failure, never the trial's.
SETUP_FAILED = 125

# Signals the engine may send us that are meant for the trial: docker stop's SIGTERM,
# and the rest a user could send with docker kill.
_FORWARDED = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
_PR_SET_DUMPABLE = 4
# The container's own memory cgroup (the cgroup namespace is private): v1, then v2.
_PEAK_FILES = ("/sys/fs/cgroup/memory/memory.max_usage_in_bytes", "/sys/fs/cgroup/memory.peak")
_OOM_FILES = ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events")
# How long stragglers may take to die.
_KILL_SECONDS = 5.0
# Control characters and the invisible ones that reorder or hide text or break a line
# (the same set as prism.trial's).
_INVISIBLE = "\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{_INVISIBLE}]")


def main() -> None:
    key = ""
    try:
        _protect_self()
        key, size, start = _header()
        trial = json.loads(_body(start, size))
        if not isinstance(trial, dict):
            raise ValueError("the trial on stdin is not a JSON object")
        script, params = trial["script"], trial["params"]
        if not (isinstance(script, str) and isinstance(params, str)):
            raise ValueError("the script and the parameters must be text")
        if not isinstance(json.loads(params), dict):
            raise ValueError("PRISM_PARAMS must be a JSON object")
        os.environ["PRISM_PARAMS"] = params
        os.environ["PRISM_TRIAL_ID"] = str(trial["trial_id"])
        os.chdir(WORKSPACE)
        with open(TRIAL_FILE, "w", encoding="utf-8") as f:
            f.write(script)
        with open(PARAMS_FILE, "w", encoding="utf-8") as f:
            f.write(params)
        os.makedirs(OUTPUT_DIR, exist_ok=True)
    except (OSError, ValueError, KeyError) as error:
        problem = f"{type(error).__name__}: {error}"[:500]
        os.write(2, f"prism: could not prepare the trial: {problem}\n".encode())
        _report(key, setup_error=problem)
        sys.exit(SETUP_FAILED)
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = HELPER_DIR + (os.pathsep + path if path else "")

    status = _run_script()
    signalled = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    # A process of the trial that outlived the kill could read the report off stderr
    # (reopened through /proc/self/fd/2): then there is none.
    if not _end_stragglers():
        sys.exit(1)
    _report(key, signalled=signalled)
    # The script's status becomes the container's, as a shell would give it.
    sys.exit(128 + signalled if signalled else os.WEXITSTATUS(status))


def _header() -> tuple[str, int, bytes]:
    """The key and the trial's length, from stdin's first two lines; and what of the
    trial came with them."""
    data = b""
    while data.count(b"\n") < 2:
        if len(data) > 128:
            raise ValueError("stdin does not start with the run's key and a length")
        chunk = os.read(0, 2**16)
        if not chunk:
            raise ValueError("stdin ended before the run's key and length")
        data += chunk
    key, size, rest = data.split(b"\n", 2)
    if not re.fullmatch(rb"[0-9a-f]{32}", key):
        raise ValueError("stdin does not start with the run's key")
    if not (size.isdigit() and int(size) <= MAX_TRIAL_BYTES):
        raise ValueError(f"the trial's length is not a number of at most {MAX_TRIAL_BYTES}")
    return key.decode(), int(size), rest


def _body(start: bytes, size: int) -> bytes:
    """The trial's bytes, exactly ``size`` of them; then stdin is /dev/null."""
    data = bytearray(start)
    while len(data) < size:
        chunk = os.read(0, min(2**16, size - len(data)))
        if not chunk:
            raise ValueError("stdin ended before the trial did")
        data += chunk
    if len(data) > size:
        raise ValueError("stdin holds more than the trial's length")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return bytes(data)


def _protect_self() -> None:
    """Not dumpable: our /proc files become root's, so the trial can neither read our
    memory (the key) or stdin nor open our stderr nor attach to us."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _run_script() -> int:
    pid = os.fork()
    if pid == 0:
        try:
            # Back to dumpable for the moment it takes to make the kernel's OOM killer
            # pick the trial's processes (their children inherit this), never the
            # bootstrap, which must live to report; exec then replaces everything we
            # held. Nothing of the trial runs yet.
            ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
            with suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.execv(sys.executable, [sys.executable, TRIAL_FILE])
        except BaseException as error:
            os.write(2, f"prism: could not start the script: {error}\n".encode())
        finally:
            os._exit(127)

    def forward(signum: int, frame: object) -> None:
        with suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    # As PID 1 we are the parent of every orphan: reap them while we wait.
    while True:
        ended, status = os.waitpid(-1, 0)
        if ended == pid:
            return status


def _end_stragglers() -> bool:
    """Kill what the script left running: kill(-1) reaches every process in the
    container but ourselves; reap them until none is left. False if some outlived
    the deadline."""
    deadline = time.monotonic() + _KILL_SECONDS
    while time.monotonic() < deadline:
        with suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return True
        time.sleep(0.002)
    return False


def _report(key: str, *, signalled: int = 0, setup_error: str | None = None) -> None:
    if not key:
        return
    result, result_error = (None, None) if setup_error else _read_result()
    artifacts, skipped = ([], []) if setup_error else _artifacts()
    meta = {
        "setup_error": setup_error,
        "result": result,
        "result_error": result_error,
        "signal": signalled,
        "peak_memory_bytes": _cgroup_number(_PEAK_FILES),
        "oom_kills": _cgroup_number(_OOM_FILES, field="oom_kill"),
        "artifacts": [[name, len(data)] for name, data in artifacts],
        "artifacts_skipped": skipped,
    }
    head = json.dumps(meta).encode() + b"\n"
    length = len(head) + sum(len(data) for _, data in artifacts)
    frame = [REPORT_MARK + key.encode() + b" %d\n" % length, head]
    frame += [data for _, data in artifacts]
    with suppress(OSError):  # nobody reads any more: nothing to report to
        os.set_blocking(2, True)  # the script may have made the shared pipe non-blocking
        for chunk in frame:
            view = memoryview(chunk)
            while view:
                view = view[os.write(2, view) :]


def _read_result() -> tuple[str | None, str | None]:
    """The result file's text: (text, None); (None, why it cannot be taken) when it is
    not a readable UTF-8 regular file within the cap; (None, None) when there is none.
    Whether the text is a JSON object within the rules is for the host to say."""
    try:
        info = os.lstat(RESULT_FILE)
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, f"cannot be read ({error.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return None, f"is a {_kind(info.st_mode)}, not a regular file"
    if info.st_size > MAX_RESULT_FILE_BYTES:
        return None, f"is larger than {MAX_RESULT_FILE_BYTES} bytes as written"
    try:
        return _read(RESULT_FILE, MAX_RESULT_FILE_BYTES).decode("utf-8"), None
    except OSError as error:
        return None, f"cannot be read ({error.strerror})"
    except UnicodeDecodeError:
        return None, "is not UTF-8"


def _artifacts() -> tuple[list[tuple[str, bytes]], list[str]]:
    """The output folder's regular files by name, within the caps, and what was left out."""
    artifacts: list[tuple[str, bytes]] = []
    skipped: list[str] = []
    total = 0
    for name, path, mode, size in _output_entries(skipped):
        problem = name_problem(name)
        if problem is not None:
            why = problem
        elif not stat.S_ISREG(mode):
            why = f"a {_kind(mode)}, not a regular file"
        elif len(artifacts) >= MAX_ARTIFACT_FILES:
            why = f"over the cap of {MAX_ARTIFACT_FILES} files"
        elif total + size > MAX_ARTIFACT_BYTES:
            why = f"over the cap of {MAX_ARTIFACT_BYTES} bytes in all"
        else:
            try:
                data = _read(path, MAX_ARTIFACT_BYTES - total)
            except OSError as error:
                why = f"unreadable ({error.strerror})"
            else:
                artifacts.append((name, data))
                total += len(data)
                continue
        skipped.append(f"{_shown(name)}: {why}")
    if len(skipped) > MAX_SKIPPED_LISTED:
        rest = len(skipped) - MAX_SKIPPED_LISTED + 1
        skipped[MAX_SKIPPED_LISTED - 1 :] = [f"... and {rest} more"]
    return artifacts, [entry[:MAX_SKIPPED_CHARS] for entry in skipped]


def name_problem(name: str) -> str | None:
    """Why ``name`` (a path relative to the output folder, as found there) cannot be an
    artifact's name, or None. The same rule as ``prism.trial.artifact_name``."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "the name is not UTF-8"
    if _CONTROL.search(name):
        return "the name holds a control or invisible character"
    if size > MAX_NAME_BYTES:
        return f"the name is longer than {MAX_NAME_BYTES} bytes"
    if any(len(part.encode()) > MAX_NAME_PART_BYTES for part in name.split("/")):
        return f"a part of the name is longer than {MAX_NAME_PART_BYTES} bytes"
    return None


def _shown(name: str) -> str:
    """A name as it can be listed: valid UTF-8, control characters replaced."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub("\ufffd", text)[:200]


def _output_entries(skipped: list[str]) -> list[tuple[str, str, int, int]]:
    """(name relative to the output folder, path, mode, size) of everything in it but
    folders, sorted by name; symlinks are not followed."""
    try:
        if not stat.S_ISDIR(os.lstat(OUTPUT_DIR).st_mode):
            skipped.append(f"{OUTPUT_DIR}: not a folder")
            return []
    except OSError:
        return []
    found: list[tuple[str, str, int, int]] = []
    folders = [("", OUTPUT_DIR)]
    seen = 0
    while folders:
        prefix, folder = folders.pop()
        try:
            # Entry by entry: a folder of a million files is never held whole.
            with os.scandir(folder) as entries:
                for entry in entries:
                    seen += 1
                    if seen > MAX_OUTPUT_ENTRIES:
                        note = f"more than {MAX_OUTPUT_ENTRIES} entries: the rest not examined"
                        skipped.append(note)
                        return sorted(found)
                    _look_at(entry, prefix, folders, found, skipped)
        except OSError as error:
            skipped.append(f"{_shown(prefix) or './'}: unreadable folder ({error.strerror})")
    return sorted(found)


def _look_at(
    entry: os.DirEntry[str],
    prefix: str,
    folders: list[tuple[str, str]],
    found: list[tuple[str, str, int, int]],
    skipped: list[str],
) -> None:
    name = prefix + entry.name
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError as error:
        skipped.append(f"{_shown(name)}: unreadable ({error.strerror})")
        return
    if stat.S_ISDIR(info.st_mode):
        folders.append((name + "/", entry.path))
    else:
        found.append((name, entry.path, info.st_mode, info.st_size))


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "folder"),
    ]
    return next((name for test, name in kinds if test(mode)), "special file")


def _read(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of a file, never following a symlink, never blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        chunks = []
        while limit > 0 and (chunk := os.read(fd, min(limit, 2**20))):
            chunks.append(chunk)
            limit -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _cgroup_number(paths: tuple[str, ...], field: str | None = None) -> int:
    """The first of ``paths`` that exists: its number, or its ``field``'s; 0 if none."""
    for path in paths:
        try:
            with open(path, encoding="ascii") as f:
                text = f.read()
        except OSError:
            continue
        if field is None:
            return _number(text)
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == field:
                return _number(value)
        return 0
    return 0


def _number(text: str) -> int:
    try:
        return max(int(text), 0)
    except ValueError:
        return 0


if __name__ == "__main__":
    main()
