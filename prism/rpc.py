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


def _utf8(text: str) -> str:
    """``text`` as protobuf and gRPC can carry it: an unpaired surrogate (which JSON can
    hold) shown escaped, as \\ud800."""
    return text.encode("utf-8", "backslashreplace").decode()


def status_details(error: PrismError) -> bytes:
    """The google.rpc.Status for an error, serialised for grpc-status-details-bin."""
    status = status_pb2.Status(code=error.code.value[0], message=_utf8(str(error)))
    if isinstance(error, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_utf8(field), description=_utf8(rule)
                    )
                    for field, rule in error.violations
                ]
            )
        )
        status.details.append(detail)
    return status.SerializeToString()


async def abort(context: grpc.aio.ServicerContext, error: PrismError) -> None:
    try:
        message, details = _utf8(str(error)), status_details(error)
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
