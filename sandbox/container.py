"""Run one trial in a fresh, hardened Docker container.

Blocking code: the runner calls ``Sandbox.run`` from worker threads; one Sandbox, and
the DockerClient it holds, serve all of them at once. Each run takes two threads: the
caller's, which drives the container's life (create, attach, start, wait, kill,
remove), and a reader that drains the container's output to its end, because a kill
while nobody reads the attached output can hang the engine. The reader only reads,
raises flags and calls ``on_metric``; every kill is issued by the caller's thread or by
``cancel``.

The reader also takes the bootstrap's report (see ``sandbox/bootstrap.py``) out of
stderr: it is found by the run's random key, even split across reads, and does not
count against the output limit. Everything in it is checked again here, because the
trial could have forged it. The trial contract is described in ``sandbox/__init__.py``.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import re
import secrets
import signal
import struct
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests
from docker.types import LogConfig, Ulimit

from sandbox.bootstrap import (
    MAX_ARTIFACT_BYTES,
    MAX_ARTIFACT_FILES,
    MAX_RESULT_BYTES,
    MAX_SKIPPED_LISTED,
    REPORT_KEY_ENV,
    REPORT_MARK,
    RESULT_FILE,
)
from sandbox.prism_trial import MAX_METRIC_LINE_BYTES, METRIC_PREFIX
from sandbox.seccomp import PROFILE_JSON

OUTCOMES = (
    "succeeded",
    "failed",
    "timed_out",
    "oom_killed",
    "output_limit",
    "cancelled",
    "sandbox_error",
)

OWNER_LABEL = "prism.owner"
TRIAL_LABEL = "prism.trial"

_MiB = 2**20
_TMP_BYTES = 16 * _MiB
_SHM_BYTES = 16 * _MiB
_OPEN_FILES = 1024
_NOBODY = "65534:65534"
# The bootstrap lives beside the trial's processes: its memory and its one process
# come on top of the trial's limits.
_BOOTSTRAP_BYTES = 16 * _MiB
_BOOTSTRAP_PROCESSES = 1
# Metric events one trial may report; later metric lines only stay in stdout.
MAX_METRICS = 10_000
# The bootstrap's report: artifacts plus one line of JSON about them.
_MAX_REPORT_BYTES = MAX_ARTIFACT_BYTES + _MiB
_MAX_NAME_CHARS = 4096
# How long a killed container, or the output stream of an exited one, may take to end.
_GRACE_SECONDS = 10.0
# Linux refuses to exec with an environment string longer than this (MAX_ARG_STRLEN).
_ENV_STRING_MAX = 128 * 1024 - 1
# The script travels in PRISM_SCRIPT, so this is the largest one that can run.
MAX_SCRIPT_BYTES = _ENV_STRING_MAX - len("PRISM_SCRIPT=")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one trial may use.

    ``memory_bytes`` is for the trial's processes. The container's memory limit is that
    plus the workspace, /tmp and /dev/shm sizes, because tmpfs pages are charged to the
    container too: a full workspace must not leave the trial short of memory; plus
    16 MiB for the bootstrap. ``processes`` likewise leaves the bootstrap out.

    ``output_bytes`` bounds stdout and stderr together. A trial that writes more is
    killed (outcome ``output_limit``) and keeps the first ``output_bytes`` it wrote.
    """

    wall_seconds: float = 60.0
    memory_bytes: int = 256 * _MiB
    cpus: float = 1.0
    processes: int = 64
    output_bytes: int = 1 * _MiB
    workspace_bytes: int = 64 * _MiB

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if not value > 0:
                raise ValueError(f"limit {name} must be positive, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Execution:
    """How a trial ended. ``exit_code`` is -1 when the process did not exit on its own.

    ``result`` is the trial's result object, None when it left none or did not run to
    its end. ``peak_memory_bytes`` is the container's peak memory, 0 when unknown (a
    container the host killed). ``artifacts`` are (name, content) pairs in name order;
    ``artifacts_skipped`` says which files were left out, and why."""

    outcome: str
    reason: str
    exit_code: int
    stdout: str
    stderr: str
    output_truncated: bool
    duration_seconds: float
    result: dict[str, Any] | None = None
    peak_memory_bytes: int = 0
    artifacts: tuple[tuple[str, bytes], ...] = ()
    artifacts_skipped: tuple[str, ...] = ()


MetricCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, kw_only=True)
class _Report:
    """What the bootstrap found once the script had ended."""

    result: dict[str, Any] | None
    result_ignored: str | None
    signal: int
    peak_memory_bytes: int
    oom_kills: int
    artifacts: tuple[tuple[str, bytes], ...]
    artifacts_skipped: tuple[str, ...]


