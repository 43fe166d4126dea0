"""A handler's error as the status the client gets: whatever the error holds, the answer
is its own status with details that serialise, or INTERNAL with an error id, never an
exception of the wrapper's (grpc would answer UNKNOWN naming its class)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from prism import rpc
from prism.errors import InvalidArgument, PrismError
from prism.rpc import rpc as handler


class Context:
    """What the wrapper uses of grpc.aio.ServicerContext: abort."""

    async def abort(self, code: grpc.StatusCode, message: str, trailing_metadata: Any) -> None:
        self.code, self.message = code, message
        [(key, value)] = trailing_metadata
        assert key == "grpc-status-details-bin"
        self.status = status_pb2.Status.FromString(value)
        message.encode()  # what grpc sends: UTF-8
        raise grpc.aio.AbortError()


def answer(error: Exception) -> Context:
    class Service:
        @handler
        async def Call(self, request: Any, context: Any) -> None:
            raise error

    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(Service().Call(None, context))
    return context


def test_an_unpaired_surrogate_in_a_violation_is_shown_escaped() -> None:
    context = answer(InvalidArgument("\ud800", 'unknown field "\udfff"'))
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert context.message == '\\ud800: unknown field "\\udfff"'
    request = error_details_pb2.BadRequest()
    assert context.status.details[0].Unpack(request)
    [violation] = request.field_violations
    assert (violation.field, violation.description) == ("\\ud800", 'unknown field "\\udfff"')


def test_a_status_that_cannot_be_built_is_internal_with_an_error_id() -> None:
    class Unwritable(PrismError):
        def __str__(self) -> str:
            raise RuntimeError("no")

    context = answer(Unwritable())
    assert context.code == grpc.StatusCode.INTERNAL
    assert "error id" in context.message and "RuntimeError" not in context.message
    assert context.status.message == context.message


def test_an_answer_stays_small_whatever_its_error_holds() -> None:
    # Trailers over gRPC's or Envoy's cap reset the call: the gateway answers 502.
    many = [(f"parameters.grid.{'é' * 500}{i}", "x" * 10_000) for i in range(2000)]
    context = answer(InvalidArgument(*many[0], *many[1:]))
    assert len(context.message) <= rpc.MAX_MESSAGE_CHARS
    assert len(context.status.SerializeToString()) < 16 * 1024
    request = error_details_pb2.BadRequest()
    assert context.status.details[0].Unpack(request)
    assert len(request.field_violations) == rpc.MAX_VIOLATIONS
    assert request.field_violations[0].field.startswith("parameters.grid.é")
