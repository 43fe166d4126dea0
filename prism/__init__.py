"""Prism: one task in, parallel sandboxed trials out.

`prism.v1` holds the generated gRPC stubs; the other modules are what the
services share, and the tools around them. What every service is made of:

    environ     settings from the environment, secrets from files
    logs        the one logger: JSON lines, one key schema
    lifecycle   a service process: start, serve until signalled, drain
    server      its grpc.aio server: auth, keepalive, health, reflection
    auth        the bearer-token interceptor
    rpc         errors into gRPC statuses (the `rpc` decorator)
    errors      the errors handlers raise, each with its status
    keepalive   keepalive options, client and server side
    sqlite      a store's database, on its own thread

The client's names are here too, `prism.Client(target, token)` and the rest of
prism.client's public names, loaded on first use: this package's own import stays
standard-library only (prism.steps runs before the virtualenv exists).
"""

from __future__ import annotations

import importlib
from typing import Any

_CLIENT_NAMES = frozenset(
    {
        "Client", "AsyncClient", "SweepSpec", "Objective", "Limits", "Event",
        "grid", "random_search", "listed", "uniform", "loguniform", "integer", "choice",
        "search_space", "Search", "EarlyStopping", "Target",
        "ApiError", "InvalidArgument", "NotFound", "Unauthenticated", "Unavailable",
        "DeadlineExceeded", "Internal",
    }
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        return getattr(importlib.import_module("prism.client"), name)
    raise AttributeError(f"module 'prism' has no attribute {name!r}")