class _ReportReader:
    """Separates the bootstrap's report from the stderr around it.

    Bytes that may be the start of the mark are held back until the next read shows
    whether they are. Only the first well-formed report counts; a malformed header
    and anything after the report are ordinary stderr."""

    _TEXT, _HEADER, _PAYLOAD, _AFTER = range(4)

    def __init__(self, key: str) -> None:
        self._mark = REPORT_MARK + key.encode() + b" "
        self._state = self._TEXT
        self._held = b""
        self._payload = bytearray()
        self._length = 0
        self.payload: bytes | None = None

    def feed(self, data: bytes) -> bytes:
        """Return the stderr text among ``data``."""
        text = bytearray()
        data, self._held = self._held + data, b""
        while data:
            if self._state == self._TEXT:
                at = data.find(self._mark)
                if at < 0:
                    held = _partial_mark(data, self._mark)
                    text += data[: len(data) - held]
                    self._held = data[len(data) - held :]
                    break
                text += data[:at]
                data = data[at + len(self._mark) :]
                self._state = self._HEADER
            elif self._state == self._HEADER:
                end = data.find(b"\n", 0, 16)
                if end < 0 and len(data) < 16:
                    self._held = data
                    break
                digits = data[:end] if end >= 0 else b""
                if not (digits.isdigit() and int(digits) <= _MAX_REPORT_BYTES):
                    # Not a report after all: the mark was text.
                    text += self._mark
                    self._state = self._TEXT
                    continue
                self._length = int(digits)
                data = data[end + 1 :]
                self._state = self._PAYLOAD
                if self._length == 0:
                    self._complete()
            elif self._state == self._PAYLOAD:
                taken = data[: self._length - len(self._payload)]
                self._payload += taken
                data = data[len(taken) :]
                if len(self._payload) == self._length:
                    self._complete()
            else:
                text += data
                break
        return bytes(text)

    def end(self) -> bytes:
        """The stream ended: held bytes are text, unless they were a cut-off report."""
        held, self._held = self._held, b""
        if self._state == self._HEADER:
            return self._mark + held
        return held if self._state == self._TEXT else b""

    def _complete(self) -> None:
        self.payload = bytes(self._payload)
        self._payload = bytearray()
        self._state = self._AFTER


class _MetricLines:
    """Finds metric lines in stdout as it arrives and hands their values over."""

    def __init__(self, on_metric: MetricCallback | None) -> None:
        self._on_metric = on_metric
        self._prefix = METRIC_PREFIX.encode()
        self._line = bytearray()
        # The current line cannot be a metric: another start, or too long.
        self._skip = False
        self.count = 0
        self.closed = False

    def feed(self, data: bytes) -> None:
        if self._on_metric is None:
            return
        start = 0
        while True:
            end = data.find(b"\n", start)
            if not self._skip:
                self._line += data[start:] if end < 0 else data[start:end]
                known = min(len(self._line), len(self._prefix))
                if (
                    self._line[:known] != self._prefix[:known]
                    or len(self._line) > MAX_METRIC_LINE_BYTES
                ):
                    self._skip = True
                    self._line.clear()
            if end < 0:
                return
            self._end_line()
            start = end + 1

    def end(self) -> None:
        """The output ended: a last line without a newline counts too."""
        if self._on_metric is not None:
            self._end_line()

    def _end_line(self) -> None:
        line, skip = bytes(self._line), self._skip
        self._line.clear()
        self._skip = False
        if skip or len(line) < len(self._prefix) or self.count >= MAX_METRICS or self.closed:
            return
        values = _json_object(line[len(self._prefix) :])
        if values is None or self._on_metric is None:
            return
        self.count += 1
        try:
            self._on_metric(values)
        except Exception:  # the caller's bug must not cost the trial its output
            logger.exception("a metric callback failed")


