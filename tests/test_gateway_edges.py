"""Hostile request lines and headers through the gateway to a real orchestrator: every answer is
JSON naming the fault, none a 5xx, none left hanging; and what the gateway lets through, the
orchestrator takes, every time."""

from __future__ import annotations

import http.client
import json
from typing import Any

import grpc
import pytest

from gateway.render import HEADERS_TOO_LARGE, MAX_REQUEST_HEADERS_KIB
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.conftest import RunningStack

LIMIT = MAX_REQUEST_HEADERS_KIB * 1024
# Room for the request line and the headers the client and Envoy add themselves.
OTHER_HEADERS = 1024
# The orchestrator's old limits (gRPC's defaults) refused metadata at random from 8 KiB and always
# from 16 KiB, so a few tries at each size show any such limit behind the gateway.
TRIES = 10


def get(stack: RunningStack, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """Status and JSON body of a GET sent with the path exactly as given."""
    connection = http.client.HTTPConnection(stack.gateway, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in {"authorization": f"Bearer {stack.token}", **(headers or {})}.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        assert response.headers.get_content_type() == "application/json", response.headers
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_headers_of_60_kb_are_431_not_429(stack: RunningStack) -> None:
    status, body = get(stack, "/sweeps/x", {"x-big": "a" * 60_000})
    assert (status, body) == (431, {"code": 8, "message": HEADERS_TOO_LARGE})


@pytest.mark.parametrize(
    "headers",
    [
        {"x-big": "a" * (LIMIT - OTHER_HEADERS)},
        # Many small headers: gRPC counts 32 bytes more for each.
        {f"x-h{i:02}": "b" * 150 for i in range(90)},
    ],
    ids=["one-large", "many-small"],
)
def test_headers_the_gateway_lets_through_reach_the_orchestrator(
    stack: RunningStack, headers: dict[str, str]
) -> None:
    for _ in range(TRIES):
        status, body = get(stack, "/v1/sweeps/x", headers)
        assert (status, body["code"]) == (404, 5), body


def test_grpc_metadata_the_gateway_lets_through_reaches_the_orchestrator(
    stack: RunningStack,
) -> None:
    metadata = (*stack.metadata(), ("x-big", "a" * (LIMIT - OTHER_HEADERS)))
    with grpc.insecure_channel(stack.gateway) as channel:
        orchestrator = orchestrator_pb2_grpc.OrchestratorStub(channel)
        for _ in range(TRIES):
            with pytest.raises(grpc.RpcError) as failure:
                orchestrator.GetSweep(
                    orchestrator_pb2.GetSweepRequest(sweep_id="x"), metadata=metadata, timeout=30
                )
            assert failure.value.code() == grpc.StatusCode.NOT_FOUND, failure.value.details()
        with pytest.raises(grpc.RpcError) as failure:
            orchestrator.GetSweep(
                orchestrator_pb2.GetSweepRequest(sweep_id="x"),
                metadata=(*stack.metadata(), ("x-big", "a" * LIMIT)),
                timeout=30,
            )
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert failure.value.details() == HEADERS_TOO_LARGE


ID_ROUTES = [
    "/sweeps/{}",
    "/v1/sweeps/{}",
    "/v1/sweeps/{}/events",
    "/v1/sweeps/{}/trials/0/logs",
    "/v1/sweeps/{}/trials/0/artifacts",
    "/v1/sweeps/x/trials/0/artifacts/{}",
    "/v1/sweeps/x/trials/{}/logs",
]


@pytest.mark.parametrize("route", ID_ROUTES)
@pytest.mark.parametrize(
    ("segment", "status", "says"),
    [
        ("abc%00def", 400, "not allowed"),
        ("%ff%fe", 400, "not allowed"),
        ("a%ed%a0%80", 400, "not allowed"),
        ("abc%01def", 404, ""),
        ("abc%7f", 404, ""),
        ("abc%zz", 404, ""),
        ("abc%", 404, ""),
        ("a%2Fb", 404, ""),
        ("%e2%82%ac", 404, ""),
        ("x" * 5000, 404, ""),
        ("x" * LIMIT, 431, "KiB"),
    ],
    ids=[
        "nul",
        "not-utf8",
        "surrogate",
        "ctrl",
        "del",
        "bad-escape",
        "lone-percent",
        "slash",
        "euro",
        "long",
        "too-long",
    ],
)
def test_odd_ids_get_a_json_answer_naming_the_fault(
    stack: RunningStack, route: str, segment: str, status: int, says: str
) -> None:
    got, body = get(stack, route.format(segment))
    if route.endswith("trials/{}/logs") and status == 404:
        # The trial index is a number: anything else is the transcoder's 400.
        status, says = 400, "index"
    assert got == status, body
    assert isinstance(body["message"], str) and body["message"], body
    assert says in body["message"]


@pytest.mark.parametrize("path", ["/sweeps/../x", "/v1/sweeps/a/../../x", "/v1/sweeps/%2e%2e/x"])
def test_dot_segments_are_resolved_before_routing(stack: RunningStack, path: str) -> None:
    status, body = get(stack, path)
    assert status == 404 and body["message"], body


@pytest.mark.parametrize("query", ["pageToken=%ff", "pageToken=%00", "pageSize=%ff", "pageSize=x"])
def test_odd_query_values_are_400_json(stack: RunningStack, query: str) -> None:
    status, body = get(stack, f"/v1/sweeps?{query}")
    assert status == 400 and body["message"], body
