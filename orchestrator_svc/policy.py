"""What happens to a trial that ended and to a sweep whose trials all did: retries
and final states. Pure functions, called inside the store's transactions, so the
rules are read and tested in one place."""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator_svc.domain import SWEEP_CANCELLED, SWEEP_DONE, SWEEP_ERROR
from prism.trial import Outcome

# A retry waits 2, 4, 8… s (at most 30): an engine restarting or a runner coming
# back gets time to, instead of the retry failing at once the same way.
RETRY_BACKOFF_SECONDS, MAX_RETRY_BACKOFF_SECONDS = 2.0, 30.0


def retry_backoff(attempts: int) -> float:
    """How long a trial waits before its next execution, after `attempts` of them."""
    return float(min(RETRY_BACKOFF_SECONDS * 2 ** (attempts - 1), MAX_RETRY_BACKOFF_SECONDS))


def retries(outcome: Outcome, *, attempts: int, allowed: int, sweep_running: bool) -> bool:
    """Whether an execution that ended with `outcome` is retried: only a failure of the
    infrastructure (the trial's own outcome is final), only while its sweep runs (a
    cancelled sweep keeps what it has), and at most `allowed` times."""
    return sweep_running and outcome.infrastructure and attempts <= allowed


def final_status(outcomes: Iterable[str | None], *, cancelled: bool) -> str | None:
    """A sweep's final state once every trial has an outcome (None before): cancelled
    stays cancelled; otherwise done when any trial succeeded, error when none did."""
    outcomes = list(outcomes)
    if any(outcome is None for outcome in outcomes):
        return None
    if cancelled:
        return SWEEP_CANCELLED
    return SWEEP_DONE if Outcome.SUCCEEDED in outcomes else SWEEP_ERROR
