"""What the Prism gRPC services share: settings helpers, JSON logs, bearer-token
auth, error mapping and the serve-until-signalled lifecycle."""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import os
import secrets
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from prism.errors import Internal, InvalidArgument, PrismError
from prism.sqlite import SchemaError

HEALTH_PREFIX = "/grpc.health.v1.Health/"

# Keepalive lets a dead peer on a long-lived stream be noticed within seconds;
# the server side must accept pings that often.
CLIENT_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVER_KEEPALIVE = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def read_secret(name: str) -> str | None:
    """`NAME_FILE` (a path) wins over `NAME`; an empty value means unset."""
    path = os.environ.get(f"{name}_FILE")
    value = Path(path).read_text().strip() if path else os.environ.get(name, "").strip()
    return value or None


class _JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str) -> None:
    """JSON lines on stdout: the platform (a file, compose, journald) collects them."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter(service))
    logging.basicConfig(
        level=env("PRISM_LOG_LEVEL", "INFO").upper(), handlers=[handler], force=True
    )


def log(logger: logging.Logger, message: str, **fields: Any) -> None:
    logger.info(message, extra={"fields": fields})


# An unexpected error's line in the log: its text and where it was raised, cut to
# these sizes, because the exception may carry a trial's bytes.
_ERROR_TEXT_CHARS = 300
_ERROR_FRAMES = 6


def unexpected(logger: logging.Logger, message: str, error: BaseException, **fields: Any) -> str:
    """Log an unexpected error as one bounded line and return its id, which the answer
    carries instead of the error itself (no class names or trial data leave)."""
    error_id = secrets.token_hex(6)
    frames = traceback.extract_tb(error.__traceback__)[-_ERROR_FRAMES:]
    logger.error(
        message,
        extra={
            "fields": {
                **fields,
                "error_id": error_id,
                "error": f"{type(error).__name__}: {str(error)[:_ERROR_TEXT_CHARS]}",
                "at": [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in frames],
            }
        },
    )
    return error_id


def internal_error(error_id: str) -> str:
    return f"internal error (error id {error_id}); the service's log has the details"


def _aborting_handler(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that only aborts."""

    async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def stream_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    behaviour = stream_response if handler.response_streaming else unary_response
    return make(  # type: ignore[no-any-return]
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def bearer_token(authorization: str | bytes) -> bytes:
    """The token of an `authorization` value; b"" unless it is a Bearer one.
    The scheme is case-insensitive (RFC 7235), as the gateway reads it too."""
    value = authorization.encode() if isinstance(authorization, str) else authorization
    scheme, _, token = value.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else b""


class BearerTokenAuth(grpc.aio.ServerInterceptor):
    """Every method but health needs `authorization: Bearer <token>`.

    With no token configured the service is closed (UNAVAILABLE), never open.
    The comparison is constant-time."""

    def __init__(self, token: str | None, *, what: str) -> None:
        self._expected = token.encode() if token else None
        self._what = what

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler
        if self._expected is None:
            return _aborting_handler(
                handler, grpc.StatusCode.UNAVAILABLE, f"no {self._what} is configured"
            )
        given = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = bearer_token(value)
        if not hmac.compare_digest(given, self._expected):
            return _aborting_handler(
                handler, grpc.StatusCode.UNAUTHENTICATED, f"missing or wrong {self._what}"
            )
        return handler


def new_server(
    *,
    token: str | None,
    what: str,
    services: list[str],
    options: list[tuple[str, Any]] | None = None,
) -> tuple[grpc.aio.Server, HealthServicer]:
    """A grpc.aio server with bearer-token auth, keepalive, health (reporting
    nothing until `set_serving`) and reflection for `services`, health and
    reflection itself."""
    server = grpc.aio.server(
        interceptors=[BearerTokenAuth(token, what=what)],
        # No SO_REUSEPORT: a second process on a taken port fails to start
        # instead of silently sharing the port's connections with the first.
        options=[*SERVER_KEEPALIVE, ("grpc.so_reuseport", 0), *(options or [])],
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [
            *services,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return server, health


def status_details(error: PrismError) -> bytes:
    """The google.rpc.Status for an error, serialised for grpc-status-details-bin."""
    status = status_pb2.Status(code=error.code.value[0], message=str(error))
    if isinstance(error, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=rule)
                    for field, rule in error.violations
                ]
            )
        )
        status.details.append(detail)
    return status.SerializeToString()


async def abort(context: grpc.aio.ServicerContext, error: PrismError) -> None:
    await context.abort(
        error.code,
        str(error),
        trailing_metadata=(("grpc-status-details-bin", status_details(error)),),
    )


H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


def rpc(method: H) -> H:
    """Turn a PrismError raised by a unary handler into its gRPC status, and any other
    exception into INTERNAL with an error id (logged once, in one bounded line)."""
    logger = logging.getLogger("rpc")

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except PrismError as error:
            await abort(context, error)
        except grpc.aio.AbortError:
            raise  # the handler aborted with a status of its own
        except Exception as error:
            error_id = unexpected(logger, "a call failed", error, method=method.__name__)
            await abort(context, Internal(internal_error(error_id)))

    return wrapper  # type: ignore[return-value]


async def set_serving(health: HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    await health.set("", status)


async def serve_until_signalled(
    server: grpc.aio.Server,
    health: HealthServicer,
    *,
    grace: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then drain: NOT_SERVING first, so balancers
    stop sending work, then in-flight calls get `grace` seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    started = time.monotonic()
    await health.enter_graceful_shutdown()
    if on_stop is not None:
        await on_stop()
    await server.stop(max(0.0, grace - (time.monotonic() - started)))


S = TypeVar("S")


class ListenError(RuntimeError):
    """The service's address cannot be listened on."""


def listen(server: grpc.aio.Server, address: str) -> int:
    """Bind `address`; the port bound (for a ":0" address)."""
    try:
        return server.add_insecure_port(address)
    except RuntimeError as error:
        raise ListenError(
            f"cannot listen on {address}: the port is taken or the host is not local"
        ) from error


def run_service(
    service: str, load: Callable[[], S], serve: Callable[[S], Coroutine[Any, Any, None]]
) -> None:
    """Entry point of a service: JSON logs, settings from the environment
    (a bad one exits 2 with a message naming it), then serve until signalled."""
    configure_logging(service)
    try:
        settings = load()
    except (ValueError, OSError) as error:
        logging.getLogger(service).critical(f"cannot start: {error}")
        sys.exit(2)
    try:
        asyncio.run(serve(settings))
    except (SchemaError, ListenError) as error:
        logging.getLogger(service).critical(f"cannot start: {error}")
        sys.exit(2)
