"""The orchestrator's database: sweeps, their trials, the scripts they run and
an append-only event log with per-sweep sequence numbers.

Every state change is one transaction that also appends its event, and it is
committed before the change is acted on (a trial is marked dispatched before
it is sent), so a restart finds everything that might have happened.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import peewee

db = peewee.SqliteDatabase(None)

# Trial states. A trial moves forward only: pending -> dispatched -> running -> finished.
PENDING, DISPATCHED, RUNNING, FINISHED = "pending", "dispatched", "running", "finished"
# Sweep states.
SWEEP_RUNNING, SWEEP_DONE, SWEEP_ERROR = "running", "done", "error"


class BaseModel(peewee.Model):
    class Meta:
        database = db


class Sweep(BaseModel):
    id = peewee.CharField(primary_key=True)
    task = peewee.TextField()
    status = peewee.CharField(index=True)
    created_at = peewee.FloatField()
    finished_at = peewee.FloatField(null=True)
    last_seq = peewee.IntegerField(default=0)


class Script(BaseModel):
    """Trial sources, stored once per distinct text."""

    sha256 = peewee.CharField(primary_key=True)
    source = peewee.TextField()


class Trial(BaseModel):
    id = peewee.CharField(primary_key=True)  # "<sweep id>/<index>"
    sweep = peewee.ForeignKeyField(Sweep, backref="trials", on_delete="CASCADE")
    sweep_id: str  # peewee's column accessor for `sweep`, declared for the type checker
    # The trial's place in its sweep ("index" would shadow Model.index).
    position = peewee.IntegerField()
    name = peewee.CharField()
    script = peewee.ForeignKeyField(Script)
    params_json = peewee.TextField()
    wall_seconds = peewee.FloatField()
    state = peewee.CharField(index=True)
    runner = peewee.CharField(null=True, index=True)
    dispatched_at = peewee.FloatField(null=True)
    started_at = peewee.FloatField(null=True)
    finished_at = peewee.FloatField(null=True)
    outcome = peewee.CharField(null=True)
    reason = peewee.TextField(default="")
    exit_code = peewee.IntegerField(null=True)
    stdout = peewee.TextField(default="")
    stderr = peewee.TextField(default="")
    output_truncated = peewee.BooleanField(default=False)
    duration_seconds = peewee.FloatField(null=True)

    class Meta:
        indexes = ((("sweep", "position"), True),)


class Event(BaseModel):
    sweep = peewee.ForeignKeyField(Sweep, backref="events", on_delete="CASCADE")
    seq = peewee.IntegerField()
    kind = peewee.CharField()
    trial_index = peewee.IntegerField(null=True)
    data = peewee.TextField(default="{}")
    at = peewee.FloatField()

    class Meta:
        indexes = ((("sweep", "seq"), True),)


MODELS = [Sweep, Script, Trial, Event]


@dataclass(frozen=True)
class PlannedTrial:
    name: str
    script: str
    params: dict[str, Any]
    wall_seconds: float


@dataclass(frozen=True, kw_only=True)
class TrialResult:
    outcome: str
    reason: str
    exit_code: int
    stdout: str
    stderr: str
    output_truncated: bool
    duration_seconds: float


def _append(sweep_id: str, kind: str, trial_index: int | None = None, **data: Any) -> None:
    """Append an event; call inside the transaction that made the change."""
    seq = Sweep.get_by_id(sweep_id).last_seq + 1
    Sweep.update(last_seq=seq).where(Sweep.id == sweep_id).execute()
    Event.create(
        sweep=sweep_id,
        seq=seq,
        kind=kind,
        trial_index=trial_index,
        data=json.dumps(data),
        at=time.time(),
    )


def create_sweep(sweep_id: str, task: str, trials: list[PlannedTrial]) -> None:
    with db.atomic("IMMEDIATE"):
        Sweep.create(id=sweep_id, task=task, status=SWEEP_RUNNING, created_at=time.time())
        _append(sweep_id, "sweep_created", trials=len(trials))
        for index, planned in enumerate(trials):
            sha = hashlib.sha256(planned.script.encode()).hexdigest()
            Script.insert(sha256=sha, source=planned.script).on_conflict_ignore().execute()
            Trial.create(
                id=f"{sweep_id}/{index}",
                sweep=sweep_id,
                position=index,
                name=planned.name,
                script=sha,
                params_json=json.dumps(planned.params),
                wall_seconds=planned.wall_seconds,
                state=PENDING,
            )
            _append(sweep_id, "trial_queued", index, name=planned.name)


def _with_scripts(where: Any) -> list[tuple[Trial, str]]:
    query = (
        Trial.select(Trial, Script).join(Script).where(where).order_by(Trial.sweep, Trial.position)
    )
    return [(trial, trial.script.source) for trial in query]


def pending_trials() -> list[tuple[Trial, str]]:
    """Trials not yet sent to any runner, oldest sweep first, with their scripts."""
    query = (
        Trial.select(Trial, Script)
        .join(Script)
        .switch(Trial)
        .join(Sweep)
        .where(Trial.state == PENDING)
        .order_by(Sweep.created_at, Trial.position)
    )
    return [(trial, trial.script.source) for trial in query]


def assign(trial_id: str, runner: str) -> bool:
    """Mark a pending trial as dispatched to `runner`; False if it is not pending."""
    with db.atomic("IMMEDIATE"):
        trial = Trial.get_by_id(trial_id)
        if trial.state != PENDING:
            return False
        trial.state, trial.runner, trial.dispatched_at = DISPATCHED, runner, time.time()
        trial.save()
        _append(trial.sweep_id, "trial_dispatched", trial.position, runner=runner)
        return True


def unassign(trial_id: str, runner: str, why: str) -> None:
    """Put a dispatched trial back to pending: it is known never to have reached `runner`."""
    with db.atomic("IMMEDIATE"):
        trial = Trial.get_by_id(trial_id)
        if trial.state != DISPATCHED or trial.runner != runner:
            return
        trial.state, trial.runner, trial.dispatched_at = PENDING, None, None
        trial.save()
        _append(trial.sweep_id, "trial_requeued", trial.position, runner=runner, reason=why)


def release_unknown_runners(runners: list[str]) -> list[str]:
    """Trials held by runners no longer configured cannot be answered for: queue
    them again. Returns their ids."""
    with db.atomic("IMMEDIATE"):
        held = list(
            Trial.select().where(
                Trial.state.in_([DISPATCHED, RUNNING]) & Trial.runner.not_in(runners)
            )
        )
        for trial in held:
            old = trial.runner
            trial.state, trial.runner, trial.dispatched_at, trial.started_at = (
                PENDING,
                None,
                None,
                None,
            )
            trial.save()
            _append(
                trial.sweep_id,
                "trial_requeued",
                trial.position,
                runner=old,
                reason="runner no longer configured",
            )
    return [t.id for t in held]


def holders() -> set[str]:
    """Runners holding trials that have not finished."""
    query = Trial.select(Trial.runner).where(Trial.state.in_([DISPATCHED, RUNNING])).distinct()
    return {t.runner for t in query if t.runner}


def mark_started(trial_id: str) -> None:
    with db.atomic("IMMEDIATE"):
        trial = Trial.get_or_none(Trial.id == trial_id)
        if trial is None or trial.state != DISPATCHED:
            return
        trial.state, trial.started_at = RUNNING, time.time()
        trial.save()
        _append(trial.sweep_id, "trial_started", trial.position, runner=trial.runner)


def finish_trial(trial_id: str, result: TrialResult) -> str | None:
    """Record a trial's result, once: a second report of it changes nothing.
    Returns the sweep's new status when this result finished the sweep."""
    with db.atomic("IMMEDIATE"):
        trial = Trial.get_or_none(Trial.id == trial_id)
        if trial is None or trial.state == FINISHED:
            return None
        trial.state, trial.finished_at = FINISHED, time.time()
        trial.outcome, trial.reason, trial.exit_code = (
            result.outcome,
            result.reason,
            result.exit_code,
        )
        trial.stdout, trial.stderr = result.stdout, result.stderr
        trial.output_truncated, trial.duration_seconds = (
            result.output_truncated,
            result.duration_seconds,
        )
        trial.save()
        _append(
            trial.sweep_id,
            "trial_finished",
            trial.position,
            outcome=result.outcome,
            reason=result.reason,
        )
        return _finish_sweep_if_done(trial.sweep_id)


