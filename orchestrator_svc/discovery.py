"""Runners found by DNS: every address of one name is a runner (PRISM_RUNNERS_DNS).

On Docker Swarm, `tasks.<service>` resolves to the address of each running task of the
service, so scaling the runners' service adds and removes addresses. The orchestrator
resolves the name again every few seconds; a runner says its own name in its Hello
(see RunnerLink), which keys its trials in the store, so a replica rescheduled with a new
address but the same name (and volume) takes its trials back.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

# A name that does not exist (a service scaled to nothing has no tasks to resolve) is
# an answer: no runners. Any other failure (a DNS server not answering) says nothing
# about the runners, so the ones known are kept.
NO_SUCH_NAME = (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))


async def resolve(host: str, port: int) -> set[str] | None:
    """The `host:port` addresses the name has now; None when that cannot be known."""
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return set() if error.errno in NO_SUCH_NAME else None
    return {address(str(info[4][0]), port) for info in found}


def address(ip: str, port: int) -> str:
    """How gRPC takes a host and port: an IPv6 address in brackets."""
    return f"[{ip}]:{port}" if ipaddress.ip_address(ip).version == 6 else f"{ip}:{port}"
