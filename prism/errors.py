"""Errors the services raise, each carrying the gRPC status it maps to.

    PrismError                 INTERNAL
    ├── InvalidArgument        INVALID_ARGUMENT (names the field and the rule)
    ├── NotFound               NOT_FOUND
    ├── Unavailable            UNAVAILABLE
    └── DeadlineExceeded       DEADLINE_EXCEEDED

Handlers raise these; `prism.service.rpc` turns them into a rich gRPC status
(google.rpc.Status with details), which the gateway renders as JSON.
"""

from __future__ import annotations

import grpc


class PrismError(Exception):
    code = grpc.StatusCode.INTERNAL


class InvalidArgument(PrismError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class NotFound(PrismError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(PrismError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(PrismError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
