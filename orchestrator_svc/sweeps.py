"""The Prism-compatible sweep: validating a task, planning the default sweep
(one trial per example runner) and presenting its results the way the
original demo did."""

from __future__ import annotations

import unicodedata

from orchestrator_svc import store
from orchestrator_svc.config import Settings
from prism.errors import InvalidArgument
from prism.v1 import orchestrator_pb2

MAX_TASK_CHARS = 500
# How much of a failed trial's stderr its "output" shows: the end of a
# traceback is the part that says what went wrong.
ERROR_TAIL_CHARS = 2000

LANDING = orchestrator_pb2.Landing(
    name="prism",
    description=(
        "Prism runs one task as a sweep of parallel trials, each in its own hardened "
        "container sandbox on a runner service, and returns the aggregated results."
    ),
    usage=orchestrator_pb2.Usage(
        start='POST / with {"task": "..."} runs the default sweep and returns its results',
        poll="GET /sweeps/{sweepId} shows a sweep's progress and results",
        api=(
            "every route needs an 'Authorization: Bearer' token; the same API is gRPC service "
            "prism.v1.Orchestrator on this port (server reflection is on)"
        ),
    ),
)


def clean_task(request: orchestrator_pb2.RunSweepRequest) -> str:
    if not request.HasField("task"):
        raise InvalidArgument("task", "is required (a JSON object with a string field 'task')")
    task = "".join(ch for ch in request.task if unicodedata.category(ch) != "Cc")
    if not task.strip():
        raise InvalidArgument("task", "must not be empty")
    if len(task) > MAX_TASK_CHARS:
        raise InvalidArgument(
            "task", f"must be at most {MAX_TASK_CHARS} characters, got {len(task)}"
        )
    return task


def plan_default(settings: Settings, task: str) -> list[store.PlannedTrial]:
    return [
        store.PlannedTrial(
            name=name,
            script=script,
            params={"task": task},
            wall_seconds=settings.example_wall_seconds,
        )
        for name, script in settings.examples
    ]


def runner_result(trial: store.Trial) -> orchestrator_pb2.RunnerResult:
    if trial.outcome == "succeeded":
        return orchestrator_pb2.RunnerResult(
            runner=trial.name, output=trial.stdout.strip(), status="done"
        )
    output = f"{trial.outcome}: {trial.reason}"
    stderr = trial.stderr.strip()
    if stderr:
        output += "\n" + stderr[-ERROR_TAIL_CHARS:]
    return orchestrator_pb2.RunnerResult(runner=trial.name, output=output, status="error")


def results(trials: list[store.Trial]) -> list[orchestrator_pb2.RunnerResult]:
    return [runner_result(t) for t in trials if t.state == store.FINISHED]


def status(sweep: store.Sweep, trials: list[store.Trial]) -> orchestrator_pb2.SweepStatus:
    return orchestrator_pb2.SweepStatus(
        task=sweep.task,
        completed=results(trials),
        pending=[t.name for t in trials if t.state != store.FINISHED],
        status=sweep.status,
    )
