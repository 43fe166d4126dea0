"""Errors the services raise, each carrying the gRPC status it maps to.

    PrismError                 INTERNAL
    ├── Internal               INTERNAL (a generic message with an error id)
    ├── InvalidArgument        INVALID_ARGUMENT (names the field and the rule)
    ├── NotFound               NOT_FOUND
    ├── Unavailable            UNAVAILABLE
    └── DeadlineExceeded       DEADLINE_EXCEEDED

Handlers raise these; `prism.rpc.rpc` turns them into a rich gRPC status
(google.rpc.Status with details), which the gateway renders as JSON.
"""

from __future__ import annotations

import grpc


class PrismError(Exception):
    code = grpc.StatusCode.INTERNAL


class Internal(PrismError):
    """Something unexpected: the message carries an error id, never the error."""


class InvalidArgument(PrismError):
    """One or more fields break a rule; each (field, rule) becomes a
    google.rpc.BadRequest field violation."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, rule: str, *more: tuple[str, str]) -> None:
        self.violations = [(field, rule), *more]
        super().__init__("; ".join(f"{f}: {r}" for f, r in self.violations))


class NotFound(PrismError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(PrismError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(PrismError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
