"""The Prism-compatible routes: the landing document, the default sweep (one
trial per example runner) and its results presented the way the original
demo did."""

from __future__ import annotations

from orchestrator_svc import domain, store
from orchestrator_svc.config import Settings
from orchestrator_svc.spec import Plan, plan
from prism.errors import InvalidArgument
from prism.trial import Outcome
from prism.v1 import orchestrator_pb2

# How much of a failed trial's stderr its "output" shows: the end of a
# traceback is the part that says what went wrong.
ERROR_TAIL_CHARS = 2000
# The characters of output one answer carries for all its trials (besides the floor of
# store.output_share: 2,000 characters a trial, 2,000,000 in all): a trial may print 16
# MiB, and the gateway must buffer the whole answer. As JSON a character takes 6 bytes at
# most, so both together stay under the gateway's 32 MiB for 1 to 10,000 trials.
OUTPUT_BUDGET_CHARS = 2 * 2**20

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
            "your own script over a parameter space: POST /v1/sweeps with a sweep spec, then "
            "GET /v1/sweeps/{id} (the README has the reference); every route needs an "
            "'Authorization: Bearer' token; the same API is gRPC service prism.v1.Orchestrator "
            "on this port (server reflection is on)"
        ),
    ),
)


def default_sweep(request: orchestrator_pb2.RunSweepRequest, settings: Settings) -> Plan:
    """POST / : the task checked with the original's rules and messages, and
    the sweep of every example runner, planned like any v1 sweep."""
    if not request.HasField("task"):
        raise InvalidArgument("task", "is required (a JSON object with a string field 'task')")
    return plan(orchestrator_pb2.SweepSpec(task=request.task), settings)


def runner_result(trial: store.Trial, share: int) -> orchestrator_pb2.RunnerResult:
    """The trial as the original showed it, its output cut to ``share`` characters."""
    if trial.outcome == Outcome.SUCCEEDED:
        output, status, cut = trial.stdout.strip(), "done", len(trial.stdout) > share
    else:
        output, status, cut = f"{trial.outcome}: {trial.reason}", "error", False
        stderr = trial.stderr.strip()
        if stderr:
            output += "\n" + stderr[-ERROR_TAIL_CHARS:]
    if cut:
        where = f"GET /v1/sweeps/{trial.sweep_id}/trials/{trial.position}/logs"
        output = output[:share] + f"\n[cut: {where} has all of it]"
    return orchestrator_pb2.RunnerResult(runner=trial.name, output=output, status=status)


def results(trials: list[store.Trial]) -> list[orchestrator_pb2.RunnerResult]:
    """The finished trials' results, read with store.sweep_with_trials(output_budget=
    OUTPUT_BUDGET_CHARS): each trial's output within its share of the budget."""
    share = store.output_share(len(trials), OUTPUT_BUDGET_CHARS)
    return [runner_result(t, share) for t in trials if t.state == domain.FINISHED]


def status(sweep: store.Sweep, trials: list[store.Trial]) -> orchestrator_pb2.SweepStatus:
    return orchestrator_pb2.SweepStatus(
        task=sweep.task,
        completed=results(trials),
        pending=[t.name for t in trials if t.state != domain.FINISHED],
        status=sweep.status,
    )
