"""Run one trial in a fresh, hardened Docker container.

Blocking code: the runner calls ``Sandbox.run`` from worker threads; one Sandbox, and
the DockerClient it holds, serve all of them at once. Each run takes two threads: the
caller's, which drives the container's life (create, attach, start, wait, kill,
remove), and a reader that drains the container's output to its end, because a kill
while nobody reads the attached output can hang the engine. The reader only reads,
parses, raises flags and calls ``on_metric``; every kill is issued by the caller's
thread or by ``cancel``.

This is where the trial's bytes enter the runner, and where they are parsed, once,
into a ``prism.trial.TrialResult``: metric lines as they arrive, the bootstrap's
report (see ``sandbox/bootstrap.py``; found in stderr by the run's random key, even
split across reads, and not counted against the output limit), the result object, the
artifacts. What breaks a rule of ``prism.trial`` ends the trial ``failed`` with the
rule named. The exit code, the wall time and OOM kills come from the engine. The
trial contract itself is described in ``sandbox/__init__.py``.
"""

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import secrets
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, cast

import docker
import docker.errors
import requests
from docker.types import LogConfig, Ulimit

from prism import logs
from prism.limits import DEFAULTS
from prism.trial import (
    MAX_ENV_STRING_BYTES,
    MAX_SCRIPT_BYTES,
    Artifact,
    NotAnObject,
    Outcome,
    RuleBroken,
    TrialResult,
    checked_artifacts,
    not_run,
    parse_object,
)
from sandbox.bootstrap import (
    MAX_ARTIFACT_BYTES,
    MAX_RESULT_FILE_BYTES,
    MAX_SKIPPED_LISTED,
    REPORT_MARK,
    RESULT_FILE,
    SETUP_FAILED,
)
from sandbox.prepared import Prepared
from sandbox.prism_trial import MAX_METRIC_LINE_BYTES, METRIC_PREFIX
from sandbox.seccomp import PROFILE_JSON

OWNER_LABEL = "prism.owner"

_KiB, _MiB = 2**10, 2**20
_TMP_BYTES = 16 * _MiB
_SHM_BYTES = 16 * _MiB
_OPEN_FILES = 1024
_NOBODY = "65534:65534"
# The bootstrap lives beside the trial's processes: its memory (an interpreter, and
# the artifacts it reads to report them) and its one process come on top of the
# trial's limits.
BOOTSTRAP_BYTES = 16 * _MiB
_BOOTSTRAP_PROCESSES = 1
# Metric lines one trial may print; one more fails it.
MAX_METRICS = 10_000
# The bootstrap's report: artifacts plus one line of JSON about them (the result
# file's text, escaped, may take six times its size there).
_MAX_REPORT_BYTES = MAX_ARTIFACT_BYTES + 6 * MAX_RESULT_FILE_BYTES + _MiB
# How long a killed container, or the output stream of an exited one, may take to end.
_GRACE_SECONDS = 10.0
# What every container has in its environment; the trial's own arrives on stdin.
_ENVIRONMENT = {
    "HOME": "/workspace",
    "PYTHONDONTWRITEBYTECODE": "1",
    # Unbuffered, so a trial that is killed still shows what it printed.
    "PYTHONUNBUFFERED": "1",
}

