"""Adaptive search through the gateway, on the real stack: a TPE sweep with ASHA whose
trials print a metric each step; pruned trials, the best one, the history, the events;
a target and a deadline ending sweeps."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import RunningStack

# A learning curve: loss falls towards (x - 3)^2 + 0.1; a trial sleeps a little per step
# so that the rule has time to stop it.
CURVE = """\
import json, os, time
params = json.loads(os.environ["PRISM_PARAMS"])
final = (params["x"] - 3) ** 2 + 0.1
for step in range(1, 9):
    loss = final + 4.0 / step
    print("PRISM_METRIC " + json.dumps({"step": step, "loss": loss}), flush=True)
    time.sleep(0.25)
print(json.dumps({"loss": final}))
"""


def spec(**more: Any) -> dict[str, Any]:
    return {
        "task": "search",
        "script": CURVE,
        "parameters": {"random": {"parameters": {"x": {"uniform": [-10, 10]}}}},
        "objective": {"metric": "loss", "goal": "minimize"},
        "search": {"sampler": "tpe", "trials": 14, "seed": 1},
        "maxParallel": 3,
        **more,
    }


def test_a_tpe_sweep_with_asha_prunes_and_finds_the_best(stack: RunningStack) -> None:
    created = stack.create(
        spec(earlyStopping={"rule": "asha", "metric": "loss", "stepKey": "step"})
    )
    assert created.status == 200, created.body
    assert created.body["counts"]["total"] == 0  # asked for as slots free
    sweep = stack.finished(created.body["id"], timeout=240)
    assert sweep["state"] == "done"
    trials = sweep["trials"]
    assert len(trials) == 14
    outcomes = [t["outcome"] for t in trials]
    assert set(outcomes) <= {"succeeded", "pruned"}
    assert sweep["counts"]["pruned"] == outcomes.count("pruned") >= 1
    for trial in trials:
        assert trial["intermediateValues"], trial
        if trial["outcome"] == "pruned":
            assert int(trial["prunedStep"]) < 8
            assert trial["prunedValue"] == trial["intermediateValues"][-1]["value"]
            assert "asha" in trial["reason"]
    best = sweep["bestTrial"]
    assert best["outcome"] == "succeeded"
    assert [p["bestValue"] for p in sweep["history"]] == sorted(
        (p["bestValue"] for p in sweep["history"]), reverse=True
    )
    assert sweep["history"][-1]["bestValue"] == best["metrics"]["loss"]
    kinds = [
        k
        for (k,) in stack.orchestrator_query(
            "SELECT kind FROM event WHERE sweep_id = ? ORDER BY seq", created.body["id"]
        )
    ]
    assert kinds.count("trial_pruned") == outcomes.count("pruned")


def test_a_target_ends_the_sweep(stack: RunningStack) -> None:
    created = stack.create(
        spec(
            script=CURVE.replace("time.sleep(0.25)", "pass"),
            target={"value": 1000.0},
            search={"sampler": "random", "trials": 50, "seed": 2},
        )
    )
    sweep = stack.finished(created.body["id"], timeout=120)
    assert sweep["stopReason"] == "target_reached"
    assert sweep["state"] == "done"
    assert len(sweep["trials"]) < 50


def test_a_deadline_ends_a_sweep_whose_trials_run_too_long(stack: RunningStack) -> None:
    started = time.monotonic()
    created = stack.create(
        spec(
            script="import time\ntime.sleep(60)\n",
            maxDurationSeconds=4,
            search={"sampler": "random", "trials": 10, "seed": 2},
        )
    )
    sweep = stack.finished(created.body["id"], timeout=60)
    assert time.monotonic() - started < 30
    assert sweep["stopReason"] == "deadline"
    assert {t["outcome"] for t in sweep["trials"]} == {"cancelled"}


def test_two_objectives_give_a_pareto_front(stack: RunningStack) -> None:
    script = (
        "import json, os\n"
        "p = json.loads(os.environ['PRISM_PARAMS'])\n"
        "print(json.dumps({'loss': (p['x'] - 3) ** 2, 'size': abs(p['x'])}))\n"
    )
    objectives = [{"metric": "loss"}, {"metric": "size", "goal": "minimize"}]
    created = stack.create(
        spec(
            script=script,
            objective=None,
            objectives=objectives,
            search={"sampler": "nsga2", "trials": 10, "seed": 4},
        )
    )
    assert created.status == 200, created.body
    assert created.body["spec"]["objectives"] == [
        {"metric": "loss", "goal": "minimize"},
        {"metric": "size", "goal": "minimize"},
    ]
    sweep = stack.finished(created.body["id"], timeout=120)
    assert sweep["state"] == "done" and "bestTrial" not in sweep
    front = sweep["paretoFront"]
    points = {t["index"]: (t["metrics"]["loss"], t["metrics"]["size"]) for t in sweep["trials"]}
    assert front
    for i, (loss, size) in points.items():
        beaten = any(
            lo <= loss and si <= size and (lo, si) != (loss, size)
            for j, (lo, si) in points.items()
            if j != i
        )
        assert (i in front) == (
            not beaten and all(points[j] != (loss, size) for j in points if j < i)
        )
