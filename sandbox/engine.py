"""Make sure a Docker engine answers, starting one only where none does.

A running engine is left alone. One started here is recorded by its pid in the run
directory, and only that one is ever stopped.
"""

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import docker.errors
import requests

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.1


class EngineError(RuntimeError):
    """No engine answers and none can be started here; the message says what to do."""


def engine_answers() -> bool:
    """True when the engine answers its ping. On a unix socket (the usual case)
    asked directly: the SDK leaks a socket each time it cannot connect, and
    this is called in a loop while an engine starts."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(5)
                conn.connect(host.removeprefix("unix://"))
                conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                status_line = conn.recv(64).split(b"\r\n", 1)[0]
        except OSError:
            return False
        return status_line.split(b" ")[1:2] == [b"200"]
    try:
        with contextlib.closing(docker.from_env(timeout=5)) as client:
            return bool(client.ping())
    except (docker.errors.DockerException, requests.RequestException):
        return False


def ensure_engine(run_dir: Path) -> int | None:
    """Return None if an engine answers, else start dockerd and return its pid."""
    if engine_answers():
        return None
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
        raise EngineError(
            "no Docker engine answers: start one (e.g. `sudo systemctl start docker`), "
            "or run this as root on Debian to have it installed and started"
        )
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "dockerd.log"
    # Detached through a shell that exits at once: dockerd is nobody's child
    # here (init reaps it), and in its own session, so neither the end of this
    # process nor a Ctrl-C in the starting terminal reaches it.
    launched = subprocess.run(
        ["sh", "-c", 'setsid dockerd </dev/null >>"$0" 2>&1 & echo $!', str(log_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(launched.stdout)
    (run_dir / "dockerd.pid").write_text(f"{pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not engine_answers():
        if not _is_running(pid) or time.monotonic() > deadline:
            stop_engine(run_dir)
            raise EngineError(f"dockerd did not come up; see {log_path}")
        time.sleep(_POLL_SECONDS)
    return pid


def stop_engine(run_dir: Path) -> bool:
    """Stop the dockerd recorded in run_dir, if it is still that dockerd; True if stopped."""
    pid_file = run_dir / "dockerd.pid"
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return False
    stopped = _is_dockerd(pid)
    if stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, STOP_TIMEOUT_SECONDS):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, STOP_TIMEOUT_SECONDS)
    pid_file.unlink(missing_ok=True)
    return stopped


def _is_dockerd(pid: int) -> bool:
    # The pid may have been reused since it was written down.
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return os.path.basename(argv0) == b"dockerd"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def _is_running(pid: int) -> bool:
    # Not our child: init reaps it, so a zombie counts as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def apt_install(package: str) -> None:
    """Install a Debian package (as root), its progress on stderr."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", package]
    for argv in (["apt-get", "update"], install):
        if subprocess.run(argv, env=env, stdout=sys.stderr, check=False).returncode != 0:
            raise EngineError(f"`{' '.join(argv)}` failed; install {package} by hand")


def _default_run_dir() -> Path:
    return Path(os.environ.get("PRISM_DATA_DIR", ".prism")) / "run"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.engine", description=__doc__)
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--run-dir", type=Path, default=None, help="default: $PRISM_DATA_DIR/run")
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir or _default_run_dir()
    if args.action == "stop":
        print("stopped" if stop_engine(run_dir) else "no engine of ours to stop")
        return 0
    try:
        pid = ensure_engine(run_dir)
    except EngineError as error:
        print(f"sandbox.engine: {error}", file=sys.stderr)
        return 1
    print("engine already running" if pid is None else f"started dockerd, pid {pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
