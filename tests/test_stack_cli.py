"""`python -m prism.stack`, the commands behind `make up`, `make demo` and `make down`."""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from prism.stack import Layout, Stack, StackError, free_ports
from tests.conftest import REPO, examples_dir, start_stack


def stack_cli(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prism.stack", command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_up_demo_down(tmp_path: Path, sandbox_image: str) -> None:
    ports = free_ports(10)
    gateway, orchestrator, runners = ports[0], ports[1], ports[2:5]
    # Never `make up`'s own metrics ports, which a stack of this machine may hold.
    gateway_metrics, orchestrator_metrics, runner_metrics = ports[5], ports[6], ports[7:]
    four = (
        "import json, os\n"
        "print(json.dumps({'task': json.loads(os.environ['PRISM_PARAMS'])['task']}))\n"
    )
    examples = examples_dir(tmp_path / "examples", {"runner-d": four})
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PRISM_")},
        "PRISM_GATEWAY_PORT": str(gateway),
        "PRISM_ORCHESTRATOR_PORT": str(orchestrator),
        "PRISM_RUNNER_PORTS": ",".join(map(str, runners)),
        "PRISM_RUNNER_PREFIX": f"cli{secrets.token_hex(3)}",
        "PRISM_GATEWAY_METRICS_PORT": str(gateway_metrics),
        "PRISM_ORCHESTRATOR_METRICS_PORT": str(orchestrator_metrics),
        "PRISM_RUNNER_METRICS_PORTS": ",".join(map(str, runner_metrics)),
        # Settings pass through `up` to the services.
        "PRISM_EXAMPLES_DIR": str(examples),
        "PRISM_EXAMPLE_RUNNERS": "runner-a,runner-b,runner-c,runner-d",
    }
    data = tmp_path / "data"
    env["PRISM_DATA_DIR"] = str(data)
    layout = Layout(
        data_dir=data,
        gateway_port=gateway,
        orchestrator_port=orchestrator,
        runner_ports=tuple(runners),
        runner_prefix=env["PRISM_RUNNER_PREFIX"],
    )
    try:
        up = stack_cli("up", env)
        assert up.returncode == 0, up.stdout + up.stderr
        # The first line is `make up`'s step line.
        assert up.stdout.splitlines()[0] == (
            f"started gateway http://127.0.0.1:{gateway}, orchestrator, 3 runners"
        )
        assert f"generated an API token in {data / 'api_token'}" in up.stdout
        assert f"dashboard: http://127.0.0.1:{gateway}/ui/" in up.stdout
        assert (
            f"metrics (Prometheus): http://127.0.0.1:{orchestrator_metrics}/metrics, "
            f"http://127.0.0.1:{gateway_metrics}/stats/prometheus, "
            + ", ".join(f"http://127.0.0.1:{port}/metrics" for port in runner_metrics)
        ) in up.stdout
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "api_token").stat().st_mode) == 0o600
        assert stat.S_IMODE((data / "runner_token").stat().st_mode) == 0o600
        token = (data / "api_token").read_text().strip()
        assert token not in up.stdout + up.stderr
        pids = {s: Stack(layout).pid(s) for s in layout.services}
        assert all(pids.values()), pids

        again = stack_cli("up", env)  # idempotent: nothing new starts
        assert again.returncode == 0, again.stderr
        assert "generated" not in again.stdout
        assert again.stdout.startswith("already up: ")
        assert {s: Stack(layout).pid(s) for s in layout.services} == pids

        demo = stack_cli("demo", env)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        lines = demo.stdout.splitlines()
        # The first line is `make demo`'s step line; the results, then what to try next.
        assert lines[0] == "4 of 4 runners done"
        sweep = re.fullmatch(r"sweep (\S+) \(POST .*\):", lines[2])
        assert sweep, lines[2]
        results = [line.split() for line in lines if line.startswith("  runner-")]
        assert [r[0] for r in results] == ["runner-a", "runner-b", "runner-c", "runner-d"]
        assert all(r[1] == "done" for r in results)
        ending = lines[lines.index("Next:") + 1 :]
        commands = [line.split("  # ")[0].strip() for line in ending]
        for command in (
            "prism sweeps",
            f"prism show {sweep[1]}",
            f"http://127.0.0.1:{gateway}/ui/",
            "make down",
        ):
            assert command in commands, ending
        # The curl line works as printed: it reads the token from its file.
        [curl] = [c for c in commands if c.startswith("curl ")]
        landing = subprocess.run(
            ["bash", "-c", curl], capture_output=True, text=True, timeout=30, check=True
        )
        assert json.loads(landing.stdout)["name"] == "prism"
        for name in layout.services:
            assert token not in layout.log_file(name).read_text(), f"token in {name}'s log"
    finally:
        down = stack_cli("down", env)
    assert down.returncode == 0, down.stderr
    for service, pid in pids.items():
        assert (
            not Path(f"/proc/{pid}").exists()
            or b"zombie" in Path(f"/proc/{pid}/status").read_bytes()
        ), service
        assert not layout.pid_file(service).exists()


def test_a_stack_that_fails_to_start_leaves_nothing_running(
    tmp_path: Path, sandbox_image: str
) -> None:
    # The runners start first; the orchestrator then refuses its settings.
    with pytest.raises(StackError, match="orchestrator exited"):
        start_stack(
            tmp_path, sandbox_image, runners=2, env={"PRISM_RUNNERS": "nonsense"}, gateway=False
        )
    marker = f"PRISM_DATA_DIR={tmp_path}".encode()

    def started_here(pid: str) -> bool:
        try:
            return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False

    assert [pid for pid in os.listdir("/proc") if pid.isdigit() and started_here(pid)] == []
