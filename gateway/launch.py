"""Start Envoy on a rendered configuration: in place (``python -m gateway``) or as a child process.

The API token reaches Envoy only through its environment (``PRISM_API_TOKEN``, read by the Lua
filter), never through its command line or configuration file. Envoy's admin API is a Unix socket
(``Settings.admin_socket``); ``admin_request`` speaks HTTP to it.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, NoReturn

from gateway.config import Settings
from gateway.render import write_config

TOKEN_VARIABLE = "PRISM_API_TOKEN"

# Envoy's own log lines (not the access log, which goes to stdout) as JSON on stderr, with the
# keys of prism.logs (Envoy writes its local time with its offset). Debug and trace levels would
# print request headers, credentials included, so the level stays at warning whatever
# PRISM_LOG_LEVEL says.
LOG_LEVEL = "warning"
LOG_FORMAT = (
    '{"time":"%Y-%m-%dT%T.%e%z","level":"%l","service":"gateway","logger":"envoy.%n",'
    '"message":"%j"}'
)


class GatewayError(RuntimeError):
    """Envoy could not be found, its admin socket is taken, or it did not become ready."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket (the admin API's)."""

    def __init__(self, path: Path, *, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self._path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def admin_request(settings: Settings, path: str, *, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Status and body of a GET of Envoy's admin API, through its Unix socket."""
    connection = _UnixHTTPConnection(settings.admin_socket, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def find_envoy() -> str:
    """The ``envoy`` next to the running Python (a virtualenv's), else the one on PATH."""
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which("envoy")
    if on_path is None:
        raise GatewayError("no envoy executable next to the Python interpreter or on PATH")
    return on_path


def envoy_command(config_path: Path, *, envoy: str | None = None) -> list[str]:
    return [
        envoy or find_envoy(),
        "--config-path",
        str(config_path),
        # Several gateways (tests, one per stack) may share a host; hot restart would make them
        # compete for the same shared-memory region.
        "--disable-hot-restart",
        "--log-level",
        LOG_LEVEL,
        "--log-format",
        LOG_FORMAT,
    ]


def envoy_environment(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the resolved token, or without any."""
    env = dict(os.environ if base is None else base)
    env.pop(TOKEN_VARIABLE, None)
    if settings.token:
        env[TOKEN_VARIABLE] = settings.token
    return env


def _refuse_a_live_admin_socket(settings: Settings) -> None:
    # Envoy replaces whatever file sits at the admin socket's path. A socket left by a gateway
    # that died is fine to replace, but taking a live one would leave that gateway running with
    # no admin API and fail only later, on the public port.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(settings.admin_socket))
    except OSError:
        return
    finally:
        probe.close()
    raise GatewayError(
        f"another gateway is running on this data folder: {settings.admin_socket} answers"
    )


def exec_envoy(settings: Settings) -> NoReturn:
    """Render the configuration and replace this process with Envoy (the pid stays the same)."""
    _refuse_a_live_admin_socket(settings)
    command = envoy_command(write_config(settings))
    os.execvpe(command[0], command, envoy_environment(settings))


def start(
    settings: Settings,
    *,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
    ready_timeout_s: float = 10.0,
    envoy: str | None = None,
) -> subprocess.Popen[bytes]:
    """Render the configuration, start Envoy as a child and wait until its admin API says it is
    ready (listeners bound). The caller owns the process; ``stop`` ends it."""
    _refuse_a_live_admin_socket(settings)
    command = envoy_command(write_config(settings), envoy=envoy)
    process = subprocess.Popen(
        command, env=envoy_environment(settings), stdout=stdout, stderr=stderr
    )
    try:
        wait_ready(settings, process, timeout_s=ready_timeout_s)
    except BaseException:
        stop(process)
        raise
    return process


def wait_ready(
    settings: Settings, process: subprocess.Popen[bytes], *, timeout_s: float = 10.0
) -> None:
    """Poll the admin ``/ready`` endpoint, through the admin socket, until it answers 200 (LIVE)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise GatewayError(f"envoy exited with status {process.returncode} before it was ready")
        try:
            status, _ = admin_request(settings, "/ready", timeout_s=1.0)
            if status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass  # not listening yet, or listening but not answering yet
        if time.monotonic() > deadline:
            raise GatewayError(
                f"envoy was not ready within {timeout_s} s (admin socket {settings.admin_socket})"
            )
        time.sleep(0.02)


def stop(process: subprocess.Popen[bytes], *, timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if Envoy has not exited within ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
