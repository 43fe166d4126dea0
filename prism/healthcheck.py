"""gRPC health check of one service: exit 0 when it reports SERVING.

    python -m prism.healthcheck HOST:PORT

For container healthchecks (compose.yaml) and for `prism.stack`, which waits
on it. Health needs no token, so this reveals nothing a caller could not see.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def serving(address: str, *, timeout: float = 1.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(0 if serving(sys.argv[1]) else 1)


if __name__ == "__main__":
    main()
