"""The public gateway: Envoy in front of the orchestrator.

Envoy terminates HTTP/JSON and gRPC on one port, checks the bearer token (failing closed while
none is configured), transcodes JSON to gRPC from the protos' google.api.http annotations and
answers every error it makes itself in the JSON shape of a transcoded google.rpc.Status. Its
configuration is rendered at start from the settings (``gateway.config``); the token stays out of
it. ``python -m gateway`` renders and execs Envoy; ``start``/``stop`` run it as a child process
(tests, local stacks). Its admin API is a Unix socket only the stack's user can open
(``admin_request``).
"""

from gateway.config import Address, ConfigError, Settings
from gateway.launch import GatewayError, admin_request, start, stop
from gateway.render import render, write_config

__all__ = [
    "Address",
    "ConfigError",
    "GatewayError",
    "Settings",
    "admin_request",
    "render",
    "start",
    "stop",
    "write_config",
]
