"""Render the Envoy configuration from the settings and write it, owner-only, under the data dir."""

from __future__ import annotations

import json
from pathlib import Path
from string import Template

from gateway import dashboard
from gateway.config import Settings
from prism.files import write_whole

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_PATH = PACKAGE_DIR / "envoy.yaml"
CHECKS_LUA_PATH = PACKAGE_DIR / "checks.lua"
DESCRIPTOR_PATH = PACKAGE_DIR / "prism.pb"

ADMIN_SOCKET_MODE = 0o600

# Largest request body accepted on the public listener, JSON or unary gRPC (streaming routes are
# exempt, see envoy.yaml); 413 beyond it.
MAX_REQUEST_BYTES = 1024 * 1024

# Largest request line plus headers accepted on the public listener; 431 (RESOURCE_EXHAUSTED for
# gRPC) beyond it, from checks.lua. It bounds the URL too, and leaves room for an artifact name
# (4096 characters) percent-encoded. The orchestrator accepts what passes with room to spare
# (orchestrator_svc/server.py).
MAX_REQUEST_HEADERS_KIB = 16
# Envoy's codecs stop a request over this before any filter runs: an HTTP/1.1 client still gets
# its 431, but an HTTP/2 stream is reset, which a gRPC client cannot read. Hence the lower limit
# above, in a filter, and this one only as a backstop against unbounded header sizes.
CODEC_REQUEST_HEADERS_KIB = 64

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
    431: 8,  # RESOURCE_EXHAUSTED: see HEADERS_TOO_LARGE
    500: 13,  # INTERNAL
    501: 12,  # UNIMPLEMENTED
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE: orchestrator down, or no token configured
    504: 4,  # DEADLINE_EXCEEDED: route timeout
}
UNKNOWN_CODE = 2

# checks.lua says the same to gRPC clients; here it also replaces the codec's own "Request Header
# Fields Too Large" above CODEC_REQUEST_HEADERS_KIB.
HEADERS_TOO_LARGE = (
    f"the request line and headers exceed the gateway's limit of {MAX_REQUEST_HEADERS_KIB} KiB"
)
# Headers a request may have; 431 beyond it (Envoy's default, made explicit).
MAX_REQUEST_HEADERS_COUNT = 100

# Replies Envoy makes before any filter runs, with an empty body or only the status's reason
# phrase: (status, CEL condition on the response code details or None, the message instead).
# %RESPONSE_CODE_DETAILS% is Envoy's own name for the fault.
DETAIL_MESSAGES: list[tuple[int, str | None, str]] = [
    (
        400,
        "response.code_details == 'path_normalization_failed'",
        "the request path holds a character that is not allowed, such as an encoded NUL",
    ),
    (400, "response.code_details == 'missing_host_header'", "the request has no Host header"),
    (
        404,
        "response.code_details == 'absolute_path_rejected'",
        "the request target must be a path that starts with /",
    ),
    (
        426,
        "response.code_details == 'low_version'",
        "HTTP/1.0 and older are not supported: use HTTP/1.1 or HTTP/2",
    ),
    (
        431,
        "response.code_details == 'http1.too_many_headers'",
        f"the request has more than {MAX_REQUEST_HEADERS_COUNT} headers",
    ),
    (431, None, HEADERS_TOO_LARGE),
    (
        501,
        "response.code_details == 'http1.invalid_transfer_encoding'",
        "the request's Transfer-Encoding is not supported: send chunked or a Content-Length",
    ),
    (
        400,
        "response.code_details.startsWith('http1.')",
        "the request is not valid HTTP/1.1 (%RESPONSE_CODE_DETAILS%)",
    ),
]


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
        "checks_lua": _checks_lua(),
        "max_request_bytes": MAX_REQUEST_BYTES,
        "max_direct_response_bytes": dashboard.MAX_FILE_BYTES,
        "codec_request_headers_kib": CODEC_REQUEST_HEADERS_KIB,
        "max_headers_count": MAX_REQUEST_HEADERS_COUNT,
        "sync_timeout": _duration(settings.sync_timeout_s),
        # A waiting RunSweep stream is silent until the answer; the idle limit must not cut it
        # before the route timeout does, yet still bounds a client that never ends its request.
        "sync_idle_timeout": _duration(settings.sync_timeout_s + 10),
    }
    # JSON scalars are valid YAML flow scalars: quoting every value this way means no setting can
    # change the structure of the document.
    substitutions = {name: json.dumps(value) for name, value in values.items()}
    substitutions["local_reply_mappers"] = _local_reply_mappers(indent=" " * 12)
    substitutions["dashboard_routes"] = dashboard.routes(indent=" " * 14)
    substitutions["metrics_listener"] = _metrics_listener(settings, indent="  ")
    substitutions["metrics_cluster"] = _metrics_cluster(settings, indent="  ")
    return Template(TEMPLATE_PATH.read_text(encoding="utf-8")).substitute(substitutions)


