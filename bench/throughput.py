"""Throughput of trivial trials through the whole stack against the same hardened
containers driven straight through the Docker SDK, side by side in one run (issue 12).

    PYTHONPATH=. .venv/bin/python bench/throughput.py [--trials 500] [--rounds 3]
        [--concurrency 1,4,12] [--small-trials 60] [--prepared N] [--profile DIR]

For each concurrency c: a sweep of --small-trials trials (--trials for the largest c)
with maxParallel c, through the gateway (POST /v1/sweeps, polled until done: from the
POST to the sweep's final event), against a thread pool of c threads running as many
containers straight through the SDK (create -> start -> wait -> logs -> remove, each
thread one container at a time): the floor, what a user's own script around the Docker
SDK does. Both run the same script, `print(json.dumps({"x": x * x}))` with x the trial's
parameter, in the same sandbox image, with the same hardening and limits (the
sandbox's own host config), as the same user. Printed: trials per second of each,
medians of --rounds rounds interleaved (the order alternating), and their ratio
(stack / floor; target >= 1.0 at every c).

The stack is real: Envoy, the orchestrator, three runner processes of four slots each
(PRISM_RUNNER_PREPARED containers prepared ahead by each: --prepared, the slots by
default), SQLite, the engine; on free loopback ports in a temporary folder, stopped at
the end. A warm-up sweep and a warm-up floor come first, not counted. Timings are as
good as the host is quiet: the load average is printed at the start and the end.

With --profile DIR (py-spy, as root), one more sweep at the largest concurrency runs
with the orchestrator and the first runner sampled while they hold the GIL (their
Python CPU time): DIR gets each one's collapsed stacks (py-spy's raw format, for flame
graphs) and the functions with most samples are printed, with their own time and with
what they call.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Api, engine
from prism.stack import GATEWAY, ORCHESTRATOR, Layout, Stack
from sandbox import Limits, Sandbox
from sandbox.images import ensure_sandbox_image

SCRIPT = """import json, os
x = json.loads(os.environ["PRISM_PARAMS"])["x"]
print(json.dumps({"x": x * x}))
"""
LABEL = "prism.bench.throughput"
RUNNERS, SLOTS = 3, 4


def stack_round(api: Api, trials: int, concurrency: int, tag: str) -> float:
    """Seconds from creating the sweep to seeing it done; every trial checked."""
    spec = {
        "task": f"throughput {tag}",
        "script": SCRIPT,
        "parameters": {"list": [{"x": i} for i in range(trials)]},
        "maxParallel": concurrency,
    }
    started = time.perf_counter()
    sweep_id = api.call("POST", "/v1/sweeps", spec)["id"]
    api.events(sweep_id)
    elapsed = time.perf_counter() - started
    shown = api.call("GET", f"/v1/sweeps/{sweep_id}")
    outcomes = {t.get("outcome") for t in shown["trials"]}
    squares = sorted(t["metrics"]["x"] for t in shown["trials"])
    if shown["state"] != "done" or outcomes != {"succeeded"}:
        raise RuntimeError(f"sweep {sweep_id} ended {shown['state']} with {outcomes}")
    if squares != sorted(i * i for i in range(trials)):
        raise RuntimeError(f"sweep {sweep_id}: wrong results")
    return elapsed


def direct_round(
    client: docker.DockerClient, image: str, host_config: Any, trials: int, concurrency: int
) -> float:
    """The same trials as hardened containers straight through the SDK, c at a time."""
    api = client.api

    def one(x: int) -> int:
        container = api.create_container(
            image,
            command=["python3", "-c", SCRIPT],
            entrypoint=[],
            user="65534:65534",
            environment={"PRISM_PARAMS": json.dumps({"x": x}), "HOME": "/workspace"},
            labels={LABEL: "direct"},
            host_config=host_config,
        )["Id"]
        try:
            api.start(container)
            if api.wait(container, timeout=60)["StatusCode"] != 0:
                raise RuntimeError(f"trial {x} failed")
            # The sandbox's host config logs nothing (output goes through attach there):
            # here the output is read the way a script around the SDK reads it.
            return int(json.loads(api.logs(container, stdout=True, stderr=False) or b"{}")["x"])
        finally:
            api.remove_container(container, force=True)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(trials)))
    elapsed = time.perf_counter() - started
    if results != [i * i for i in range(trials)]:
        raise RuntimeError("the direct containers gave wrong results")
    return elapsed


def logged_host_config(client: docker.DockerClient, image: str) -> Any:
    """The sandbox's hardening and default limits, but with the engine's json-file log,
    which the floor reads its output from (the sandbox reads it from attach instead)."""
    box = Sandbox(client, image=image, owner="bench-floor")
    config = box._host_config(Limits())
    config["LogConfig"] = {"Type": "json-file", "Config": {}}
    return config


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used (their exited children's too)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def processes(stack: Stack) -> dict[str, list[int]]:
    """Whose CPU time is counted: each service of the stack, and the engine's daemons
    (the containers' own processes and runc are not: they end before they can be read)."""
    daemons = subprocess.run(["pgrep", "-x", "dockerd|containerd"], capture_output=True, text=True)
    runners = [stack.pid(r) for r in stack.layout.runners]
    return {
        "gateway": [p for p in [stack.pid(GATEWAY)] if p],
        "orchestrator": [p for p in [stack.pid(ORCHESTRATOR)] if p],
        "runners": [p for p in runners if p],
        "engine": [int(p) for p in daemons.stdout.split()],
        "this process (the floor's threads)": [os.getpid()],
    }


def profiled_round(stack: Stack, api: Api, trials: int, concurrency: int, out: Path) -> None:
    """One sweep with the orchestrator and the first runner sampled by py-spy."""
    out.mkdir(parents=True, exist_ok=True)
    services = [ORCHESTRATOR, next(iter(stack.layout.runners))]
    spy = Path(sys.executable).parent / "py-spy"
    samplers = {}
    for service in services:
        command = [str(spy), "record", "--pid", str(stack.pid(service)), "--format", "raw",
                   "--rate", "200", "--nonblocking", "--gil",
                   "-o", str(out / f"{service}.txt")]  # fmt: skip
        samplers[service] = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    time.sleep(1)  # attached before the sweep starts
    stack_round(api, trials, concurrency, "profiled")
    for service, sampler in samplers.items():
        sampler.send_signal(2)  # SIGINT: py-spy writes what it sampled
        _, errors = sampler.communicate(timeout=60)
        if sampler.returncode != 0:
            raise RuntimeError(f"py-spy on {service}: {errors[-500:]}")
        summarise(service, out / f"{service}.txt")


def summarise(service: str, collapsed: Path, top: int = 12) -> None:
    """The functions with most samples in a file of collapsed stacks: own and total."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frames, n = stack.split(";"), int(number)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    print(f"\n{service}: {samples} samples ({collapsed})")
    print("  own %   function")
    for frame, n in own.most_common(top):
        print(f"  {100 * n / samples:5.1f}   {frame}")
    # The frames under which nearly everything runs (threads' and the loop's roots) say
    # nothing: left out.
    inner = [(f, n) for f, n in total.most_common() if n < 0.9 * samples]
    print("  total % function (with what it calls)")
    for frame, n in inner[:top]:
        print(f"  {100 * n / samples:5.1f}   {frame}")


Cpu = dict[str, dict[str, float]]


def level(
    counted: dict[str, list[int]],
    *,
    floor: Callable[[], float],
    stack: Callable[[str], float],
    rounds: int,
) -> tuple[list[float], list[float], Cpu]:
    """The rounds of one concurrency, interleaved and the order alternating: each arm's
    times, and the CPU time each counted process used during each arm's rounds."""
    times: dict[str, list[float]] = {"floor": [], "stack": []}
    cpu: Cpu = {arm: dict.fromkeys(counted, 0.0) for arm in times}
    for i in range(rounds):
        arms: list[tuple[str, Callable[[], float]]] = [
            ("floor", floor),
            ("stack", functools.partial(stack, f"round {i}")),
        ]
        for arm, run in arms[:: -1 if i % 2 else 1]:
            before = {name: cpu_seconds(pids) for name, pids in counted.items()}
            times[arm].append(run())
            for name, pids in counted.items():
                cpu[arm][name] += cpu_seconds(pids) - before[name]
    return times["floor"], times["stack"], cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--small-trials", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,4,12")
    parser.add_argument("--prepared", type=int, default=None)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    levels = sorted(int(c) for c in args.concurrency.split(","))
    extra = {"PRISM_RUNNER_SLOTS": str(SLOTS)}
    if args.prepared is not None:
        extra["PRISM_RUNNER_PREPARED"] = str(args.prepared)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows = []
    with closing(engine(max_pool_size=32)) as client, tempfile.TemporaryDirectory() as tmp:
        image = ensure_sandbox_image(client)
        host_config = logged_host_config(client, image)
        layout = Layout.on_free_ports(Path(tmp), image, runners=RUNNERS, extra_env=extra)
        stack = Stack(layout)
        try:
            stack.up()
            api = Api(layout.address(GATEWAY), stack.api_token())
            stack_round(api, 12, 12, "warm-up")
            direct_round(client, image, host_config, 12, 12)
            counted = processes(stack)
            for concurrency in levels:
                trials = args.trials if concurrency == levels[-1] else args.small_trials
                direct, full, cpu = level(
                    counted,
                    floor=functools.partial(
                        direct_round, client, image, host_config, trials, concurrency
                    ),
                    stack=functools.partial(stack_round, api, trials, concurrency),
                    rounds=args.rounds,
                )
                d, f = trials / statistics.median(direct), trials / statistics.median(full)
                rows.append((concurrency, trials, d, f))
                print(
                    f"c={concurrency:<3} {trials:4} trials: direct SDK {d:6.2f} trials/s, "
                    f"stack {f:6.2f} trials/s, ratio stack/floor {f / d:.2f} (target >= 1.00)",
                    flush=True,
                )
                per_trial = 1000 / (trials * args.rounds)
                for arm in ("floor", "stack"):
                    shown = ", ".join(
                        f"{name} {seconds * per_trial:.1f}"
                        for name, seconds in cpu[arm].items()
                        if seconds > 0
                    )
                    print(f"    CPU ms per trial during the {arm}'s rounds: {shown}")
            if args.profile is not None:
                profiled_round(stack, api, args.trials, levels[-1], args.profile)
        finally:
            stack.down()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print("\nconcurrency | trials | floor (direct SDK) trials/s | stack trials/s | ratio")
    for concurrency, trials, d, f in rows:
        print(f"{concurrency:11} | {trials:6} | {d:27.2f} | {f:14.2f} | {f / d:.2f}")


if __name__ == "__main__":
    main()
