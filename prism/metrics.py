"""A service's Prometheus metrics over HTTP: ``GET /metrics`` on the address its
``PRISM_METRICS_ADDR`` names (empty: no endpoint), in the text format or OpenMetrics,
as the scraper's Accept header asks.

Each service keeps its metrics in a registry of its own (``new_registry``), never in
prometheus_client's global one: several services in one process (the fast tests) never
collide, and an endpoint shows its own service alone. Besides the service's ``prism_*``
families, a registry holds the client's standard ``process_*`` and ``python_*`` ones
(memory, CPU, open files, the interpreter): cheap, conventional, and what tells an
operator how the process itself fares.

Concurrency model: the endpoint is an asyncio server on the service's event loop, so a
scrape may first await what it needs (the orchestrator counts its store's rows on the
store's thread) and reads the services' in-memory state on the loop that changes it.
Rendering a registry takes well under a millisecond at Prism's cardinality.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder

from prism import logs
from prism.server import ListenError

log = logs.get("metrics")

PATH = "/metrics"
# A scrape's request line and headers, at most; how long a whole exchange may take.
MAX_REQUEST_BYTES = 8 * 1024
READ_SECONDS = 10.0
# Connections served at once; beyond, a new one is closed at once. Prometheus scrapes
# one at a time; this bounds what anyone who can reach the port can make it hold.
MAX_CONNECTIONS = 16
# Scrapes this close together share what was read before them (the orchestrator's
# counts come from its one database thread, which dispatch needs too).
FRESH_SECONDS = 1.0

BeforeScrape = Callable[[], Awaitable[None]]


def new_registry() -> CollectorRegistry:
    """A registry of the service's own, with the process and platform collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def parse_address(text: str, *, variable: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` too) as (host, port); None for an empty value (no
    endpoint). Raises ValueError naming the variable."""
    text = text.strip()
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{variable}={text!r}: expected host:port, or empty for no endpoint")
    return host, int(port)


class MetricsEndpoint:
    """``GET /metrics`` (and ``HEAD``) of one registry; 404 for any other path, 405 for any
    other method. One request per connection."""

    def __init__(
        self, registry: CollectorRegistry, *, before_scrape: BeforeScrape | None = None
    ) -> None:
        self._registry = registry
        self._before_scrape = before_scrape
        self._server: asyncio.Server | None = None
        self._open = 0
        self._refresh: asyncio.Task[None] | None = None
        self._refreshed_at = float("-inf")

    async def start(self, host: str, port: int) -> int:
        """Listen; the port bound (for port 0). Raises ListenError."""
        try:
            self._server = await asyncio.start_server(
                self._serve, host, port, limit=MAX_REQUEST_BYTES
            )
        except OSError as error:
            raise ListenError(
                f"cannot listen on {host}:{port} for /metrics: {error.strerror}"
            ) from error
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._open += 1
        try:
            async with asyncio.timeout(READ_SECONDS):
                await self._exchange(reader, writer)
        except TimeoutError:
            writer.transport.abort()  # too slow a client, either way
        finally:
            self._open -= 1

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return  # not a request we answer: the connection just closes
            method, path, accept = _request(head)
            if path != PATH:
                status, headers, body = 404, {"Content-Type": "text/plain"}, b"not found\n"
            elif method not in ("GET", "HEAD"):
                status, body = 405, b"method not allowed\n"
                headers = {"Content-Type": "text/plain", "Allow": "GET, HEAD"}
            else:
                status, headers, body = await self._scrape(accept)
            lines = [f"HTTP/1.1 {status} {_REASONS[status]}"]
            headers = {**headers, "Content-Length": str(len(body)), "Connection": "close"}
            lines += [f"{name}: {value}" for name, value in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _refreshed(self) -> None:
        """What the registry reads, brought up to date once for the scrapes that come
        together (they share one refresh in flight, or one done moments ago)."""
        if self._before_scrape is None:
            return
        loop = asyncio.get_running_loop()
        if self._refresh is None and loop.time() - self._refreshed_at > FRESH_SECONDS:
            self._refresh = asyncio.ensure_future(self._before_scrape())
        if self._refresh is not None:
            refresh = self._refresh
            try:
                await asyncio.shield(refresh)  # a client leaving does not cancel it
            finally:
                if refresh.done() and self._refresh is refresh:
                    self._refresh, self._refreshed_at = None, loop.time()

    async def _scrape(self, accept: str) -> tuple[int, dict[str, str], bytes]:
        try:
            await self._refreshed()
            encoder, content_type = choose_encoder(accept)
            return 200, {"Content-Type": content_type}, encoder(self._registry)
        except Exception as error:
            error_id = logs.unexpected(log, "rendering the metrics failed", error)
            return 500, {"Content-Type": "text/plain"}, f"error id {error_id}\n".encode()


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


def _request(head: bytes) -> tuple[str, str, str]:
    """(method, path without its query, Accept header) of a request's head."""
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    target = rest.partition(" ")[0]
    accept = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    return method, target.partition("?")[0], accept


async def start_endpoint(
    address: tuple[str, int] | None,
    registry: CollectorRegistry,
    *,
    before_scrape: BeforeScrape | None = None,
) -> MetricsEndpoint | None:
    """The service's endpoint, listening; None when ``address`` is None (disabled)."""
    if address is None:
        return None
    endpoint = MetricsEndpoint(registry, before_scrape=before_scrape)
    port = await endpoint.start(*address)
    log.info("metrics endpoint listening", address=f"{address[0]}:{port}", path=PATH)
    return endpoint