# The one admin path the metrics listener passes on: Envoy's statistics in Prometheus's format.
STATS_PATH = "/stats/prometheus"
METRICS_CLUSTER = "admin_stats"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"


def _metrics_listener(settings: Settings, *, indent: str) -> str:
    """The listener of PRISM_GATEWAY_METRICS_ADDR, or nothing. Its one route takes exactly
    ``GET /stats/prometheus`` (the whole :path, so no query either) to the admin socket;
    any other request is Envoy's 404, so no other admin path (``/quitquitquit``,
    ``/config_dump``, ...) and no method but GET can reach the admin API from it."""
    if settings.metrics is None:
        return ""
    route = {
        "name": "stats_prometheus",
        "match": {
            "path": STATS_PATH,
            "headers": [
                {"name": ":method", "string_match": {"exact": "GET"}},
                {"name": ":path", "string_match": {"exact": STATS_PATH}},
            ],
        },
        "route": {"cluster": METRICS_CLUSTER, "timeout": "10s"},
    }
    manager = {
        "@type": f"{_HCM}.HttpConnectionManager",
        "stat_prefix": "metrics",
        "codec_type": "AUTO",
        "request_headers_timeout": "10s",
        "stream_idle_timeout": "30s",
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
        "route_config": {
            "name": "metrics",
            "virtual_hosts": [{"name": "metrics", "domains": ["*"], "routes": [route]}],
        },
    }
    listener = {
        "name": "metrics",
        "address": {
            "socket_address": {
                "address": settings.metrics.host,
                "port_value": settings.metrics.port,
            }
        },
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
    return f"{indent}- {json.dumps(listener)}"


def _metrics_cluster(settings: Settings, *, indent: str) -> str:
    """The admin socket as an upstream, for the metrics listener's one route."""
    if settings.metrics is None:
        return ""
    endpoint = {"endpoint": {"address": {"pipe": {"path": str(settings.admin_socket)}}}}
    cluster = {
        "name": METRICS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": METRICS_CLUSTER,
            "endpoints": [{"lb_endpoints": [endpoint]}],
        },
    }
    return f"{indent}- {json.dumps(cluster)}"


def _checks_lua() -> str:
    # The header limit the Lua checks enforce and its message, defined above the file (see its
    # header). A JSON string of ASCII text is a Lua string literal too.
    definitions = (
        f"local MAX_HEADER_BYTES = {MAX_REQUEST_HEADERS_KIB * 1024}\n"
        f"local HEADERS_TOO_LARGE = {json.dumps(HEADERS_TOO_LARGE)}\n"
    )
    return definitions + CHECKS_LUA_PATH.read_text(encoding="utf-8")


def write_config(settings: Settings) -> Path:
    """Render and atomically replace ``settings.config_path`` (mode 0600, folder 0700)."""
    path = settings.config_path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir leaves an existing folder's mode alone, and this folder also guards the admin socket.
    path.parent.chmod(0o700)
    write_whole(path, render(settings).encode(), prefix=".envoy-", suffix=".yaml")
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
    # The first mapper that matches decides: the explicit messages first.
    rules: list[tuple[dict[str, object], int, str]] = []
    for status, condition, message in DETAIL_MESSAGES:
        matches = _status_filter("EQ", status)
        if condition is not None:
            matches = {"and_filter": {"filters": [matches, _cel_filter(condition)]}}
        rules.append((matches, LOCAL_REPLY_GRPC_CODES.get(status, UNKNOWN_CODE), message))
    always = {status for status, condition, _ in DETAIL_MESSAGES if condition is None}
    for status, code in LOCAL_REPLY_GRPC_CODES.items():
        if status not in always:
            rules.append((_status_filter("EQ", status), code, "%LOCAL_REPLY_BODY%"))
    rules.append((_status_filter("GE", 400), UNKNOWN_CODE, "%LOCAL_REPLY_BODY%"))
    lines = []
    for matches, code, message in rules:
        mapper = {
            "filter": {"and_filter": {"filters": [matches, http_client]}},
            "body_format_override": {"json_format": {"code": code, "message": message}},
        }
        lines.append(f"{indent}- {json.dumps(mapper)}")
    return "\n".join(lines)


def _cel_filter(expression: str) -> dict[str, object]:
    cel = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
    return {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {"@type": cel, "expression": expression},
        }
    }


def _status_filter(op: str, status: int) -> dict[str, object]:
    value = {"default_value": status, "runtime_key": f"prism.local_reply.{op.lower()}{status}"}
    return {"status_code_filter": {"comparison": {"op": op, "value": value}}}


def _header_filter(matcher: dict[str, object]) -> dict[str, object]:
    return {"header_filter": {"header": matcher}}
