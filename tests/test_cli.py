"""The `prism` command line against a running stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import RunningStack

PRISM = str(Path(sys.executable).parent / "prism")


def prism(
    stack: RunningStack, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env.update(PRISM_ADDRESS=stack.gateway, PRISM_DATA_DIR=str(stack.layout.data_dir))
    if token is not None:
        env["PRISM_API_TOKEN"] = token
    return subprocess.run(
        [PRISM, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_run_then_status(stack: RunningStack) -> None:
    ran = prism(stack, "run", "from the command line")
    assert ran.returncode == 0, ran.stderr
    reply = json.loads(ran.stdout)
    assert [r["runner"] for r in reply["results"]] == ["runner-a", "runner-b", "runner-c"]
    status = prism(stack, "status", reply["sweepId"])
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "done"


def test_errors_are_one_clear_line(stack: RunningStack) -> None:
    missing = prism(stack, "status", "no-such-sweep")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "prism: not_found: no sweep 'no-such-sweep'"
    refused = prism(stack, "landing", token="wrong")
    assert refused.returncode == 1
    assert refused.stderr.startswith("prism: unauthenticated:")
