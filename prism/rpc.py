"""How a handler's errors become gRPC statuses: a PrismError its own status (with
google.rpc details), anything else INTERNAL with an error id."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from prism import logs
from prism.errors import Internal, InvalidArgument, PrismError

log = logs.get("rpc")


# An answer's text travels in its trailers, which gRPC and Envoy cap (an answer over the
# cap is a reset: a 502): at most this many violations, and characters of each part.
MAX_VIOLATIONS = 20
MAX_MESSAGE_CHARS = 1000
MAX_FIELD_CHARS = 100
MAX_RULE_CHARS = 300


def _text(text: str, most: int) -> str:
    """``text`` cut to ``most`` characters, as protobuf and gRPC can carry it: an unpaired
    surrogate (which JSON can hold) shown escaped, as \\ud800."""
    if len(text) > most:
        text = text[: most - 1] + "…"
    return text.encode("utf-8", "backslashreplace").decode()


def status_details(error: PrismError) -> bytes:
    """The google.rpc.Status for an error, serialised for grpc-status-details-bin."""
    status = status_pb2.Status(
        code=error.code.value[0], message=_text(str(error), MAX_MESSAGE_CHARS)
    )
    if isinstance(error, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_text(field, MAX_FIELD_CHARS),
                        description=_text(rule, MAX_RULE_CHARS),
                    )
                    for field, rule in error.violations[:MAX_VIOLATIONS]
                ]
            )
        )
        status.details.append(detail)
    return status.SerializeToString()


async def abort(context: grpc.aio.ServicerContext, error: PrismError) -> None:
    try:
        message, details = _text(str(error), MAX_MESSAGE_CHARS), status_details(error)
    except Exception as failure:  # still an answer with an error id, never a class name
        error_id = logs.unexpected(log, "a status could not be built", failure)
        error = Internal(logs.internal_error(error_id))
        message, details = str(error), status_details(error)
    await context.abort(
        error.code, message, trailing_metadata=(("grpc-status-details-bin", details),)
    )


H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


def rpc(method: H) -> H:
    """Turn a PrismError raised by a unary handler into its gRPC status, and any other
    exception into INTERNAL with an error id (logged once, in one bounded line)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except PrismError as error:
            await abort(context, error)
        except grpc.aio.AbortError:
            raise  # the handler aborted with a status of its own
        except Exception as error:
            error_id = logs.unexpected(log, "a call failed", error, method=method.__name__)
            await abort(context, Internal(logs.internal_error(error_id)))

    return wrapper  # type: ignore[return-value]
