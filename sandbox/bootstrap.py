"""Trial bootstrap: the process the init of every sandbox container starts.

It writes the trial's files into the workspace, runs the script as its child (stdio
inherited: the output goes straight to the container's streams, nothing is copied),
and when the script has ended kills every process it left behind, then tells the host
what the trial left: its result file, the files of its output folder, the container's
peak memory and how many processes the kernel killed for lack of memory. The trial
contract itself is described in ``sandbox/__init__.py``.

The trial arrives in the environment because the root filesystem is read-only and the
workspace is a tmpfs that exists only once the container runs: there is no earlier
moment to copy files in. For the same reason (and because the engine cannot copy
files out of a tmpfs) the findings leave through stderr, as one report framed by a key
the host made for this run:

    \\x1ePRISM-REPORT <key> <length>\\n<length bytes>

The bytes are one line of JSON (``result``: the result file's text or null,
``result_ignored``: why a result file was not taken, or null, ``signal``: the signal
that ended the script or 0, ``peak_memory_bytes``, ``oom_kills``, ``artifacts``:
``[name, size]`` pairs, ``artifacts_skipped``: strings), then the artifacts' contents
one after another. The host strips the report from stderr. The key
is taken out of the script's environment, so no trial prints a report by accident; one
that digs the key up anyway (it can read its own init's environment) can only lie
about itself, within the caps the host checks again.

Standard library only: it runs on any base image with python3.
"""

from __future__ import annotations

import json
import os
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
MAX_ARTIFACT_FILES = 32
MAX_ARTIFACT_BYTES = 4 * 2**20
# Entries of the output folder looked at, at most: the rest is not examined.
MAX_OUTPUT_ENTRIES = 10_000
# artifacts_skipped lists at most this many files, the last entry counting the rest.
MAX_SKIPPED_LISTED = 64
_MAX_SKIPPED_CHARS = 512

REPORT_KEY_ENV = "PRISM_REPORT_KEY"
REPORT_MARK = b"\x1ePRISM-REPORT "

# Signals init forwards to us: they are meant for the trial.
_FORWARDED = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
# The container's own memory cgroup (the cgroup namespace is private): v1, then v2.
_PEAK_FILES = ("/sys/fs/cgroup/memory/memory.max_usage_in_bytes", "/sys/fs/cgroup/memory.peak")
_OOM_FILES = ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events")
# How long stragglers may take to die and be reaped by init.
_KILL_SECONDS = 5.0


def main() -> None:
    script = os.environ.pop("PRISM_SCRIPT")  # the trial should not see its own source twice
    key = os.environ.pop(REPORT_KEY_ENV, "")
    params = os.environ["PRISM_PARAMS"] = os.environ.get("PRISM_PARAMS") or "{}"
    if not isinstance(json.loads(params), dict):
        sys.exit("prism: PRISM_PARAMS must be a JSON object")
    os.chdir(WORKSPACE)
    with open(TRIAL_FILE, "w", encoding="utf-8") as f:
        f.write(script)
    with open(PARAMS_FILE, "w", encoding="utf-8") as f:
        f.write(params)
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = HELPER_DIR + (os.pathsep + path if path else "")

    status = _run_script()
    _kill_stragglers()
    signalled = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    if key:
        _report(key, signalled)
    # The script's status becomes the container's, as a shell would give it.
    sys.exit(128 + signalled if signalled else os.WEXITSTATUS(status))


def _run_script() -> int:
    pid = os.fork()
    if pid == 0:
        try:
            # When memory runs out, the kernel should pick the trial's processes (their
            # children inherit this), never the bootstrap, which must live to report.
            with suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
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
    _, status = os.waitpid(pid, 0)
    return status


def _kill_stragglers() -> None:
    """Kill what the script left running: kill(-1) reaches every process of our uid but
    init and ourselves. It fails with ESRCH once init has reaped them all."""
    deadline = time.monotonic() + _KILL_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.002)


def _report(key: str, signalled: int) -> None:
    result, ignored = _read_result()
    artifacts, skipped = _artifacts()
    meta = {
        "result": result,
        "result_ignored": ignored,
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
    """The result file's text if it holds a JSON object within the cap: (text, None),
    else (None, why it is ignored); (None, None) when there is no file."""
    try:
        info = os.lstat(RESULT_FILE)
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, f"cannot read it ({error.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return None, f"it is a {_kind(info.st_mode)}, not a regular file"
    if info.st_size > MAX_RESULT_BYTES:
        return None, f"it is larger than {MAX_RESULT_BYTES} bytes"
    try:
        text = _read(RESULT_FILE, MAX_RESULT_BYTES).decode("utf-8")
        value = json.loads(text)
    except OSError as error:
        return None, f"cannot read it ({error.strerror})"
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, "it is not JSON"
    if not isinstance(value, dict):
        return None, "it is not a JSON object"
    return text, None


def _artifacts() -> tuple[list[tuple[str, bytes]], list[str]]:
    """The output folder's regular files by name, within the caps, and what was left out."""
    artifacts: list[tuple[str, bytes]] = []
    skipped: list[str] = []
    total = 0
    for name, path, mode, size in _output_entries(skipped):
        if not stat.S_ISREG(mode):
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
        skipped.append(f"{name}: {why}")
    if len(skipped) > MAX_SKIPPED_LISTED:
        rest = len(skipped) - MAX_SKIPPED_LISTED + 1
        skipped[MAX_SKIPPED_LISTED - 1 :] = [f"... and {rest} more"]
    return artifacts, [entry[:_MAX_SKIPPED_CHARS] for entry in skipped]


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
            with os.scandir(folder) as entries:
                listed = list(entries)
        except OSError as error:
            skipped.append(f"{prefix or './'}: unreadable folder ({error.strerror})")
            continue
        for entry in listed:
            seen += 1
            if seen > MAX_OUTPUT_ENTRIES:
                skipped.append(f"more than {MAX_OUTPUT_ENTRIES} entries: the rest not examined")
                return sorted(found)
            name = prefix + entry.name
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                skipped.append(f"{shown}: the name is not UTF-8")
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError as error:
                skipped.append(f"{name}: unreadable ({error.strerror})")
                continue
            if stat.S_ISDIR(info.st_mode):
                folders.append((name + "/", entry.path))
            else:
                found.append((name, entry.path, info.st_mode, info.st_size))
    return sorted(found)


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
