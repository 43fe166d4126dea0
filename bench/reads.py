"""Status reads through the gateway under a bounded loopback load, beside Envoy's own
/healthz in the same run; and how much that load slows a sweep running meanwhile.

    .venv/bin/python bench/reads.py [--rounds 3] [--seconds 8] [--sweeps 5] [--rate 2000]

Needs `wrk` (Debian: `apt-get install wrk`), a Docker engine and the sandbox image
(built if missing). The stack is real: Envoy, the orchestrator, three runner processes,
SQLite, the engine; it runs on free loopback ports in a temporary folder and is stopped
at the end.

Each read route is loaded with wrk (2 threads, 16 connections, `--seconds` each) on a
finished default sweep and on a sweep whose three trials sleep (running throughout),
round after round; printed: the median req/s, p50 and p99 of each route, its share of
the /healthz floor, and the target (2,000 req/s). Then the default sweep (`POST /`) is
timed `--sweeps` times with no load and as often while `GET /v1/sweeps/{running}` is
read at `--rate` requests/s (the target rate: wrk's connections paced by a delay, since
an unpaced load on two cores starves the sweep of CPU whatever a read costs),
interleaved; printed: their medians, their ratio (target: at most 1.10) and the rate
the reads reached.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from prism.stack import GATEWAY, Layout, Stack
from sandbox.images import ensure_sandbox_image

# The sandbox image under a tag of this benchmark's: `latest` is shared, and another
# checkout may build it from other code while this one runs.
IMAGE_TAG = "prism-sandbox:bench-reads"
TARGET_RPS = 2000
TARGET_SLOWDOWN = 1.10
THREADS, CONNECTIONS = 2, 16
SLEEPER = {
    "task": "sleeps while it is read",
    "script": "import time\ntime.sleep(3600)\n",
    "parameters": {"grid": {"i": [0, 1, 2]}},
    "limits": {"wallSeconds": 3600},
}
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    # Requests wrk gave up on after its 2 s (a starved machine), not errors.
    timeouts: int = 0


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def wrk_command(url: str, token: str, seconds: float, *, script: Path | None = None) -> list[str]:
    return [
        "wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency",
        "-H", f"Authorization: Bearer {token}", *(["-s", str(script)] if script else []), url,
    ]  # fmt: skip


def paced(folder: Path, rate: float) -> Path:
    """A wrk script that has each connection wait between its requests, for about
    `rate` requests/s in all (a little less: each request's own time adds)."""
    script = folder / "paced.lua"
    script.write_text(f"function delay()\n  return {CONNECTIONS * 1000 / rate:.3f}\nend\n")
    return script


def wrk(url: str, token: str, seconds: float) -> Load:
    out = subprocess.run(
        wrk_command(url, token, seconds), capture_output=True, text=True, check=True
    ).stdout
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if "Non-2xx" in out or (socket and any(int(n) for n in socket.groups()[:3])):
        sys.exit(f"errors under load on {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return Load(rps, p50, p99, int(socket.group(4)) if socket else 0)


def call(base: str, token: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.load(reply)


def default_sweep(base: str, token: str, task: str) -> float:
    """POST / : the seconds the default sweep took, all three trials done."""
    started = time.perf_counter()
    answer = call(base, token, "/", {"task": task})
    elapsed = time.perf_counter() - started
    assert [r["status"] for r in answer["results"]] == ["done"] * 3, answer
    return elapsed


def wait_running(base: str, token: str, sweep_id: str, trials: int) -> None:
    deadline = time.monotonic() + 120
    while call(base, token, f"/v1/sweeps/{sweep_id}")["counts"]["running"] < trials:
        if time.monotonic() > deadline:
            sys.exit(f"the sleeping sweep's {trials} trials did not all start within 120 s")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--sweeps", type=int, default=5)
    parser.add_argument("--rate", type=float, default=TARGET_RPS, help="reads/s beside the sweep")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/reads.py needs wrk: apt-get install wrk (Debian package `wrk`)")
    loads: dict[str, list[Load]] = {}
    quiet: list[float] = []
    loaded: list[float] = []
    reached: list[float] = []
    with closing(docker.from_env()) as client, tempfile.TemporaryDirectory() as tmp:
        layout = Layout.on_free_ports(Path(tmp), ensure_sandbox_image(client, IMAGE_TAG))
        stack = Stack(layout)
        try:
            stack.up()
            token = stack.api_token()
            base = f"http://{layout.address(GATEWAY)}"
            default_sweep(base, token, "warm-up")
            done = call(base, token, "/", {"task": "read while finished"})["sweepId"]
            running = call(base, token, "/v1/sweeps", SLEEPER)["id"]
            wait_running(base, token, running, 3)
            routes = {"GET /healthz (Envoy alone)": "/healthz"}
            for state, sweep_id in (("done", done), ("running", running)):
                routes[f"GET /sweeps/{{id}} ({state})"] = f"/sweeps/{sweep_id}"
                routes[f"GET /v1/sweeps/{{id}} ({state})"] = f"/v1/sweeps/{sweep_id}"
                routes[f"GET /v1/sweeps/{{id}}/trials/0 ({state})"] = (
                    f"/v1/sweeps/{sweep_id}/trials/0"
                )
            for _ in range(args.rounds):
                for name, path in routes.items():
                    loads.setdefault(name, []).append(wrk(base + path, token, args.seconds))
            script = paced(Path(tmp), args.rate)
            reads = wrk_command(f"{base}/v1/sweeps/{running}", token, 3600, script=script)
            for i in range(args.sweeps):  # interleaved, so drift affects both alike
                quiet.append(default_sweep(base, token, f"quiet {i}"))
                load = subprocess.Popen(reads, stdout=subprocess.PIPE, text=True)
                try:
                    time.sleep(1.0)  # the load under way before the sweep starts
                    loaded.append(default_sweep(base, token, f"loaded {i}"))
                finally:
                    load.send_signal(signal.SIGINT)  # wrk prints its figures on SIGINT
                    out, _ = load.communicate()
                rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
                if rate:
                    reached.append(float(rate.group(1)))
            call(base, token, f"/v1/sweeps/{running}:cancel", {})
        finally:
            stack.down()
    floor = statistics.median(load.rps for load in loads["GET /healthz (Envoy alone)"])
    print(f"wrk: {THREADS} threads, {CONNECTIONS} connections, {args.seconds:g} s a route, "
          f"medians of {args.rounds} rounds")  # fmt: skip
    print(f"{'route':40} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'of floor':>9} {'timeouts':>9}")
    for name, found in loads.items():
        rps = statistics.median(load.rps for load in found)
        p50 = statistics.median(load.p50_ms for load in found)
        p99 = statistics.median(load.p99_ms for load in found)
        timeouts = sum(load.timeouts for load in found)
        print(f"{name:40} {rps:8.0f} {p50:8.2f} {p99:8.2f} {rps / floor:9.3f} {timeouts:9}")
    slowest = min(
        statistics.median(load.rps for load in found)
        for name, found in loads.items()
        if "healthz" not in name
    )
    print(f"slowest read route: {slowest:.0f} req/s (target >= {TARGET_RPS})")
    q, s = statistics.median(quiet), statistics.median(loaded)
    print(f"default sweep, no load:            median {q:.3f} s (min {min(quiet):.3f})")
    print(f"default sweep, reads of a running: median {s:.3f} s (min {min(loaded):.3f})")
    print(f"ratio loaded/quiet: {s / q:.2f} (target <= {TARGET_SLOWDOWN:.2f})")
    if reached:
        print(f"reads beside the sweep: median {statistics.median(reached):.0f} req/s "
              f"(paced for {args.rate:g})")  # fmt: skip
    for name, found in loads.items():
        print(f"per round, {name}: " + " / ".join(f"{load.rps:.0f}" for load in found))


if __name__ == "__main__":
    main()
