"""Run one trial in a fresh, hardened Docker container.

Blocking code: the runner calls ``Sandbox.run`` from worker threads; one Sandbox, and
the DockerClient it holds, serve all of them at once. Each run takes two threads: the
caller's, which drives the container's life (create, attach, start, wait, kill,
remove), and a reader that drains the container's output to its end, because a kill
while nobody reads the attached output can hang the engine. The reader only reads and
raises flags; every kill is issued by the caller's thread or by ``cancel``.
"""

import contextlib
import dataclasses
import hashlib
import logging
import math
import re
import signal
import struct
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests
from docker.types import LogConfig, Ulimit

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
    container too: a full workspace must not leave the trial short of memory.

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
    """How a trial ended. ``exit_code`` is -1 when the process did not exit on its own."""

    outcome: str
    reason: str
    exit_code: int
    stdout: str
    stderr: str
    output_truncated: bool
    duration_seconds: float


class _Trial:
    """One run's state, shared by its caller's thread, its reader thread and cancel()."""

    def __init__(self, output_bytes: int) -> None:
        self.output_bytes = output_bytes
        self.container_id: str | None = None
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
                    self._keep(self.stderr if kind == 2 else self.stdout, data)
        except Exception as error:  # reported by run(): a reader must not die unseen
            self.read_error = error
        finally:
            self.wake.set()

    def _keep(self, kept: bytearray, data: bytes) -> None:
        room = self.output_bytes - len(self.stdout) - len(self.stderr)
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
            self.stop("output_limit")
        kept += data


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

    def run(self, trial_id: str, script: str, params_json: str, limits: Limits) -> Execution:
        """Run the script in a new container and remove it; never raises for the trial's
        misbehaviour, and reports engine failures as outcome ``sandbox_error``."""
        trial = _Trial(limits.output_bytes)
        with self._lock:
            if trial_id in self._trials:
                return _sandbox_error(f"trial {trial_id} is already running in this sandbox")
            self._trials[trial_id] = trial
        try:
            return self._run(trial_id, trial, script, params_json, limits)
        except (docker.errors.DockerException, requests.RequestException) as error:
            return _sandbox_error(f"docker engine: {error}")
        finally:
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
        self, trial_id: str, trial: _Trial, script: str, params_json: str, limits: Limits
    ) -> Execution:
        environment = {
            "PRISM_SCRIPT": script,
            "PRISM_PARAMS": params_json or "{}",  # an unset message field arrives empty
            "PRISM_TRIAL_ID": trial_id,
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
            return _not_run("cancelled", "cancelled before it started")

        container_id: str = self._api.create_container(
            self._image,
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
        outcome, reason, exit_code = self._verdict(container_id, trial, status, limits)
        return Execution(
            outcome=outcome,
            reason=reason,
            exit_code=exit_code,
            stdout=trial.stdout.decode("utf-8", errors="replace"),
            stderr=trial.stderr.decode("utf-8", errors="replace"),
            output_truncated=trial.truncated,
            duration_seconds=duration,
        )

    def _verdict(
        self, container_id: str, trial: _Trial, status: dict[str, Any], limits: Limits
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
        if code == 137 and self._oom_killed(container_id):
            limit = f"{limits.memory_bytes} bytes"
            return "oom_killed", f"killed by the kernel: out of memory ({limit} limit)", -1
        return ("succeeded" if code == 0 else "failed"), _exit_reason(code, trial.stderr), code

    def _oom_killed(self, container_id: str) -> bool:
        # Only asked on exit code 137: the wait's answer does not tell an OOM kill apart.
        state = self._api.inspect_container(container_id)["State"]
        return bool(state.get("OOMKilled"))

    def _host_config(self, limits: Limits) -> Any:
        memory = limits.memory_bytes + limits.workspace_bytes + _TMP_BYTES + _SHM_BYTES
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
            security_opt=["no-new-privileges"],
            pids_limit=limits.processes,
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
    return _not_run("sandbox_error", reason)


def _not_run(outcome: str, reason: str) -> Execution:
    return Execution(
        outcome=outcome,
        reason=reason,
        exit_code=-1,
        stdout="",
        stderr="",
        output_truncated=False,
        duration_seconds=0.0,
    )
