"""The Docker engine restarted mid-trial: the trial ends sandbox_error (the
platform's failure, not the script's) and the sweep's retry runs it again once
the engine is back.

Only against an engine this test run started (as `make test` does when none
answers): restarting anyone else's would pull containers from under them."""

from __future__ import annotations

import pytest

from sandbox.engine import ensure_engine, stop_engine
from tests.conftest import REPO, StackFactory, wait_until

RUN_DIR = REPO / ".prism" / "test-run"


def test_an_engine_restart_mid_trial_is_a_retried_sandbox_error(
    make_stack: StackFactory,
) -> None:
    if not (RUN_DIR / "dockerd.pid").is_file():
        pytest.skip("the Docker engine was not started by this test run")
    stack = make_stack(runners=1)
    spec = {
        "task": "engine restart",
        "script": "import time\ntime.sleep(5)\nprint('{\"ok\": 1}')",
        "retries": 3,
    }
    sweep_id = stack.create(spec).body["id"]
    wait_until(
        lambda: stack.http("GET", f"/v1/sweeps/{sweep_id}").body["trials"][0]["state"] == "running",
        what="the trial to run",
    )
    assert stop_engine(RUN_DIR)
    ensure_engine(RUN_DIR)
    [trial] = stack.finished(sweep_id, timeout=180)["trials"]
    assert trial["outcome"] == "succeeded", trial
    assert trial["attempts"] >= 2
    retried = stack.orchestrator_query(
        "SELECT data FROM event WHERE sweep_id = ? AND kind = 'trial_retrying'", sweep_id
    )
    assert retried and all("sandbox_error" in data for (data,) in retried)
