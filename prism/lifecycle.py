"""A service process's life: logs and settings first (a bad setting exits 2 naming it), then
serve until SIGTERM or SIGINT, then drain."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import grpc
from grpc_health.v1._async import HealthServicer

from prism import logs
from prism.server import ListenError
from prism.sqlite import SchemaError

S = TypeVar("S")


def run_service(
    service: str, load: Callable[[], S], serve: Callable[[S], Coroutine[Any, Any, None]]
) -> None:
    """Entry point of a service: JSON logs, settings from the environment
    (a bad one exits 2 with a message naming it), then serve until signalled."""
    log = logs.get(service)
    try:
        logs.configure(service)
        settings = load()
    except (ValueError, OSError) as error:
        log.critical(f"cannot start: {error}")
        sys.exit(2)
    try:
        asyncio.run(serve(settings))
    except (SchemaError, ListenError) as error:
        log.critical(f"cannot start: {error}")
        sys.exit(2)


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
