"""The runner's own database: every trial it accepted, and every execution.

A trial row is written before its container starts and keeps the result, so a
trial id that arrives again is answered from here instead of running again.
"""

from __future__ import annotations

import time

import peewee

db = peewee.SqliteDatabase(None)

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

    class Meta:
        database = db


class Execution(peewee.Model):
    """One container started for a trial: the count that must never exceed one."""

    trial = peewee.ForeignKeyField(Trial, backref="executions")
    started_at = peewee.FloatField()

    class Meta:
        database = db


MODELS = [Trial, Execution]


def admit(trial_id: str, params_json: str) -> tuple[str | None, Trial]:
    """Record a trial unless it is known; return its state before this call."""
    with db.atomic("IMMEDIATE"):
        row = Trial.get_or_none(Trial.id == trial_id)
        if row is not None:
            return row.state, row
        row = Trial.create(
            id=trial_id, state=QUEUED, params_json=params_json, received_at=time.time()
        )
        return None, row


def mark_started(trial_id: str) -> None:
    now = time.time()
    with db.atomic("IMMEDIATE"):
        Trial.update(state=RUNNING, started_at=now).where(Trial.id == trial_id).execute()
        Execution.create(trial=trial_id, started_at=now)


def finish(
    trial_id: str,
    *,
    outcome: str,
    reason: str,
    exit_code: int,
    stdout: str,
    stderr: str,
    output_truncated: bool,
    duration_seconds: float,
) -> Trial:
    with db.atomic("IMMEDIATE"):
        Trial.update(
            state=FINISHED,
            finished_at=time.time(),
            outcome=outcome,
            reason=reason,
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
            output_truncated=output_truncated,
            duration_seconds=duration_seconds,
        ).where(Trial.id == trial_id).execute()
        return Trial.get_by_id(trial_id)


def get(trial_id: str) -> Trial:
    return Trial.get_by_id(trial_id)


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
                outcome="sandbox_error",
                reason="the runner restarted while the trial was running",
                exit_code=-1,
            )
            .where(Trial.state == RUNNING)
            .execute()
        )
    return forgotten, interrupted
