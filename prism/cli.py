"""The `prism` command line: the public API over gRPC.

    prism landing
    prism run "tune the learning rate"
    prism status SWEEP_ID

It talks to the gateway (PRISM_ADDRESS, default 127.0.0.1:8080; the
orchestrator's own port works too) with the token from PRISM_API_TOKEN,
PRISM_API_TOKEN_FILE or, failing both, $PRISM_DATA_DIR/api_token (what
`make up` generates). Replies are printed as JSON.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from prism.client import default_token
from prism.environ import env
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc


def call(args: argparse.Namespace, stub: orchestrator_pb2_grpc.OrchestratorStub) -> Message:
    metadata = (("authorization", f"Bearer {args.token or ''}"),)
    reply: Message
    if args.command == "landing":
        reply = stub.GetLanding(orchestrator_pb2.GetLandingRequest(), metadata=metadata, timeout=30)
    elif args.command == "run":
        reply = stub.RunSweep(
            orchestrator_pb2.RunSweepRequest(task=args.task), metadata=metadata, timeout=300
        )
    else:
        reply = stub.GetSweepStatus(
            orchestrator_pb2.GetSweepStatusRequest(sweep_id=args.sweep_id),
            metadata=metadata,
            timeout=30,
        )
    return reply


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prism", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=env("PRISM_ADDRESS", "127.0.0.1:8080"))
    parser.add_argument("--token", default=None, help="default: from the environment")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("landing", help="what the service is and how to use it")
    run = commands.add_parser("run", help="run the default sweep for a task and wait")
    run.add_argument("task")
    status = commands.add_parser("status", help="a sweep's progress and results")
    status.add_argument("sweep_id")
    args = parser.parse_args(argv)
    args.token = args.token or default_token()
    with grpc.insecure_channel(args.address) as channel:
        try:
            reply = call(args, orchestrator_pb2_grpc.OrchestratorStub(channel))
        except grpc.RpcError as error:
            code = error.code()  # type: ignore[attr-defined]
            sys.exit(f"prism: {code.name.lower()}: {error.details()}")  # type: ignore[attr-defined]
    print(json_format.MessageToJson(reply, always_print_fields_with_no_presence=True, indent=2))


if __name__ == "__main__":
    main()