log = logs.get("sandbox.container")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one trial may use.

    ``memory_bytes`` is the ceiling of the trial's processes, and the files they write
    to /workspace, /tmp and /dev/shm count inside it (tmpfs pages are memory, charged
    to the container). The container's memory limit is that plus 16 MiB for the
    bootstrap. ``processes`` likewise leaves the bootstrap out.

    ``output_bytes`` bounds stdout and stderr together. A trial that writes more is
    killed (outcome ``output_limit``) and keeps the first ``output_bytes`` it wrote.
    """

    # The API's defaults (prism.limits), sizes in bytes.
    wall_seconds: float = DEFAULTS["wallSeconds"]
    memory_bytes: int = int(DEFAULTS["memoryMb"]) * _MiB
    cpus: float = DEFAULTS["cpus"]
    processes: int = int(DEFAULTS["processes"])
    output_bytes: int = int(DEFAULTS["outputKb"]) * _KiB
    workspace_bytes: int = int(DEFAULTS["workspaceMb"]) * _MiB

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if not value > 0:
                raise ValueError(f"limit {name} must be positive, got {value!r}")

    @property
    def container_memory_bytes(self) -> int:
        return self.memory_bytes + BOOTSTRAP_BYTES


MetricCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, kw_only=True)
class _Report:
    """What the bootstrap found once the script had ended, checked."""

    setup_error: str | None
    result: str | None
    result_error: str | None
    signal: int
    peak_memory_bytes: int
    oom_kills: int
    artifacts: tuple[Artifact, ...]
    artifacts_skipped: tuple[str, ...]


class _ReportReader:
    """Separates the bootstrap's report from the stderr around it.

    Bytes that may be the start of the mark are held back until the next read shows
    whether they are. Only the bootstrap knows the key, so the mark is its report
    wherever it appears; a header that is not a length within the cap, or a report
    cut short, leaves ``problem`` set. Anything after the report is ordinary stderr."""

    _TEXT, _HEADER, _PAYLOAD, _AFTER = range(4)

    def __init__(self, key: str) -> None:
        self._mark = REPORT_MARK + key.encode() + b" "
        self._state = self._TEXT
        self._held = b""
        self._payload = bytearray()
        self._length = 0
        self.payload: bytes | None = None
        self.problem: str | None = None

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
                    self.problem = "its header is not a length within the cap"
                    self._state = self._AFTER
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
        """The stream ended: held bytes are text, unless a report was cut off."""
        held, self._held = self._held, b""
        if self._state in (self._HEADER, self._PAYLOAD):
            self.problem = "it was cut short"
            return b""
        return held if self._state == self._TEXT else b""

    def _complete(self) -> None:
        self.payload = bytes(self._payload)
        self._payload = bytearray()
        self._state = self._AFTER


class _MetricLines:
    """Finds metric lines in stdout as it arrives, parses each and hands its values
    over; a metric line that breaks a rule calls ``on_broken`` with the rule, once."""

    def __init__(self, on_metric: MetricCallback | None, on_broken: Callable[[str], None]) -> None:
        self._on_metric = on_metric
        self._on_broken = on_broken
        self._prefix = METRIC_PREFIX.encode()
        self._line = bytearray()
        # The current line cannot be a metric: it starts otherwise.
        self._skip = False
        self._too_long = False
        self.count = 0
        self._closed = False
        # Held while a metric is handed over, so none is after close().
        self._lock = threading.Lock()

    def close(self) -> None:
        """No metric is handed over from now on (the run has returned)."""
        with self._lock:
            self._closed = True

    def feed(self, data: bytes) -> None:
        start = 0
        while True:
            end = data.find(b"\n", start)
            if not self._skip and not self._too_long:
                self._line += data[start:] if end < 0 else data[start:end]
                known = min(len(self._line), len(self._prefix))
                if self._line[:known] != self._prefix[:known]:
                    self._skip = True
                    self._line.clear()
                elif len(self._line) > MAX_METRIC_LINE_BYTES:
                    self._too_long = True
                    self._line.clear()
            if end < 0:
                return
            self._end_line()
            start = end + 1

    def end(self) -> None:
        """The output ended: a last line without a newline counts too."""
        self._end_line()

    def _end_line(self) -> None:
        line, skip, too_long = bytes(self._line), self._skip, self._too_long
        self._line.clear()
        self._skip = self._too_long = False
        if self._closed or skip or (len(line) < len(self._prefix) and not too_long):
            return
        self.count += 1
        what = f"metric line {self.count}"
        try:
            if too_long:
                raise RuleBroken(f"{what} is longer than {MAX_METRIC_LINE_BYTES} bytes")
            if self.count > MAX_METRICS:
                raise RuleBroken(f"more than {MAX_METRICS} metric lines")
            values = parse_object(line[len(self._prefix) :], what=what)
        except (RuleBroken, NotAnObject) as error:
            self._closed = True
            self._on_broken(str(error))
            return
        if self._on_metric is None:
            return
        with self._lock:
            if self._closed:
                return
            try:
                self._on_metric(values)
            except Exception as error:  # the caller's bug must not cost the trial its output
                logs.unexpected(log, "a metric callback failed", error)


class _Trial:
    """One run's state, shared by its caller's thread, its reader thread and cancel()."""

    def __init__(self, output_bytes: int, on_metric: MetricCallback | None) -> None:
        self.output_bytes = output_bytes
        self.container_id: str | None = None
        self.report_key = secrets.token_hex(16)
        self.report = _ReportReader(self.report_key)
        self.metrics = _MetricLines(on_metric, lambda rule: self.stop(Outcome.FAILED, rule))
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.truncated = False
        self.read_error: Exception | None = None
        # The outcome that made us stop the container, and why; the first one wins.
        self.stop_reason: Outcome | None = None
        self.stop_detail = ""
        # Set on a stop request and when the output ends, which is when the trial exits.
        self.wake = threading.Event()
        self._lock = threading.Lock()

    def stop(self, outcome: Outcome, detail: str = "") -> None:
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason, self.stop_detail = outcome, detail
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
            self.stop(Outcome.OUTPUT_LIMIT)
        kept += data
        return data


class Sandbox:
    """Runs trials in fresh containers labelled with ``owner``, one container per run.

    With ``ahead``, up to that many containers of the latest trial's kind (image and
    limits) are created before they are needed; with ``behind``, up to that many
    finished ones wait to be removed by a thread of their own (sandbox.prepared).
    ``close`` removes them. Without, each run creates and removes its own."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        image: str,
        owner: str,
        ahead: int = 0,
        behind: int = 0,
        on_container_started: Callable[[float], None] | None = None,
    ) -> None:
        """``on_container_started`` is told, from the run's thread, the seconds each
        run took from asking for its container until it was running (the runner's
        metrics)."""
        if not owner:
            raise ValueError("owner must not be empty: it tells our containers apart")
        self._on_container_started = on_container_started
        self._api = client.api
        self._image = image
        self._owner = owner
        self._trials: dict[str, _Trial] = {}
        self._lock = threading.Lock()
        self._containers = Prepared(self._create, self._remove, ahead=ahead, behind=behind)

    def close(self) -> None:
        """Stop preparing containers; remove those prepared and those left to remove."""
        self._containers.close()

    def run(
        self,
        trial_id: str,
        script: str,
        params_json: str,
        limits: Limits,
        *,
        image: str | None = None,
        on_metric: MetricCallback | None = None,
    ) -> TrialResult:
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
        except (docker.errors.DockerException, requests.RequestException, OSError) as error:
            return _sandbox_error(f"docker engine: {error}")
        finally:
            trial.metrics.close()
            with self._lock:
                del self._trials[trial_id]

    def cancel(self, trial_id: str) -> bool:
        """Kill the trial's container; its run() returns ``cancelled``. False if not running."""
        with self._lock:
            trial = self._trials.get(trial_id)
        if trial is None:
            return False
        trial.stop(Outcome.CANCELLED)
        # run() kills too once it sees the flag; killing here as well stops a trial at
        # once even while run() waits on the engine.
        if trial.container_id is not None:
            try:
                self._kill(trial.container_id)
            except (docker.errors.DockerException, requests.RequestException) as error:
                log.warning(
                    "could not kill a trial's container", execution=trial_id, error=str(error)
                )
        return True

    def remove_orphans(self) -> list[str]:
        """Force-remove our containers that neither run a trial here nor are prepared
        here (those of an earlier process); return their ids."""
        containers = self._api.containers(
            all=True, filters={"label": f"{OWNER_LABEL}={self._owner}"}
        )
        held = self._containers.held()
        removed = []
        for container in containers:
            if container["Id"] in held:
                continue
            self._remove(container["Id"])
            removed.append(container["Id"])
        return removed

    def _run(
        self,
        trial_id: str,
        trial: _Trial,
        script: str,
        params_json: str,
        limits: Limits,
        image: str,
    ) -> TrialResult:
        params = params_json or "{}"  # an unset message field arrives empty
        if len(script.encode()) > MAX_SCRIPT_BYTES:
            return _sandbox_error(f"the script is larger than {MAX_SCRIPT_BYTES} bytes")
        # The bootstrap hands these to the script in its environment.
        for name, value in (("PRISM_PARAMS", params), ("PRISM_TRIAL_ID", trial_id)):
            if len(name) + 1 + len(value.encode()) > MAX_ENV_STRING_BYTES:
                return _sandbox_error(
                    f"{name} is longer than the {MAX_ENV_STRING_BYTES} bytes Linux allows"
                )
        if trial.stop_reason is not None:
            return not_run(Outcome.CANCELLED, "cancelled before it started")

        asked = time.monotonic()
        container_id, attached = self._take((image, limits))
        trial.container_id = container_id
        try:
            # Named for its trial, so `docker ps` tells which runs where.
            self._api.rename(container_id, container_name(self._owner, trial_id))
            started = time.monotonic()
            self._api.start(container_id)
            if self._on_container_started is not None:
                self._on_container_started(time.monotonic() - asked)
            # The trial, on stdin: nothing of it runs before the bootstrap has read it
            # all, so nothing is written to the output yet.
            handed = json.dumps({"script": script, "params": params, "trial_id": trial_id})
            try:
                _send(attached, trial.report_key, handed.encode())
            except OSError:
                if trial.stop_reason is None:
                    raise
                # Killed by a stop as it started: the stop explains the end.
            reader = threading.Thread(
                target=trial.drain, args=(attached,), name=f"output of {trial_id}", daemon=True
            )
            reader.start()
            status = self._supervise(container_id, trial, started + limits.wall_seconds)
            duration = time.monotonic() - started
            reader.join(_GRACE_SECONDS)
            if reader.is_alive():
                _hang_up(attached)
                reader.join(_GRACE_SECONDS)
            result = self._result(container_id, trial, status, limits, duration)
        except BaseException:
            _hang_up(attached)
            # It may still run (the engine did not answer): removed now, not queued.
            self._containers.discard(container_id, now=True)
            raise
        _hang_up(attached)
        self._containers.discard(container_id)
        return result

    def _take(self, kind: tuple[str, Limits]) -> tuple[str, Any]:
        """A container for one trial, attached to: a prepared one, else a new one. One
        prepared but gone since (removed by hand, say) is passed over."""
        while True:
            container_id, prepared = self._containers.take(kind)
            try:
                return container_id, self._attach(container_id)
            except docker.errors.NotFound:
                self._containers.discard(container_id, now=True)  # forgotten: gone already
                if not prepared:
                    raise
            except BaseException:
                self._containers.discard(container_id)
                raise

    def _create(self, kind: Hashable) -> str:
        image, limits = cast(tuple[str, Limits], kind)
        created: dict[str, Any] = self._api.create_container(
            image,
            user=_NOBODY,
            environment=_ENVIRONMENT,
            labels={OWNER_LABEL: self._owner},
            # With stdin open and not detached, the SDK asks for StdinOnce too: the
            # container's stdin closes when the host has written the trial.
            stdin_open=True,
            host_config=self._host_config(limits),
        )
        return str(created["Id"])

    def _attach(self, container_id: str) -> Any:
        """The container's stdin, stdout and stderr, on one socket taken over from the
        engine's HTTP connection (Docker's attach). Attached before the start, so not a
        byte of output is missed; the stream ends when the container does. Reads block
        without a timeout: the wall-clock limit is kept by the caller, who hangs up."""
        attached = self._api.attach_socket(
            container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        )
        _socket_of(attached).settimeout(_GRACE_SECONDS)
        return attached

    def _supervise(self, container_id: str, trial: _Trial, deadline: float) -> dict[str, Any]:
        """Wait for the container to end, killing it on a stop request or at the deadline."""
        if not trial.wake.wait(max(deadline - time.monotonic(), 0.0)):
            trial.stop(Outcome.TIMED_OUT)
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
                trial.stop(Outcome.TIMED_OUT)

    def _result(
        self,
        container_id: str,
        trial: _Trial,
        status: dict[str, Any],
        limits: Limits,
        duration: float,
    ) -> TrialResult:
        """The execution as the host saw it, with what the trial said parsed."""
        code = int(status["StatusCode"])
        # The engine marks any process of the container killed for memory, a child
        # the script survived included.
        engine_oom = bool(self._api.inspect_container(container_id)["State"].get("OOMKilled"))
        report, report_problem = None, trial.report.problem
        if trial.report.payload is not None:
            try:
                report = _parse_report(trial.report.payload, limits)
            except RuleBroken as error:
                report_problem = str(error)
        outcome, reason, exit_code = self._verdict(
            trial, code, limits, report, report_problem, engine_oom
        )
        stderr = trial.stderr.decode("utf-8", errors="replace")
        result = None
        if outcome.ran_to_end and report is not None:
            try:
                result = _trial_result(report, trial.stdout)
            except RuleBroken as error:
                if outcome == Outcome.SUCCEEDED:
                    outcome, reason = Outcome.FAILED, f"broke a rule: {error}"
                else:
                    # Said after the verdict, so stderr's last line in a reason is the trial's.
                    stderr += f"prism: {error}\n"
        measured = TrialResult(
            outcome=outcome,
            reason=reason,
            exit_code=exit_code,
            stdout=trial.stdout.decode("utf-8", errors="replace"),
            stderr=stderr,
            output_truncated=trial.truncated,
            duration_seconds=duration,
            peak_memory_bytes=report.peak_memory_bytes if report is not None else 0,
        )
        if not (outcome.ran_to_end and report is not None):
            return measured
        try:
            return dataclasses.replace(
                measured,
                result=result,
                artifacts=report.artifacts,
                artifacts_skipped=report.artifacts_skipped,
            )
        except RuleBroken as error:
            # What the checks above let through and the result type refuses: never
            # an exception, the trial fails with the rule.
            return dataclasses.replace(
                measured, outcome=Outcome.FAILED, reason=f"broke a rule: {error}"
            )

    def _verdict(
        self,
        trial: _Trial,
        code: int,
        limits: Limits,
        report: _Report | None,
        report_problem: str | None,
        engine_oom: bool,
    ) -> tuple[Outcome, str, int]:
        """Outcome, reason and exit code: a stop we caused explains the exit first."""
        if trial.stop_reason == Outcome.TIMED_OUT:
            return Outcome.TIMED_OUT, f"killed after {limits.wall_seconds:g} s wall-clock limit", -1
        if trial.stop_reason == Outcome.OUTPUT_LIMIT:
            limit = f"{limits.output_bytes} bytes"
            return Outcome.OUTPUT_LIMIT, f"killed for writing more than {limit} of output", -1
        if trial.stop_reason == Outcome.CANCELLED:
            return Outcome.CANCELLED, "cancelled", -1
        if trial.stop_reason == Outcome.FAILED:
            return Outcome.FAILED, f"broke a rule: {trial.stop_detail}; the trial was stopped", -1
        if trial.read_error is not None:
            return Outcome.SANDBOX_ERROR, "lost the trial's output stream from the engine", -1
        if report is not None and report.setup_error is not None:
            reason = f"the sandbox could not prepare the trial: {report.setup_error}"
            return Outcome.SANDBOX_ERROR, reason, -1
        oom_kills = report.oom_kills if report is not None else 0
        if engine_oom or oom_kills:
            out_of_memory = (
                f"killed by the kernel: out of memory ({limits.memory_bytes} bytes limit)"
            )
            count = max(oom_kills, 1)
            reason = f"{count} process{'es' if count > 1 else ''} {out_of_memory}"
            if report is None or report.signal:
                return Outcome.OOM_KILLED, reason, -1
            return Outcome.OOM_KILLED, f"{reason}; the script then exited with code {code}", code
        if report_problem is not None:
            # Only the bootstrap writes the report and the trial cannot stop it midway;
            # what spoilt it is taken to be the trial's doing, which is never retried.
            reason = f"{_exit_reason(code, trial.stderr)}; the sandbox's report {report_problem}"
            return Outcome.FAILED, reason, code
        if report is None:
            if code == 0:
                return Outcome.SANDBOX_ERROR, "the sandbox's bootstrap ended without a report", -1
            if code == SETUP_FAILED:
                # The bootstrap gave up before any trial code ran (the trial did not
                # reach it whole, or an image of another version): the sandbox's doing.
                why = _exit_reason(code, trial.stderr)
                return Outcome.SANDBOX_ERROR, f"the sandbox could not prepare the trial: {why}", -1
            reason = _exit_reason(code, trial.stderr)
            return Outcome.FAILED, f"{reason} (the sandbox's bootstrap did not report)", code
        outcome = Outcome.SUCCEEDED if code == 0 else Outcome.FAILED
        return outcome, _exit_reason(code, trial.stderr), code

    def _host_config(self, limits: Limits) -> Any:
        memory = limits.container_memory_bytes
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
            # No init of the engine's: the bootstrap is PID 1 itself, which is what
            # keeps the trial from signalling it (see sandbox/bootstrap.py).
            init=False,
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
            log.warning("could not remove a container", container=container_id, error=str(error))


