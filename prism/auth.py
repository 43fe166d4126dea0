"""Bearer-token auth of a gRPC service: a server interceptor that lets health through and
refuses every other call without the service's token."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"


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
