"""How soon the orchestrator's channel to a runner sees the runner again after
an absence, against a channel with gRPC's default reconnect backoff, side by
side in one run.

    .venv/bin/python bench/reconnect.py [--absences 20 40 60 90]

A gRPC server stands in for the runner: it goes away for each absence and
comes back on the same port while the channel is asked every 0.1 s, as the
orchestrator's link asks; each channel and absence runs in a process of its
own, all at once. Prints, per absence, the seconds from the server's return to
each channel's first answer, and their ratio. gRPC's backoff is jittered, so
single figures vary; the defaults' grow with the absence, ours stay near 2 s.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from orchestrator_svc.link import CHANNEL_OPTIONS
from prism.stack import free_ports

POLL_SECONDS = 0.1
GIVE_UP_SECONDS = 240


def serve(address: str) -> grpc.Server:
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(2), options=[("grpc.so_reuseport", 0)]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(address)
    server.start()
    return server


class Prober:
    """Asks one channel every POLL_SECONDS; remembers when it last answered."""

    def __init__(self, address: str, options: Sequence[tuple[str, int]]) -> None:
        self.channel = grpc.insecure_channel(address, options=options)
        self.stub = health_pb2_grpc.HealthStub(self.channel)
        self.answered_at = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stopping.wait(POLL_SECONDS):
            try:
                self.stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                self.answered_at = time.monotonic()
            except grpc.RpcError:
                pass

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.channel.close()


def measure(kind: str, absence: float) -> float:
    """Seconds from the server's return to the channel's first answer."""
    address = f"127.0.0.1:{free_ports(1)[0]}"
    server = serve(address)
    prober = Prober(address, CHANNEL_OPTIONS if kind == "orchestrator" else [])
    while not prober.answered_at:
        time.sleep(POLL_SECONDS)
    server.stop(0).wait()
    time.sleep(absence)
    server = serve(address)
    back = time.monotonic()
    while prober.answered_at <= back and time.monotonic() - back < GIVE_UP_SECONDS:
        time.sleep(POLL_SECONDS)
    server.stop(0).wait()
    prober.close()
    # A channel still silent at the end counts as GIVE_UP_SECONDS.
    return prober.answered_at - back if prober.answered_at > back else float(GIVE_UP_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--absences", type=float, nargs="+", default=[20, 40, 60, 90])
    parser.add_argument("--child", nargs=2, metavar=("KIND", "ABSENCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(measure(args.child[0], float(args.child[1])))
        return
    # One process per channel: two channels to one address in one process
    # share a connection, and with it one reconnect backoff.
    runs = {
        (kind, absence): subprocess.Popen(
            [sys.executable, __file__, "--child", kind, str(absence)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for absence in args.absences
        for kind in ("orchestrator", "default")
    }
    seconds = {key: float(proc.communicate()[0]) for key, proc in runs.items()}
    for absence in args.absences:
        mine, theirs = seconds["orchestrator", absence], seconds["default", absence]
        print(
            f"away {absence:g} s: orchestrator channel back after {mine:.1f} s, "
            f"gRPC defaults after {theirs:.1f} s (ratio {mine / max(theirs, 1e-3):.2f})"
        )


if __name__ == "__main__":
    main()