def container_name(owner: str, trial_id: str) -> str:
    """The name of the container running ``trial_id`` for ``owner``."""
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


def _trial_result(report: _Report, stdout: bytearray) -> dict[str, Any] | None:
    """The trial's result object: the result file when there is one, which must then
    hold a JSON object within the rules; else the last non-empty line of stdout when
    it is a JSON object, which must then be within the rules too. RuleBroken otherwise."""
    if report.result_error is not None:
        raise RuleBroken(f"{RESULT_FILE} {report.result_error}")
    if report.result is not None:
        try:
            return parse_object(report.result, what=RESULT_FILE)
        except NotAnObject as error:
            raise RuleBroken(str(error)) from None
    text = bytes(stdout).rstrip()
    line = text[text.rfind(b"\n") + 1 :]
    try:
        return parse_object(line, what="the result (the last line of stdout)")
    except NotAnObject:
        return None


def _parse_report(payload: bytes, limits: Limits) -> _Report:
    """The report, checked against every rule; RuleBroken (naming it) otherwise."""
    head, _, contents = payload.partition(b"\n")
    try:
        meta = json.loads(head)
    except (ValueError, RecursionError):
        raise RuleBroken("is not JSON") from None
    if not isinstance(meta, dict):
        raise RuleBroken("is not a JSON object")
    try:
        setup_error = _optional_text(meta["setup_error"], 500)
        result = meta["result"]
        if result is not None and not (
            isinstance(result, str)
            and len(result.encode("utf-8", "replace")) <= MAX_RESULT_FILE_BYTES
        ):
            raise RuleBroken(
                f"has a result that is not text of at most {MAX_RESULT_FILE_BYTES} bytes"
            )
        result_error = _optional_text(meta["result_error"], 200)
        numbers = [meta[name] for name in ("signal", "peak_memory_bytes", "oom_kills")]
        if not all(type(n) is int and 0 <= n < 2**63 for n in numbers):
            raise RuleBroken("has a count that is not a non-negative 64-bit integer")
        listed = meta["artifacts"]
        skipped = meta["artifacts_skipped"]
        if not (isinstance(listed, list) and isinstance(skipped, list)):
            raise RuleBroken("lists its artifacts in something other than a list")
        pairs, offset = [], 0
        for entry in listed:
            name, size = entry
            if not (type(size) is int and 0 <= size <= len(contents) - offset):
                raise RuleBroken("announces more artifact bytes than it holds")
            pairs.append((name, contents[offset : offset + size]))
            offset += size
        if offset != len(contents):
            raise RuleBroken("holds bytes no artifact claims")
        artifacts = checked_artifacts(pairs)
        if len(skipped) > MAX_SKIPPED_LISTED or not all(isinstance(x, str) for x in skipped):
            raise RuleBroken(f"lists more than {MAX_SKIPPED_LISTED} skipped files, or not text")
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, RuleBroken):
            raise
        raise RuleBroken("is not shaped as a report") from None
    signalled, peak, oom_kills = numbers
    return _Report(
        setup_error=setup_error,
        result=result,
        result_error=result_error,
        signal=signalled,
        peak_memory_bytes=min(peak, limits.container_memory_bytes),
        oom_kills=oom_kills,
        artifacts=artifacts,
        artifacts_skipped=tuple(skipped),
    )


def _optional_text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RuleBroken("has a note that is not text")
    return value[:limit]


def _read(output: Any, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := output.read(size - len(data))):
        data += chunk
    return data


def _socket_of(attached: Any) -> socket.socket:
    # attach_socket gives the socket's file object on a local engine, the socket itself
    # over TLS.
    return cast(socket.socket, getattr(attached, "_sock", attached))


def _send(attached: Any, key: str, trial: bytes) -> None:
    """Write the run's key and the trial, framed by its length, to the container's
    stdin; then wait for output without a timeout. The stream is not half-closed: a
    proxy or TLS between here and the engine may not pass that on."""
    sock = _socket_of(attached)
    sock.sendall(b"%s\n%d\n%s" % (key.encode(), len(trial), trial))
    sock.settimeout(None)


def _hang_up(attached: Any) -> None:
    sock = _socket_of(attached)
    if sock is None:  # hung up already: the file object let go of its socket
        return
    # A shutdown, unlike a close, also ends a read blocked in the reader thread.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        attached.close()
    sock.close()


def _sandbox_error(reason: str) -> TrialResult:
    return not_run(Outcome.SANDBOX_ERROR, reason)