class _Trial:
    """One run's state, shared by its caller's thread, its reader thread and cancel()."""

    def __init__(self, output_bytes: int, on_metric: MetricCallback | None) -> None:
        self.output_bytes = output_bytes
        self.container_id: str | None = None
        self.report_key = secrets.token_hex(16)
        self.report = _ReportReader(self.report_key)
        self.metrics = _MetricLines(on_metric)
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.truncated = False
        self.read_error: Exception | None = None
        # The outcome that made us stop the container; the first one wins.
        self.stop_reason: str | None = None
        # Set on a stop request and when the output ends, which is when the trial exits.
        self.wake = threading.Event()
        self._lock = threading.Lock()

    def stop(self, outcome: str) -> None:
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = outcome
        self.wake.set()

    def drain(self, output: Any) -> None:
        """Read the engine's multiplexed stream (8-byte frame headers) to its end."""
        try:
            while len(header := _read(output, 8)) == 8:
                kind, length = struct.unpack(">BxxxL", header)
                while length > 0 and (data := output.read(min(length, 2**16))):
                    length -= len(data)
                    if kind == 2:
                        self._keep(self.stderr, self.report.feed(data))
                    else:
                        self.metrics.feed(self._keep(self.stdout, data))
            self._keep(self.stderr, self.report.end())
            self.metrics.end()
        except Exception as error:  # reported by run(): a reader must not die unseen
            self.read_error = error
        finally:
            self.wake.set()

    def _keep(self, kept: bytearray, data: bytes) -> bytes:
        room = self.output_bytes - len(self.stdout) - len(self.stderr)
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
            self.stop("output_limit")
        kept += data
        return data


