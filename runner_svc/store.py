"""The runner's own database: every trial it accepted, and every execution.

A trial row is written before its container starts and keeps the result, so a
trial id that arrives again is answered from here instead of running again.
"""

from __future__ import annotations

import time
from typing import Any

import peewee

from prism.trial import Outcome, TrialResult

db = peewee.SqliteDatabase(None)
# 2: results, peak memory and artifacts.
SCHEMA_VERSION = 2

QUEUED, RUNNING, FINISHED = "queued", "running", "finished"


class Trial(peewee.Model):
    id = peewee.CharField(primary_key=True)
    state = peewee.CharField()
    params_json = peewee.TextField()
    received_at = peewee.FloatField()
    started_at = peewee.FloatField(null=True)
    finished_at = peewee.FloatField(null=True)
    outcome = peewee.CharField(null=True)
    reason = peewee.TextField(default="")
    exit_code = peewee.IntegerField(null=True)
    stdout = peewee.TextField(default="")
    stderr = peewee.TextField(default="")
    output_truncated = peewee.BooleanField(default=False)
    duration_seconds = peewee.FloatField(null=True)
    # The trial's result object as JSON; "" when it left none.
    result_json = peewee.TextField(default="")
    peak_memory_bytes = peewee.IntegerField(default=0)
    # A JSON list of strings: the output files left out, and why.
    artifacts_skipped_json = peewee.TextField(default="[]", column_name="artifacts_skipped")

    class Meta:
        database = db


class Execution(peewee.Model):
    """One container started for a trial: the count that must never exceed one."""

    trial = peewee.ForeignKeyField(Trial, backref="executions")
    started_at = peewee.FloatField()

    class Meta:
        database = db


class Artifact(peewee.Model):
    """A file of a finished trial's output folder."""

    trial = peewee.ForeignKeyField(Trial, backref="artifacts")
    position = peewee.IntegerField()
    name = peewee.TextField()
    data = peewee.BlobField()

    class Meta:
        database = db
        indexes = ((("trial", "position"), True),)


MODELS = [Trial, Execution, Artifact]


def admit(trial_id: str, params_json: str, *, ended: TrialResult | None = None) -> str | None:
    """Record a trial unless it is known; return its state before this call.
    With `ended`, a new trial is recorded as finished with it in the same
    transaction (a cancel that came first), so it is never left queued."""
    with db.atomic("IMMEDIATE"):
        row = Trial.get_or_none(Trial.id == trial_id)
        if row is not None:
            state: str = row.state
            return state
        Trial.create(id=trial_id, state=QUEUED, params_json=params_json, received_at=time.time())
        if ended is not None:
            finish(trial_id, ended)
        return None


def state(trial_id: str) -> str | None:
    """The trial's state here; None for one never recorded."""
    row = Trial.get_or_none(Trial.id == trial_id)
    return None if row is None else str(row.state)


def mark_started(trial_id: str) -> None:
    now = time.time()
    with db.atomic("IMMEDIATE"):
        Trial.update(state=RUNNING, started_at=now).where(Trial.id == trial_id).execute()
        Execution.create(trial=trial_id, started_at=now)


def finish(trial_id: str, result: TrialResult) -> TrialResult:
    """Record how the trial ended; returns the result as recorded."""
    with db.atomic("IMMEDIATE"):
        Trial.update(state=FINISHED, finished_at=time.time(), **result.columns()).where(
            Trial.id == trial_id
        ).execute()
        Artifact.delete().where(Artifact.trial == trial_id).execute()
        for position, artifact in enumerate(result.artifacts):
            Artifact.create(
                trial=trial_id, position=position, name=artifact.name, data=artifact.data
            )
    return result


def finished(trial_id: str) -> TrialResult | None:
    """The recorded result of a finished trial; None while it has not finished."""
    row = Trial.get_by_id(trial_id)
    if row.state != FINISHED:
        return None
    artifacts: Any = (
        Artifact.select(Artifact.name, Artifact.data)
        .where(Artifact.trial == trial_id)
        .order_by(Artifact.position)
        .tuples()
    )
    return TrialResult.from_columns(row, list(artifacts))


def recover() -> tuple[int, int]:
    """After a restart nothing is executing here. Forget trials that never
    started (they run when sent again) and end the interrupted ones as
    sandbox_error: their containers are gone with the old process."""
    with db.atomic("IMMEDIATE"):
        forgotten = Trial.delete().where(Trial.state == QUEUED).execute()
        interrupted = (
            Trial.update(
                state=FINISHED,
                finished_at=time.time(),
                outcome=Outcome.SANDBOX_ERROR.value,
                reason="the runner restarted while the trial was running",
                exit_code=-1,
            )
            .where(Trial.state == RUNNING)
            .execute()
        )
    return forgotten, interrupted
