"""The default sweep through the whole stack against three hardened containers
run directly with the Docker SDK, side by side in one run.

    .venv/bin/python bench/default_sweep.py [--rounds 10]

Prints the median wall time of each and their ratio (target: at most 1.1).
The stack is real: Envoy, the orchestrator, three runner processes, SQLite,
the engine; it runs on free loopback ports in a temporary folder and is
stopped at the end. The baseline runs the same three example scripts in the
same image with the same hardening, concurrently, create -> start -> wait ->
logs -> remove, each script run by python3 itself (no bootstrap).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import docker
from docker.types import Ulimit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import engine
from orchestrator_svc.config import EXAMPLES_DIR
from prism.stack import GATEWAY, Layout, Stack
from sandbox.images import ensure_sandbox_image
from sandbox.seccomp import PROFILE_JSON

EXAMPLES = ["runner-a", "runner-b", "runner-c"]
MiB = 2**20


def direct_round(client: docker.DockerClient, image: str, task: str) -> float:
    """Three hardened containers at once, straight through the SDK."""
    outputs: dict[str, bytes] = {}

    def one(name: str) -> None:
        container = client.containers.create(
            image,
            # The script run straight by python3, as a script around the SDK would.
            ["python3", "-c", (EXAMPLES_DIR / f"{name}.py").read_text()],
            environment={"PRISM_PARAMS": json.dumps({"task": task}), "HOME": "/workspace"},
            user="65534:65534",
            network_mode="none",
            read_only=True,
            tmpfs={
                "/workspace": "rw,nosuid,nodev,noexec,size=64m,uid=65534,gid=65534",
                "/tmp": "rw,nosuid,nodev,noexec,size=16m,mode=1777",
            },
            shm_size=16 * MiB,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", f"seccomp={PROFILE_JSON}"],
            pids_limit=64,
            mem_limit=(256 + 16) * MiB,
            memswap_limit=(256 + 16) * MiB,
            nano_cpus=10**9,
            ulimits=[
                Ulimit(name="nofile", soft=1024, hard=1024),
                Ulimit(name="core", soft=0, hard=0),
            ],
            ipc_mode="private",
            cgroupns="private",
            labels={"prism.bench": "direct"},
        )
        try:
            container.start()
            container.wait(timeout=60)
            outputs[name] = container.logs(stdout=True, stderr=False)
        finally:
            container.remove(force=True)

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(n,)) for n in EXAMPLES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    assert all(json.loads(outputs[n])["task"] == task for n in EXAMPLES), outputs
    return elapsed


def stack_round(stack: Stack, token: str, task: str) -> float:
    request = urllib.request.Request(
        f"http://{stack.layout.address(GATEWAY)}/",
        data=json.dumps({"task": task}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as reply:
        body = json.load(reply)
    elapsed = time.perf_counter() - started
    assert [r["status"] for r in body["results"]] == ["done"] * 3, body
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    rounds = parser.parse_args().rounds
    with closing(engine(max_pool_size=16)) as client, tempfile.TemporaryDirectory() as tmp:
        image = ensure_sandbox_image(client)
        layout = Layout.on_free_ports(Path(tmp), image)
        stack = Stack(layout)
        try:
            stack.up()
            token = stack.api_token()
            stack_round(stack, token, "warm-up")
            direct_round(client, image, "warm-up")
            direct, full = [], []
            for i in range(rounds):  # interleaved, so drift affects both alike
                direct.append(direct_round(client, image, f"round {i}"))
                full.append(stack_round(stack, token, f"round {i}"))
        finally:
            stack.down()
    d, f = statistics.median(direct), statistics.median(full)
    print(f"rounds: {rounds}")
    print(f"direct SDK, 3 hardened containers: median {d:.3f} s (min {min(direct):.3f})")
    print(f"default sweep through the gateway: median {f:.3f} s (min {min(full):.3f})")
    print(f"ratio stack/direct: {f / d:.2f} (target <= 1.10)")


if __name__ == "__main__":
    main()