class Sandbox:
    """Runs trials in fresh containers labelled with ``owner``, one container per run."""

    def __init__(self, client: docker.DockerClient, *, image: str, owner: str) -> None:
        if not owner:
            raise ValueError("owner must not be empty: it tells our containers apart")
        self._api = client.api
        self._image = image
        self._owner = owner
        self._trials: dict[str, _Trial] = {}
        self._lock = threading.Lock()

    def run(
        self,
        trial_id: str,
        script: str,
        params_json: str,
        limits: Limits,
        *,
        image: str | None = None,
        on_metric: MetricCallback | None = None,
    ) -> Execution:
        """Run the script in a new container of ``image`` (the sandbox's own by default)
        and remove it; never raises for the trial's misbehaviour, and reports engine
        failures as outcome ``sandbox_error``.

        ``on_metric`` is called with each metric's values while the trial runs, in
        order, from the thread that reads its output; never after run() returns."""
        trial = _Trial(limits.output_bytes, on_metric)
        with self._lock:
            if trial_id in self._trials:
                return _sandbox_error(f"trial {trial_id} is already running in this sandbox")
            self._trials[trial_id] = trial
        try:
            return self._run(trial_id, trial, script, params_json, limits, image or self._image)
        except (docker.errors.DockerException, requests.RequestException) as error:
            return _sandbox_error(f"docker engine: {error}")
        finally:
            trial.metrics.closed = True
            with self._lock:
                del self._trials[trial_id]

    def cancel(self, trial_id: str) -> bool:
        """Kill the trial's container; its run() returns ``cancelled``. False if not running."""
        with self._lock:
            trial = self._trials.get(trial_id)
        if trial is None:
            return False
        trial.stop("cancelled")
        # run() kills too once it sees the flag; killing here as well stops a trial at
        # once even while run() waits on the engine.
        if trial.container_id is not None:
            try:
                self._kill(trial.container_id)
            except (docker.errors.DockerException, requests.RequestException) as error:
                logger.warning("could not kill the container of trial %s: %s", trial_id, error)
        return True

    def remove_orphans(self, keep: Collection[str] = ()) -> list[str]:
        """Force-remove our containers whose trial is neither in ``keep`` nor running here;
        return their trial ids."""
        containers = self._api.containers(
            all=True, filters={"label": f"{OWNER_LABEL}={self._owner}"}
        )
        removed = []
        for container in containers:
            trial_id = (container.get("Labels") or {}).get(TRIAL_LABEL, "")
            with self._lock:
                running = trial_id in self._trials
            if trial_id in keep or running:
                continue
            self._remove(container["Id"])
            removed.append(trial_id)
        return removed

    def _run(
        self,
        trial_id: str,
        trial: _Trial,
        script: str,
        params_json: str,
        limits: Limits,
        image: str,
    ) -> Execution:
        environment = {
            "PRISM_SCRIPT": script,
            "PRISM_PARAMS": params_json or "{}",  # an unset message field arrives empty
            "PRISM_TRIAL_ID": trial_id,
            REPORT_KEY_ENV: trial.report_key,
            "HOME": "/workspace",
            "PYTHONDONTWRITEBYTECODE": "1",
            # Unbuffered, so a trial that is killed still shows what it printed.
            "PYTHONUNBUFFERED": "1",
        }
        for name, value in environment.items():
            if len(name) + 1 + len(value.encode()) > _ENV_STRING_MAX:
                return _sandbox_error(
                    f"{name} is longer than the {_ENV_STRING_MAX} bytes Linux allows"
                )
        if trial.stop_reason is not None:
            return not_run("cancelled", "cancelled before it started")

        container_id: str = self._api.create_container(
            image,
            name=_container_name(self._owner, trial_id),
            user=_NOBODY,
            environment=environment,
            labels={OWNER_LABEL: self._owner, TRIAL_LABEL: trial_id},
            host_config=self._host_config(limits),
        )["Id"]
        trial.container_id = container_id
        attached: requests.Response | None = None
        try:
            # Attached before start, so not a byte of output is missed.
            attached = self._attach(container_id)
            reader = threading.Thread(
                target=trial.drain, args=(attached.raw,), name=f"output of {trial_id}", daemon=True
            )
            reader.start()
            started = time.monotonic()
            self._api.start(container_id)
            status = self._supervise(container_id, trial, started + limits.wall_seconds)
            duration = time.monotonic() - started
            reader.join(_GRACE_SECONDS)
            if reader.is_alive():
                _close(attached)
                reader.join(_GRACE_SECONDS)
            return self._execution(container_id, trial, status, limits, duration)
        finally:
            if attached is not None:
                _close(attached)
            self._remove(container_id)

    def _attach(self, container_id: str) -> requests.Response:
        # The engine's attach call itself, not the SDK's wrapper: that one inspects the
        # container first (a round trip per trial) and leaves its socket to the garbage
        # collector. Without an Upgrade header the engine answers 200 and then streams
        # until the container ends, which a plain streamed response reads.
        response: requests.Response = self._api.post(
            f"{self._api.base_url}/v{self._api.api_version}/containers/{container_id}/attach",
            params={"stdout": 1, "stderr": 1, "stream": 1},
            stream=True,
        )
        try:
            response.raise_for_status()
        except requests.HTTPError:
            response.close()
            raise
        return response

    def _supervise(self, container_id: str, trial: _Trial, deadline: float) -> dict[str, Any]:
        """Wait for the container to end, killing it on a stop request or at the deadline."""
        if not trial.wake.wait(max(deadline - time.monotonic(), 0.0)):
            trial.stop("timed_out")
        while True:
            if trial.stop_reason is not None:
                self._kill(container_id)
                status: dict[str, Any] = self._api.wait(container_id, timeout=_GRACE_SECONDS)
                return status
            # The output has ended, so the trial is exiting; unless it closed its
            # streams and goes on, which the rest of the wall-clock time bounds.
            try:
                status = self._api.wait(container_id, timeout=max(deadline - time.monotonic(), 1.0))
                return status
            except requests.RequestException:
                trial.stop("timed_out")

    def _execution(
        self,
        container_id: str,
        trial: _Trial,
        status: dict[str, Any],
        limits: Limits,
        duration: float,
    ) -> Execution:
        report = None
        if trial.report.payload is not None:
            report = _parse_report(trial.report.payload)
        outcome, reason, exit_code = self._verdict(container_id, trial, status, limits, report)
        ran_to_end = outcome in ("succeeded", "failed", "oom_killed")
        result = None
        stderr = trial.stderr.decode("utf-8", errors="replace")
        if ran_to_end:
            result = report.result if report is not None else None
            result = result if result is not None else _last_line_result(trial.stdout)
            if report is not None and report.result_ignored is not None:
                # Said after the verdict, so stderr's last line in a reason is the trial's.
                stderr += f"prism: {RESULT_FILE} ignored: {report.result_ignored}\n"
        return Execution(
            outcome=outcome,
            reason=reason,
            exit_code=exit_code,
            stdout=trial.stdout.decode("utf-8", errors="replace"),
            stderr=stderr,
            output_truncated=trial.truncated,
            duration_seconds=duration,
            result=result,
            peak_memory_bytes=report.peak_memory_bytes if report else 0,
            artifacts=report.artifacts if report and ran_to_end else (),
            artifacts_skipped=report.artifacts_skipped if report and ran_to_end else (),
        )

    def _verdict(
        self,
        container_id: str,
        trial: _Trial,
        status: dict[str, Any],
        limits: Limits,
        report: _Report | None,
    ) -> tuple[str, str, int]:
        """Outcome, reason and exit code: a stop we caused explains the exit first."""
        code: int = status["StatusCode"]
        if trial.stop_reason == "timed_out":
            return "timed_out", f"killed after {limits.wall_seconds:g} s wall-clock limit", -1
        if trial.stop_reason == "output_limit":
            limit = f"{limits.output_bytes} bytes"
            return "output_limit", f"killed for writing more than {limit} of output", -1
        if trial.stop_reason == "cancelled":
            return "cancelled", "cancelled", -1
        if trial.read_error is not None:
            return "sandbox_error", f"lost the trial's output: {trial.read_error!r}", -1
        out_of_memory = f"killed by the kernel: out of memory ({limits.memory_bytes} bytes limit)"
        if report is None and trial.report.payload is not None:
            # Only a script that dug up the key can have sent it: its own doing.
            reason = f"{_exit_reason(code, trial.stderr)}; the sandbox's report was malformed"
            return "failed", reason, code
        if report is None:
            # The bootstrap did not get to report: it was killed (by the kernel, or by
            # the script, which runs as the same user), or it failed.
            if code == 137 and self._oom_killed(container_id):
                return "oom_killed", out_of_memory, -1
            if code == 0:
                return "sandbox_error", "the sandbox's bootstrap ended without a report", -1
            reason = _exit_reason(code, trial.stderr)
            return "failed", f"{reason} (the sandbox's bootstrap did not report)", code
        if report.oom_kills:
            # Any process of the trial counts, a child the script survived included.
            count = report.oom_kills
            reason = f"{count} process{'es' if count > 1 else ''} {out_of_memory}"
            if report.signal:
                return "oom_killed", reason, -1
            return "oom_killed", f"{reason}; the script then exited with code {code}", code
        return ("succeeded" if code == 0 else "failed"), _exit_reason(code, trial.stderr), code

    def _oom_killed(self, container_id: str) -> bool:
        # Only asked on exit code 137: the wait's answer does not tell an OOM kill apart.
        state = self._api.inspect_container(container_id)["State"]
        return bool(state.get("OOMKilled"))

    def _host_config(self, limits: Limits) -> Any:
        memory = sum(
            (limits.memory_bytes, limits.workspace_bytes, _TMP_BYTES, _SHM_BYTES, _BOOTSTRAP_BYTES)
        )
        cpu_seconds = math.ceil(limits.wall_seconds * limits.cpus) + 1
        return self._api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs={
                "/workspace": (
                    f"rw,nosuid,nodev,noexec,size={limits.workspace_bytes},uid=65534,gid=65534"
                ),
                "/tmp": f"rw,nosuid,nodev,noexec,size={_TMP_BYTES},mode=1777",
            },
            shm_size=_SHM_BYTES,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", f"seccomp={PROFILE_JSON}"],
            pids_limit=limits.processes + _BOOTSTRAP_PROCESSES,
            mem_limit=memory,
            memswap_limit=memory,
            nano_cpus=round(limits.cpus * 1e9),
            # No nproc: it counts per host uid across all containers, so one trial
            # could keep another from starting. pids_limit bounds processes instead.
            ulimits=[
                Ulimit(name="nofile", soft=_OPEN_FILES, hard=_OPEN_FILES),
                Ulimit(name="fsize", soft=limits.workspace_bytes, hard=limits.workspace_bytes),
                Ulimit(name="core", soft=0, hard=0),
                # A backstop behind the host's wall clock, which always fires
                # first: no process can use more CPU time than this within it.
                Ulimit(name="cpu", soft=cpu_seconds, hard=cpu_seconds),
            ],
            init=True,
            ipc_mode="private",
            cgroupns="private",
            # Output goes through attach only: a flood must not fill the host's disk.
            log_config=LogConfig(type=LogConfig.types.NONE),
        )

    def _kill(self, container_id: str) -> None:
        try:
            self._api.kill(container_id)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            if error.status_code != 409:  # 409: it is not running any more
                raise

    def _remove(self, container_id: str) -> None:
        try:
            self._api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.DockerException, requests.RequestException) as error:
            # The result stands; remove_orphans takes the container later.
            logger.warning("could not remove container %s: %s", container_id, error)