def _finish_sweep_if_done(sweep_id: str) -> str | None:
    outcomes = [
        t.outcome for t in Trial.select(Trial.state, Trial.outcome).where(Trial.sweep == sweep_id)
    ]
    if any(o is None for o in outcomes):
        return None
    status = SWEEP_DONE if "succeeded" in outcomes else SWEEP_ERROR
    Sweep.update(status=status, finished_at=time.time()).where(
        (Sweep.id == sweep_id) & (Sweep.status == SWEEP_RUNNING)
    ).execute()
    _append(sweep_id, "sweep_finished", status=status)
    return status


def finish_complete_sweeps() -> list[str]:
    """Sweeps whose last trial finished just before a crash: finish them now."""
    finished = []
    with db.atomic("IMMEDIATE"):
        for sweep in Sweep.select().where(Sweep.status == SWEEP_RUNNING):
            if _finish_sweep_if_done(sweep.id) is not None:
                finished.append(sweep.id)
    return finished


def in_flight(runner: str) -> list[tuple[Trial, str]]:
    """Trials sent to `runner` and not finished, with their scripts."""
    return _with_scripts((Trial.runner == runner) & Trial.state.in_([DISPATCHED, RUNNING]))


def sweep_with_trials(sweep_id: str) -> tuple[Sweep, list[Trial]] | None:
    sweep = Sweep.get_or_none(Sweep.id == sweep_id)
    if sweep is None:
        return None
    return sweep, list(Trial.select().where(Trial.sweep == sweep_id).order_by(Trial.position))


def sweep_status(sweep_id: str) -> str | None:
    sweep = Sweep.get_or_none(Sweep.id == sweep_id)
    return None if sweep is None else sweep.status
