"""The gateway's settings, read from the environment in one place.

Variables (all optional):

- ``PRISM_GATEWAY_ADDR`` (``127.0.0.1:8080``): the public listener, HTTP/JSON and gRPC.
- ``PRISM_ORCHESTRATOR_ADDR`` (``127.0.0.1:50051``): the upstream, plain-text HTTP/2 gRPC. A host
  name is resolved by Envoy (DNS, IPv4 preferred).
- ``PRISM_API_TOKEN_FILE`` / ``PRISM_API_TOKEN``: the bearer token. When the file variable is set it
  wins (the rule of ``prism.environ.read_secret``, so the gateway and the orchestrator always agree
  on the token), and a file that cannot be read stops the start. Surrounding whitespace is
  stripped; what remains must be printable ASCII without spaces. No token (unset or empty) is not
  an error: the gateway then answers 503 on every route (fail closed).
- ``PRISM_DATA_DIR`` (``.prism``): the rendered configuration is written, mode 0600, to
  ``gateway/envoy.yaml`` below it, and Envoy's admin API listens on the Unix socket
  ``gateway/admin.sock`` (mode 0600, in that 0700 folder). The admin API is unauthenticated and
  can drain listeners, change log levels and stop the server, so only the stack's own user may
  open it: there is no TCP admin port. A socket path holds at most 107 bytes, so a data folder
  whose socket path would be longer is refused (a shorter ``PRISM_DATA_DIR`` fixes it).
- ``PRISM_GATEWAY_METRICS_ADDR`` (empty: none): a second listener, apart from the public one,
  that answers ``GET /stats/prometheus`` (Envoy's own statistics, for Prometheus) and nothing
  else, with no token: it reaches the admin socket through a cluster of its own, and every other
  path or method is 404, so none of the admin API is reachable from it.
- ``PRISM_GATEWAY_SYNC_TIMEOUT`` (``300``, seconds): the route timeout of the synchronous
  ``POST /`` (RunSweep). The orchestrator gives up waiting at 290 s and answers DEADLINE_EXCEEDED
  with the sweep id, so the gateway's limit sits just above it and fires only when the orchestrator
  is stuck.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATA_DIR = ".prism"
DEFAULT_SYNC_TIMEOUT_S = 300.0
# sun_path in struct sockaddr_un is 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH_BYTES = 107


class ConfigError(ValueError):
    """A setting is malformed; the message names the variable."""


@dataclass(frozen=True)
class Address:
    """A host (IP literal or DNS name) and a TCP port."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, variable: str) -> Address:
        """Parse ``host:port`` or ``[v6]:port``."""
        host, sep, port_text = text.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"{variable}={text!r}: expected host:port with a port in 1..65535")
        return cls(host=host, port=int(port_text))

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


DEFAULT_GATEWAY_ADDR = Address("127.0.0.1", 8080)
DEFAULT_ORCHESTRATOR_ADDR = Address("127.0.0.1", 50051)


@dataclass(frozen=True)
class Settings:
    """Everything the gateway needs to render its configuration and start Envoy."""

    listen: Address = DEFAULT_GATEWAY_ADDR
    orchestrator: Address = DEFAULT_ORCHESTRATOR_ADDR
    # Never printed: repr=False keeps it out of tracebacks and logs.
    token: str | None = field(default=None, repr=False)
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    sync_timeout_s: float = DEFAULT_SYNC_TIMEOUT_S
    # The listener of Envoy's statistics for Prometheus; None: no such listener.
    metrics: Address | None = None

    def __post_init__(self) -> None:
        socket_bytes = len(os.fsencode(self.admin_socket))
        if socket_bytes > MAX_SOCKET_PATH_BYTES:
            raise ConfigError(
                f"PRISM_DATA_DIR={str(self.data_dir)!r}: the gateway's admin socket"
                f" {str(self.admin_socket)!r} would be {socket_bytes} bytes long, and a Unix socket"
                f" path holds at most {MAX_SOCKET_PATH_BYTES}: choose a shorter data folder"
            )
        if not 0 < self.sync_timeout_s <= 24 * 3600:
            raise ConfigError(
                f"PRISM_GATEWAY_SYNC_TIMEOUT={self.sync_timeout_s}: expected seconds in (0, 86400]"
            )
        token = (self.token or "").strip()
        if not all("!" <= char <= "~" for char in token):
            # Anything else could never arrive intact in an Authorization header.
            raise ConfigError("the API token must be printable ASCII without spaces")
        object.__setattr__(self, "token", token or None)

    @property
    def config_path(self) -> Path:
        """Where the rendered Envoy configuration is written."""
        return self.data_dir / "gateway" / "envoy.yaml"

    @property
    def admin_socket(self) -> Path:
        """The Unix socket of Envoy's admin API, beside the configuration."""
        return self.data_dir / "gateway" / "admin.sock"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        sync_text = env.get("PRISM_GATEWAY_SYNC_TIMEOUT", "").strip()
        try:
            sync_timeout_s = float(sync_text) if sync_text else DEFAULT_SYNC_TIMEOUT_S
        except ValueError:
            raise ConfigError(
                f"PRISM_GATEWAY_SYNC_TIMEOUT={sync_text!r}: expected a number of seconds"
            ) from None
        return cls(
            listen=_address(env, "PRISM_GATEWAY_ADDR", DEFAULT_GATEWAY_ADDR),
            orchestrator=_address(env, "PRISM_ORCHESTRATOR_ADDR", DEFAULT_ORCHESTRATOR_ADDR),
            token=_read_token(env),
            data_dir=Path(env.get("PRISM_DATA_DIR") or DEFAULT_DATA_DIR),
            sync_timeout_s=sync_timeout_s,
            metrics=_optional_address(env, "PRISM_GATEWAY_METRICS_ADDR"),
        )


def _address(env: Mapping[str, str], variable: str, default: Address) -> Address:
    text = env.get(variable, "").strip()
    return Address.parse(text, variable=variable) if text else default


def _optional_address(env: Mapping[str, str], variable: str) -> Address | None:
    text = env.get(variable, "").strip()
    return Address.parse(text, variable=variable) if text else None


def _read_token(env: Mapping[str, str]) -> str:
    token_file = env.get("PRISM_API_TOKEN_FILE")
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            message = f"PRISM_API_TOKEN_FILE={token_file!r}: cannot read it: {exc}"
            raise ConfigError(message) from None
        return token
    return env.get("PRISM_API_TOKEN", "")
