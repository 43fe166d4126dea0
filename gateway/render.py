"""Render the Envoy configuration from the settings and write it, owner-only, under the data dir."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from string import Template

from gateway.config import Settings

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_PATH = PACKAGE_DIR / "envoy.yaml"
AUTH_LUA_PATH = PACKAGE_DIR / "auth.lua"
DESCRIPTOR_PATH = PACKAGE_DIR / "prism.pb"

ADMIN_SOCKET_MODE = 0o600

# Largest request body accepted on the public listener, JSON or unary gRPC (streaming routes are
# exempt, see envoy.yaml); 413 beyond it.
MAX_REQUEST_BYTES = 1024 * 1024

# The gRPC code reported in the JSON body of each reply Envoy makes itself, so that these bodies
# read like the transcoded google.rpc.Status a backend error produces. Other error statuses get
# UNKNOWN_CODE.
LOCAL_REPLY_GRPC_CODES: dict[int, int] = {
    400: 3,  # INVALID_ARGUMENT: body or query the transcoder cannot map
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND: no such route
    405: 12,  # UNIMPLEMENTED
    408: 4,  # DEADLINE_EXCEEDED: the client was too slow to send its request
    413: 8,  # RESOURCE_EXHAUSTED: body over MAX_REQUEST_BYTES (gRPC uses the same code)
    429: 8,  # RESOURCE_EXHAUSTED
    431: 8,  # RESOURCE_EXHAUSTED: headers too large
    500: 13,  # INTERNAL
    501: 12,  # UNIMPLEMENTED
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE: orchestrator down, or no token configured
    504: 4,  # DEADLINE_EXCEEDED: route timeout
}
UNKNOWN_CODE = 2


def render(settings: Settings) -> str:
    """The Envoy configuration (YAML) for these settings. It never contains the token."""
    orchestrator = settings.orchestrator
    values = {
        "admin_socket": str(settings.admin_socket),
        "admin_socket_mode": ADMIN_SOCKET_MODE,
        "listen_host": settings.listen.host,
        "listen_port": settings.listen.port,
        "orchestrator_host": orchestrator.host,
        "orchestrator_port": orchestrator.port,
        "orchestrator_discovery": "STATIC" if orchestrator.is_ip else "STRICT_DNS",
        "descriptor_path": str(DESCRIPTOR_PATH),
        "auth_lua": AUTH_LUA_PATH.read_text(encoding="utf-8"),
        "max_request_bytes": MAX_REQUEST_BYTES,
        "sync_timeout": _duration(settings.sync_timeout_s),
        # A waiting RunSweep stream is silent until the answer; the idle limit must not cut it
        # before the route timeout does, yet still bounds a client that never ends its request.
        "sync_idle_timeout": _duration(settings.sync_timeout_s + 10),
    }
    # JSON scalars are valid YAML flow scalars: quoting every value this way means no setting can
    # change the structure of the document.
    substitutions = {name: json.dumps(value) for name, value in values.items()}
    substitutions["local_reply_mappers"] = _local_reply_mappers(indent=" " * 12)
    return Template(TEMPLATE_PATH.read_text(encoding="utf-8")).substitute(substitutions)


def write_config(settings: Settings) -> Path:
    """Render and atomically replace ``settings.config_path`` (mode 0600, folder 0700)."""
    path = settings.config_path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir leaves an existing folder's mode alone, and this folder also guards the admin socket.
    path.parent.chmod(0o700)
    text = render(settings)
    # mkstemp creates the file 0600, so it is never readable by others, not even briefly.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".envoy-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _local_reply_mappers(*, indent: str) -> str:
    # A native gRPC client gets Envoy's own trailers-only status (grpc-message is the plain
    # text), so the JSON bodies are only for HTTP clients: a request that is not gRPC, or one the
    # transcoder turned into gRPC (it leaves x-envoy-original-path behind). Successful direct
    # responses (/healthz) are local replies too and are left alone.
    http_client = {
        "or_filter": {
            "filters": [
                _header_filter(
                    {
                        "name": "content-type",
                        "string_match": {"prefix": "application/grpc"},
                        "invert_match": True,
                        "treat_missing_header_as_empty": True,
                    }
                ),
                _header_filter({"name": "x-envoy-original-path", "present_match": True}),
            ]
        }
    }
    lines = []
    rules = [("EQ", status, code) for status, code in LOCAL_REPLY_GRPC_CODES.items()]
    rules.append(("GE", 400, UNKNOWN_CODE))
    for op, status, code in rules:
        mapper = {
            "filter": {"and_filter": {"filters": [_status_filter(op, status), http_client]}},
            "body_format_override": {
                "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%"},
            },
        }
        lines.append(f"{indent}- {json.dumps(mapper)}")
    return "\n".join(lines)


def _status_filter(op: str, status: int) -> dict[str, object]:
    value = {"default_value": status, "runtime_key": f"prism.local_reply.{op.lower()}{status}"}
    return {"status_code_filter": {"comparison": {"op": op, "value": value}}}


def _header_filter(matcher: dict[str, object]) -> dict[str, object]:
    return {"header_filter": {"header": matcher}}
