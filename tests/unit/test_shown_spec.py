"""Every answer's spec shows the limits in effect: those a sweep gave, and the default of
each one it left out, for specs stored by this version, by older ones that stored no
defaults, and for a damaged row alike."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format

from orchestrator_svc import store, views
from prism.limits import DEFAULTS


def shown(spec_json: str) -> dict[str, Any]:
    """The sweep's spec as the gateway prints it (fields at their zero value included)."""
    row = store.Sweep(id="s", task="the task", spec_json=spec_json, status="done", created_at=1.0)
    answer = views.sweep(row, store.SweepAnswer(row, [], False, {}, None, [], []), {})
    printed = json_format.MessageToDict(answer, always_print_fields_with_no_presence=True)
    spec: dict[str, Any] = printed["spec"]
    return spec


def test_a_spec_stored_without_limits_shows_the_defaults() -> None:
    # As an older version stored it: zeros and absent limits left out.
    spec = shown(json.dumps({"task": "the task", "script": "print(1)", "limits": {"cpus": 2}}))
    assert spec["limits"] == {**DEFAULTS, "cpus": 2}
    assert spec["limits"]["memoryMb"] == 256


def test_a_spec_stored_with_its_limits_shows_them() -> None:
    limits = {**DEFAULTS, "memoryMb": 512, "wallSeconds": 2.5}
    assert shown(json.dumps({"task": "the task", "limits": limits}))["limits"] == limits


@pytest.mark.parametrize(
    "stored", ["not json", "[1]", json.dumps({"task": "the task", "limits": {"memoryMb": "x"}})]
)
def test_a_damaged_spec_shows_its_task_and_the_limits_it_runs_with(stored: str) -> None:
    spec = shown(stored)
    assert (spec["task"], spec["limits"]) == ("the task", DEFAULTS)


def test_a_stored_spec_with_an_unreadable_field_still_shows_the_limits() -> None:
    spec = shown(json.dumps({"task": "the task", "maxParallel": "x", "limits": {"cpus": 2}}))
    assert (spec["task"], spec["limits"]) == ("the task", {**DEFAULTS, "cpus": 2})
