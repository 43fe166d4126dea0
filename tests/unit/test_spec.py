"""Planning a sweep spec into trials: the three parameter spaces, the example runners,
the defaults a stored spec gets, and each rule's refusal naming its field (an
INVALID_ARGUMENT with one field violation per rule broken). Specs arrive as the gateway
hands them over: JSON parsed into the message, numbers as doubles.
(``test_spec_fuzz.py`` holds the planner to never failing otherwise.)"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from orchestrator_svc.config import Settings
from orchestrator_svc.spec import Plan, plan, trial_limits
from prism.errors import InvalidArgument
from prism.limits import DEFAULTS, LIMITS
from prism.v1 import orchestrator_pb2
from sandbox.container import Limits

EXAMPLES = (("alpha", "print('alpha')"), ("beta", "print('beta')"))
SETTINGS = Settings(
    address="127.0.0.1:0",
    data_dir=Path("/nonexistent"),
    api_token=None,
    runner_token=None,
    runners=(("r", "127.0.0.1:1"),),
    examples=EXAMPLES,
    example_wall_seconds=12.5,
    sync_wait_seconds=1,
    reconcile_seconds=1,
)
SCRIPT = "import prism_trial\nprism_trial.result(loss=1)\n"


def spec(**fields: Any) -> orchestrator_pb2.SweepSpec:
    return json_format.ParseDict({"task": "a task", **fields}, orchestrator_pb2.SweepSpec())


def planned(**fields: Any) -> Plan:
    return plan(spec(**fields), SETTINGS)


def params(**fields: Any) -> list[dict[str, Any]]:
    made = planned(script=SCRIPT, **fields)
    assert all(t.script == SCRIPT for t in made.trials)
    assert [t.name for t in made.trials] == [f"trial-{i}" for i in range(len(made.trials))]
    return [t.params for t in made.trials]


def refused(**fields: Any) -> dict[str, str]:
    """The fields named in the refusal, each with its rule."""
    with pytest.raises(InvalidArgument) as caught:
        planned(**fields)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.violations and all(f and r for f, r in caught.value.violations)
    return dict(caught.value.violations)


# --- parameter spaces ------------------------------------------------------------------------


def test_a_grid_is_every_combination() -> None:
    grid: dict[str, list[Any]] = {"lr": [0.1, 0.01], "layers": [1, 2, 3], "act": ["relu"]}

    made = params(parameters={"grid": grid})

    assert len(made) == 2 * 3 * 1
    combinations = {tuple(p[name] for name in sorted(grid)) for p in made}
    assert combinations == set(itertools.product(*(grid[name] for name in sorted(grid))))
    assert all(set(p) == set(grid) for p in made)


def test_integral_doubles_come_back_as_ints() -> None:
    values = [1, 2.5, -3, 2**52, [1.0, {"deep": 2.0}]]

    [made] = params(parameters={"list": [{"v": values}]})

    assert made["v"] == values
    assert [type(v) for v in made["v"][:4]] == [int, float, int, int]
    assert type(made["v"][4][0]) is int and type(made["v"][4][1]["deep"]) is int
    grid = params(parameters={"grid": {"layers": [1, 2]}})
    assert [type(p["layers"]) for p in grid] == [int, int]


def test_a_list_is_its_parameter_sets_in_order() -> None:
    sets = [{"lr": 0.1}, {"lr": 0.2, "note": "x"}, {}]
    assert params(parameters={"list": sets}) == sets


def test_without_parameters_a_script_runs_once_with_none() -> None:
    assert params() == [{}]


RANDOM = {
    "lr": {"loguniform": [1e-4, 1e-1]},
    "drop": {"uniform": [0, 0.5]},
    "layers": {"int": [1, 4]},
    "act": {"choice": ["relu", "tanh", 3]},
}


def test_random_search_samples_each_distribution_within_its_range() -> None:
    made = params(parameters={"random": {"trials": 200, "seed": 7, "parameters": RANDOM}})

    assert len(made) == 200
    assert all(set(p) == set(RANDOM) for p in made)
    assert all(1e-4 <= p["lr"] <= 1e-1 for p in made)
    assert all(0 <= p["drop"] <= 0.5 for p in made)
    assert all(type(p["layers"]) is int for p in made)
    # Both ends included, and every value drawn somewhere in 200 samples.
    assert {p["layers"] for p in made} == {1, 2, 3, 4}
    assert {p["act"] for p in made} == {"relu", "tanh", 3}
    # Log-uniform: about as many samples in each decade.
    decades = [sum(10**-k <= p["lr"] < 10 ** (-k + 1) for p in made) for k in (4, 3, 2)]
    assert min(decades) > 30


def test_random_search_is_reproducible_through_its_seed() -> None:
    def sample(seed: int) -> list[dict[str, Any]]:
        return params(parameters={"random": {"trials": 5, "seed": seed, "parameters": RANDOM}})

    assert sample(11) == sample(11)
    assert sample(11) != sample(12)


def test_an_int_range_of_one_value_is_allowed() -> None:
    space = {"trials": 3, "parameters": {"n": {"int": [3, 3]}}}
    assert params(parameters={"random": space}) == [{"n": 3}] * 3


# --- example runners and defaults -----------------------------------------------------------


def test_without_a_script_every_example_runner_runs_once() -> None:
    made = planned()

    assert [(t.name, t.script, t.params) for t in made.trials] == [
        (name, source, {"task": "a task"}) for name, source in EXAMPLES
    ]
    assert made.spec["limits"]["wallSeconds"] == SETTINGS.example_wall_seconds


def test_named_example_runners_run_alone_with_their_own_limits() -> None:
    made = planned(examples=["beta"], limits={"wallSeconds": 3})

    assert [t.name for t in made.trials] == ["beta"]
    assert made.spec["limits"]["wallSeconds"] == 3


def test_the_stored_spec_is_normalised() -> None:
    made = planned(
        task="  tab\there\x1b[2J  ",
        script=SCRIPT,
        objective={"metric": "loss"},
        requirements=["NumPy>=1.26"],
        maxParallel=4,
    )

    assert made.task == "  tabhere[2J  "
    assert made.spec["task"] == made.task
    assert made.spec["objective"] == {"metric": "loss", "goal": "minimize"}
    assert made.spec["requirements"] == ["numpy>=1.26"]
    assert made.spec["maxParallel"] == 4
    assert made.spec["script"] == SCRIPT
    assert made.spec["limits"] == DEFAULTS  # what the trials get, shown
    json.dumps(made.spec)  # stored as JSON


def test_limits_left_out_are_recorded_at_their_defaults_and_given_ones_kept() -> None:
    made = planned(script=SCRIPT, limits={"memoryMb": 512, "cpus": 0.5})
    assert made.spec["limits"] == {**DEFAULTS, "memoryMb": 512, "cpus": 0.5}
    assert DEFAULTS == {
        "wallSeconds": 60.0,
        "memoryMb": 256,
        "cpus": 1.0,
        "processes": 64,
        "outputKb": 1024,
        "workspaceMb": 64,
    }


@pytest.mark.parametrize("name", [limit.json_name for limit in LIMITS.values()])
def test_a_limit_given_as_zero_is_refused_not_the_default(name: str) -> None:
    rule = refused(script=SCRIPT, limits={name: 0})[f"limits.{name}"]
    assert rule.endswith("got 0") and "left out:" in rule


def test_a_goal_given_empty_is_refused_not_minimize() -> None:
    rule = refused(objective={"metric": "loss", "goal": ""})["objective.goal"]
    assert "left out: minimize" in rule


def test_trial_limits_turn_the_stored_units_into_the_sandboxs() -> None:
    stored = {
        "limits": {
            "wallSeconds": 2.5,
            "memoryMb": 64,
            "cpus": 0.5,
            "processes": 16,
            "outputKb": 3,
            "workspaceMb": 2,
        }
    }
    assert trial_limits(stored) == {
        "wall_seconds": 2.5,
        "memory_bytes": 64 * 2**20,
        "cpus": 0.5,
        "processes": 16,
        "output_bytes": 3 * 2**10,
        "workspace_bytes": 2 * 2**20,
    }
    # A spec without limits (stored by an older version, or damaged) runs with the
    # defaults, the ones the sandbox itself has.
    assert Limits(**trial_limits({})) == Limits()
    assert trial_limits({"limits": {"memoryMb": "x", "cpus": 0}}) == trial_limits({})


# --- caps and refusals -----------------------------------------------------------------------


def test_the_caps_themselves_are_accepted() -> None:
    grid = {"a": list(range(400)), "b": list(range(25))}
    assert len(params(parameters={"grid": grid})) == 10_000
    assert len(params(parameters={"random": {"trials": 10_000, "parameters": RANDOM}})) == 10_000
    assert len(params(parameters={"list": [{"i": i} for i in range(10_000)]})) == 10_000
    names = {f"p{i}": [1] for i in range(32)}
    assert params(parameters={"grid": names}) == [dict.fromkeys(names, 1)]
    made = planned(
        task="t" * 500,
        script=SCRIPT,
        maxParallel=64,
        retries=5,
        limits={"wallSeconds": 3600, "memoryMb": 8192, "cpus": 0.01, "outputKb": 16384},
    )
    assert len(made.trials) == 1


@pytest.mark.parametrize(
    ("fields", "field", "rule"),
    [
        ({"task": ""}, "task", "required"),
        ({"task": "\x00\x01"}, "task", "required"),
        ({"task": "x" * 501}, "task", "at most 500"),
        ({"script": "def (", "task": "t"}, "script", "does not compile"),
        ({"script": "x" * 200_000}, "script", "at most"),
        ({"parameters": {"grid": {"a": [1]}}}, "parameters", "need a script"),
        ({"examples": ["gamma"]}, "examples", "unknown example runners: gamma"),
        ({"examples": ["alpha", "alpha"]}, "examples", "once"),
        ({"script": SCRIPT, "examples": ["alpha"]}, "examples", "only without a script"),
        ({"objective": {"metric": "a b"}}, "objective.metric", "letters, digits"),
        ({"objective": {"metric": "loss", "goal": "best"}}, "objective.goal", "minimize"),
        ({"objective": {"goal": "maximize"}}, "objective.metric", "required with a goal"),
        ({"maxParallel": 65}, "maxParallel", "64"),
        ({"maxParallel": -1}, "maxParallel", "64"),
        ({"retries": 6}, "retries", "0 to 5"),
        ({"limits": {"wallSeconds": 0.05}}, "limits.wallSeconds", "0.1 to 3600"),
        ({"limits": {"memoryMb": 8193}}, "limits.memoryMb", "16 to 8192"),
        ({"limits": {"cpus": 9}}, "limits.cpus", "0.01 to 8"),
        ({"limits": {"processes": 4}}, "limits.processes", "8 to 4096"),
        ({"limits": {"outputKb": 16385}}, "limits.outputKb", "1 to 16384"),
        ({"limits": {"workspaceMb": -1}}, "limits.workspaceMb", "1 to 4096"),
        ({"limits": {"wallSeconds": "NaN"}}, "limits.wallSeconds", "0.1 to 3600"),
        ({"limits": {"cpus": "-Infinity"}}, "limits.cpus", "0.01 to 8"),
        ({"requirements": ["x @ file:///etc"]}, "requirements", "direct reference"),
    ],
)
def test_a_field_that_breaks_its_rule_is_named(
    fields: dict[str, Any], field: str, rule: str
) -> None:
    assert rule in refused(**fields)[field]


@pytest.mark.parametrize(
    ("space", "field", "rule"),
    [
        ({"grid": {}}, "parameters.grid", "at least one parameter"),
        ({"grid": {"lr": []}}, "parameters.grid.lr", "non-empty list"),
        ({"grid": {"lr": 0.1}}, "parameters.grid.lr", "non-empty list"),
        ({"grid": {"x": list(range(1001))}}, "parameters.grid.x", "at most 1000 values"),
        ({"grid": {"a": list(range(400)), "b": list(range(26))}}, "parameters.grid", "10000"),
        ({"grid": {f"p{i}": [1] for i in range(33)}}, "parameters.grid", "at most 32"),
        ({"grid": {"1x": [1]}}, "parameters.grid.1x", "not starting with a digit"),
        ({"list": []}, "parameters.list", "1 to 10000"),
        ({"list": [{}] * 10_001}, "parameters.list", "1 to 10000"),
        ({"list": [{"a": 1}, 2]}, "parameters.list[1]", "must be an object"),
        ({"list": [{"b c": 1}]}, "parameters.list[0].b c", "parameter names"),
        ({"list": [{"s": "x" * 17_000}]}, "parameters", "exceed 16384 bytes"),
        ({"random": {"trials": 0, "parameters": RANDOM}}, "parameters.random.trials", "1 to"),
        ({"random": {"trials": 10_001, "parameters": RANDOM}}, "parameters.random.trials", "1 to"),
        ({"random": {"trials": 1}}, "parameters.random.parameters", "at least one"),
        (
            {"random": {"trials": 1, "parameters": {"x": {"normal": [0, 1]}}}},
            "parameters.random.parameters.x",
            "must be one of",
        ),
        (
            {"random": {"trials": 1, "parameters": {"x": {"uniform": [1, 1]}}}},
            "parameters.random.parameters.x",
            "low < high",
        ),
        (
            {"random": {"trials": 1, "parameters": {"x": {"uniform": [0, "1"]}}}},
            "parameters.random.parameters.x",
            "low < high",
        ),
        (
            {"random": {"trials": 1, "parameters": {"x": {"loguniform": [0, 1]}}}},
            "parameters.random.parameters.x",
            "0 < low",
        ),
        (
            {"random": {"trials": 1, "parameters": {"x": {"int": [0.5, 3]}}}},
            "parameters.random.parameters.x",
            "whole numbers",
        ),
        (
            {"random": {"trials": 1, "parameters": {"x": {"choice": []}}}},
            "parameters.random.parameters.x",
            "1 to 1000 values",
        ),
    ],
)
def test_a_parameter_space_that_breaks_a_rule_is_named(
    space: dict[str, Any], field: str, rule: str
) -> None:
    assert rule in refused(script=SCRIPT, parameters=space)[field]


@pytest.mark.parametrize(
    ("space", "field"),
    [
        ({"grid": {"lr": [0.1, math.nan]}}, "parameters.grid.lr[1]"),
        ({"list": [{"a": 1}, {"lr": {"x": [math.inf]}}]}, "parameters.list[1].lr.x[0]"),
        ({"list": [-math.inf]}, "parameters.list[0]"),
        (
            {"random": {"trials": 1, "parameters": {"x": {"choice": [1, math.nan]}}}},
            "parameters.random.parameters.x.choice[1]",
        ),
        (
            {"random": {"trials": 1, "parameters": {"x": {"uniform": [-math.inf, 1]}}}},
            "parameters.random.parameters.x.uniform[0]",
        ),
    ],
)
def test_a_parameter_value_that_is_not_a_finite_number_is_named(
    space: dict[str, Any], field: str
) -> None:
    # No JSON body holds NaN or an infinity, but a gRPC client's Struct can.
    assert refused(script=SCRIPT, parameters=space) == {
        field: "must be a finite number, not NaN or infinity"
    }


def test_every_broken_rule_is_named_in_one_answer() -> None:
    problems = refused(
        task="",
        script=SCRIPT,
        parameters={"grid": {"lr": []}},
        maxParallel=99,
        retries=-2,
        limits={"cpus": math.pi * 10},
    )
    assert set(problems) == {
        "task",
        "parameters.grid.lr",
        "maxParallel",
        "retries",
        "limits.cpus",
    }
