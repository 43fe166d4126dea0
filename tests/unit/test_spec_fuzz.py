"""No spec makes the planner fail other than with InvalidArgument, or plan
more than the caps allow. In process: this is the code every create goes
through, fed what the transcoder or a gRPC client can hand it (NaN and infinities
too: a Struct's numbers and a double can hold them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator_svc.config import EXAMPLES_DIR, Settings, load_examples
from orchestrator_svc.spec import MAX_PARAMS_BYTES, MAX_TRIALS, Plan, plan
from prism.errors import InvalidArgument
from prism.v1 import orchestrator_pb2

SETTINGS = Settings(
    address="127.0.0.1:0",
    data_dir=Path("/nonexistent"),
    api_token=None,
    runner_token=None,
    runners=(("r", "127.0.0.1:1"),),
    examples=load_examples(["runner-a", "runner-b"], EXAMPLES_DIR),
    example_wall_seconds=60,
    sync_wait_seconds=1,
    reconcile_seconds=1,
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)
names = st.sampled_from(["lr", "a", "1x", "", "b c", "x" * 70, "layers"])
distributions = st.dictionaries(
    st.sampled_from(["uniform", "loguniform", "int", "choice", "normal"]),
    json_values,
    max_size=2,
)
spaces = st.one_of(
    st.fixed_dictionaries({"grid": st.dictionaries(names, json_values, max_size=5)}),
    st.fixed_dictionaries(
        {
            "random": st.fixed_dictionaries(
                {
                    "trials": st.integers(-5, 2000),
                    "seed": st.integers(0, 2**32 - 1),
                    "parameters": st.dictionaries(names, distributions | json_values, max_size=5),
                }
            )
        }
    ),
    st.fixed_dictionaries({"list": st.lists(json_values, max_size=20)}),
)
specs = st.fixed_dictionaries(
    {"task": st.text(max_size=600)},
    optional={
        "script": st.sampled_from(["print(1)", "", "def (", "x = 1\n" * 10]),
        "examples": st.lists(st.sampled_from(["runner-a", "runner-b", "runner-z"]), max_size=3),
        "parameters": spaces,
        "objective": st.fixed_dictionaries(
            {}, optional={"metric": names, "goal": st.sampled_from(["minimize", "maximize", "x"])}
        ),
        "maxParallel": st.integers(-(2**31), 2**31 - 1),
        "retries": st.integers(-(2**31), 2**31 - 1),
        "limits": st.fixed_dictionaries(
            {},
            optional={
                "wallSeconds": st.floats(),
                "memoryMb": st.integers(-(2**31), 2**31 - 1),
                "cpus": st.floats(),
            },
        ),
        "requirements": st.lists(st.text(max_size=30), max_size=4),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs)
def test_any_spec_plans_or_names_what_is_wrong(raw: dict[str, Any]) -> None:
    try:
        spec = json_format.ParseDict(raw, orchestrator_pb2.SweepSpec())
    except json_format.ParseError:
        return  # the transcoder answers these itself, with a 400
    try:
        planned = plan(spec, SETTINGS)
    except InvalidArgument as error:
        assert error.violations and all(field and rule for field, rule in error.violations)
        return
    assert isinstance(planned, Plan)
    assert 1 <= len(planned.trials) <= MAX_TRIALS
    assert all(len(json.dumps(t.params)) <= MAX_PARAMS_BYTES for t in planned.trials)
