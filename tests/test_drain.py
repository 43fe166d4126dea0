"""A runner stopped with SIGTERM drains: it takes no new trial, its trials get
PRISM_RUNNER_DRAIN_SECONDS to finish, and what is still running then is handed back
and runs again on another runner. Every trial ends once, and no execution runs twice."""

from __future__ import annotations

import json
import signal
from contextlib import closing
from typing import Any

import docker

from sandbox.container import OWNER_LABEL
from tests.conftest import StackFactory, wait_until

# Longer than the drain by far, so each trial running when the runner is stopped is
# still running at the drain's deadline.
SLEEPY = (
    "import json, os, time\n"
    "time.sleep(6)\n"
    "print(json.dumps({'i': json.loads(os.environ['PRISM_PARAMS'])['i']}))"
)
TRIALS = 8
HANDED_BACK = "handed back: runner stopping"


def test_a_stopped_runner_hands_back_its_trials_and_they_finish_elsewhere(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(
        runners=2, env={"PRISM_RUNNER_DRAIN_SECONDS": "2", "PRISM_RUNNER_SLOTS": "4"}
    )
    spec = {
        "task": "drain",
        "script": SLEEPY,
        "parameters": {"grid": {"i": list(range(TRIALS))}},
        "maxParallel": TRIALS,
        "limits": {"wallSeconds": 60},
    }
    sweep_id = stack.create(spec).body["id"]

    def all_running() -> list[dict[str, Any]] | None:
        trials: list[dict[str, Any]] = stack.http("GET", f"/v1/sweeps/{sweep_id}").body["trials"]
        return trials if all(t["state"] == "running" for t in trials) else None

    trials = wait_until(all_running, what="every trial to run")
    stopped, other = list(stack.layout.runners)
    held = {t["index"] for t in trials if t["runner"] == stopped}
    assert held, trials
    process = stack.stack.procs[stopped]
    stack.stack.signal(stopped, signal.SIGTERM)
    # It stops by itself, within its drain and grace, with a clean exit.
    assert process.wait(timeout=60) == 0

    sweep = stack.finished(sweep_id, timeout=180)
    assert sweep["state"] == "done"
    by_index = {t["index"]: t for t in sweep["trials"]}
    assert sorted(by_index) == list(range(TRIALS))
    for index, trial in by_index.items():
        assert trial["outcome"] == "succeeded", trial
        assert trial["metrics"] == {"i": index}
        # What the stopped runner held ran again on the other one, as a new execution.
        if index in held:
            assert (trial["runner"], trial["attempts"]) == (other, 2), trial
        else:
            assert trial["attempts"] == 1, trial

    events = stack.orchestrator_query(
        "SELECT kind, trial_index, data FROM event WHERE sweep_id = ? ORDER BY seq", sweep_id
    )
    requeued = {index: json.loads(data) for kind, index, data in events if kind == "trial_requeued"}
    assert requeued == {index: {"runner": stopped, "reason": HANDED_BACK} for index in held}
    finished = [index for kind, index, _ in events if kind == "trial_finished"]
    assert sorted(finished) == list(range(TRIALS))  # each trial's one result
    assert "trial_retrying" not in {kind for kind, _, _ in events}

    # No execution ran twice: the returned ones once on each runner, as two executions.
    executions = stack.executions()
    assert set(executions.values()) == {1}, executions
    expected = {f"{sweep_id}/{i}" for i in range(TRIALS)}
    expected |= {f"{sweep_id}/{i}@2" for i in held}
    assert set(executions) == expected

    with closing(docker.from_env()) as client:
        left = client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={stopped}"})
    assert left == []
