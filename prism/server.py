"""A service's grpc.aio server, assembled the same way for every service: bearer-token auth,
keepalive, health and reflection; then bound to its address and reported serving."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from prism.auth import BearerTokenAuth
from prism.keepalive import SERVER_KEEPALIVE


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


async def set_serving(health: HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    await health.set("", status)
