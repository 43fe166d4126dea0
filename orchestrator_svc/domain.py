"""The orchestrator's words: trial and sweep states, planned trials and execution
ids. Plain values, no storage: the spec plans into them, the store keeps them, the
policy decides on them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Trial states. A trial moves forward only, except that an infrastructure failure
# with retries left sends it back to pending (orchestrator_svc.policy).
PENDING, DISPATCHED, RUNNING, FINISHED = "pending", "dispatched", "running", "finished"
IN_FLIGHT = (DISPATCHED, RUNNING)
# Sweep states.
SWEEP_RUNNING, SWEEP_DONE, SWEEP_ERROR, SWEEP_CANCELLED = "running", "done", "error", "cancelled"


@dataclass(frozen=True)
class PlannedTrial:
    name: str
    script: str
    params: dict[str, Any]


def execution_id(trial_id: str, attempt: int) -> str:
    """The id a runner knows a trial's `attempt`-th execution by: "<sweep>/<index>" for
    the first, "<sweep>/<index>@<k>" after, so a retry is a new id for the runner's
    exactly-once bookkeeping, and a late report of an earlier one is told apart."""
    return trial_id if attempt <= 1 else f"{trial_id}@{attempt}"


def split_execution_id(execution_id: str) -> tuple[str, int]:
    """(trial id, attempt) of an execution id."""
    trial_id, _, attempt = execution_id.partition("@")
    return trial_id, int(attempt) if attempt.isdigit() else 1


def sweep_of(trial_id: str) -> str:
    return trial_id.rpartition("/")[0]


def objective_value(value: Any) -> float | None:
    """A value a trial reported (its result's, or a metric line's) as a number an
    objective or a rule can rank: finite, no bool, and (from a row stored before the
    rules) no integer beyond 64 bits; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and abs(value) >= 2**63:
        return None
    return float(value) if math.isfinite(value) else None