def _container_name(owner: str, trial_id: str) -> str:
    # Readable prefix for `docker ps`, hash for uniqueness once sanitising merged names.
    readable = re.sub(r"[^a-zA-Z0-9_.-]+", "-", f"{owner}-{trial_id}")[:64]
    digest = hashlib.sha256(f"{owner}\0{trial_id}".encode()).hexdigest()[:12]
    return f"prism-{readable}-{digest}"


def _exit_reason(code: int, stderr: bytes | bytearray) -> str:
    reason = f"exited with code {code}"
    if code > 128:
        with contextlib.suppress(ValueError):
            reason += f" ({signal.Signals(code - 128).name})"
    if code != 0:
        lines = stderr.decode("utf-8", errors="replace").strip().splitlines()
        if lines:
            reason += f": {lines[-1][:200]}"
    return reason


def _partial_mark(data: bytes, mark: bytes) -> int:
    """How many bytes at the end of ``data`` may be the start of ``mark``."""
    for size in range(min(len(mark) - 1, len(data)), 0, -1):
        if data.endswith(mark[:size]):
            return size
    return 0


def _finite(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None


def _json_object(text: bytes | str) -> dict[str, Any] | None:
    """A JSON object, with NaN and infinities as null (JSON has neither); else None."""
    try:
        value = json.loads(text, parse_constant=lambda _: None, parse_float=_finite)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _last_line_result(stdout: bytearray) -> dict[str, Any] | None:
    text = bytes(stdout).rstrip()
    line = text[text.rfind(b"\n") + 1 :]
    if not line or len(line) > MAX_RESULT_BYTES:
        return None
    return _json_object(line)


def _parse_report(payload: bytes) -> _Report | None:
    """The report, checked as untrusted input against every cap; None if it breaks one."""
    head, _, contents = payload.partition(b"\n")
    meta = _json_object(head)
    if meta is None:
        return None
    try:
        result = None
        if meta["result"] is not None:
            text: str = meta["result"]
            if len(text.encode()) > MAX_RESULT_BYTES:
                return None
            result = _json_object(text)
            if result is None:
                return None
        ignored = meta["result_ignored"]
        if ignored is not None:
            ignored = str(ignored)[:200]
        numbers = [meta[name] for name in ("signal", "peak_memory_bytes", "oom_kills")]
        if not all(type(n) is int and n >= 0 for n in numbers):
            return None
        listed = meta["artifacts"]
        if len(listed) > MAX_ARTIFACT_FILES:
            return None
        artifacts, offset = [], 0
        for name, size in listed:
            if not (isinstance(name, str) and 0 < len(name) <= _MAX_NAME_CHARS):
                return None
            name.encode()  # a lone surrogate raises: names must be UTF-8
            if not (type(size) is int and 0 <= size <= len(contents) - offset):
                return None
            artifacts.append((name, contents[offset : offset + size]))
            offset += size
        if offset != len(contents) or offset > MAX_ARTIFACT_BYTES:
            return None
        skipped = meta["artifacts_skipped"]
        if len(skipped) > MAX_SKIPPED_LISTED or not all(isinstance(s, str) for s in skipped):
            return None
        for entry in skipped:
            entry.encode()
    except (KeyError, TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return None
    signalled, peak, oom_kills = numbers
    return _Report(
        result=result,
        result_ignored=ignored,
        signal=signalled,
        peak_memory_bytes=peak,
        oom_kills=oom_kills,
        artifacts=tuple(artifacts),
        artifacts_skipped=tuple(s[:512] for s in skipped),
    )


def _read(output: Any, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := output.read(size - len(data))):
        data += chunk
    return data


def _close(response: requests.Response) -> None:
    # A shutdown, unlike a close, also ends a read blocked in the reader thread
    # (urllib3 >= 2.3; without it the reader ends when the engine closes the stream).
    with contextlib.suppress(AttributeError, OSError, ValueError, RuntimeError):
        response.raw.shutdown()
    response.close()


def _sandbox_error(reason: str) -> Execution:
    return not_run("sandbox_error", reason)


def not_run(outcome: str, reason: str) -> Execution:
    """The execution of a trial that never ran (or whose run was lost)."""
    return Execution(
        outcome=outcome,
        reason=reason,
        exit_code=-1,
        stdout="",
        stderr="",
        output_truncated=False,
        duration_seconds=0.0,
    )
