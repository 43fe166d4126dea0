"""The orchestrator's database: sweeps (with their validated spec), their
trials, the scripts they run, the trials' artifacts and an append-only event
log with per-sweep sequence numbers.

Every state change is one transaction that also appends its event, and it is
committed before the change is acted on (a trial is marked dispatched before
it is sent), so a restart finds everything that might have happened. What the
change is (retry or not, the sweep's final state, which trial goes next) is
decided by orchestrator_svc.policy and orchestrator_svc.scheduler; this module
only reads and writes.

A trial's executions are numbered (`attempts`), each with its own id
(orchestrator_svc.domain.execution_id), so a late report from an earlier
execution is recognised and ignored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import peewee

from orchestrator_svc import domain, policy, scheduler, search
from orchestrator_svc import spec as specs
from orchestrator_svc.domain import (
    DISPATCHED,
    FINISHED,
    IN_FLIGHT,
    PENDING,
    RUNNING,
    SWEEP_CANCELLED,
    SWEEP_RUNNING,
    PlannedTrial,
)
from prism import limits
from prism.trial import Outcome, TrialResult, not_run

db = peewee.SqliteDatabase(None)
SCHEMA_VERSION = 5

# What a trial's output shows of itself at least, where outputs are shown together.
OUTPUT_SHARE_CHARS = 2000


class BaseModel(peewee.Model):
    class Meta:
        database = db
        # A save writes the columns that were set, not the whole row (a trial's output
        # and result among them) on every change of its state.
        only_save_dirty = True


class Sweep(BaseModel):
    id = peewee.CharField(primary_key=True)
    task = peewee.TextField()
    # The validated spec as the API shows it (JSON field names).
    spec_json = peewee.TextField()
    request_id = peewee.CharField(null=True, unique=True)
    status = peewee.CharField(index=True)
    created_at = peewee.FloatField(index=True)
    finished_at = peewee.FloatField(null=True)
    last_seq = peewee.IntegerField(default=0)
    # An adaptive search's trial budget (0: the trials were planned at creation).
    budget = peewee.IntegerField(default=0)
    # When maxDurationSeconds runs out (epoch seconds), if it has one.
    deadline = peewee.FloatField(null=True)
    # Why it stopped before its last trial: "target_reached", "deadline".
    stop_reason = peewee.CharField(default="")

    @property
    def spec(self) -> dict[str, Any]:
        """Shared by every read of the same spec: never modify it."""
        return read_spec(self.spec_json)

    @property
    def open(self) -> bool:
        """Running, and taking no stop: its trials may start, be retried, be asked for."""
        return bool(self.status == SWEEP_RUNNING and not self.stop_reason)


@functools.lru_cache(maxsize=64)
def read_spec(spec_json: str) -> dict[str, Any]:
    """A stored spec with the limits in effect filled in (a spec stored before they were
    recorded left the defaults out); the limits alone when what is stored cannot be read
    as one (a damaged row: its trials still dispatch, with the defaults, every other
    sweep's too, and reads answer).

    Parsed once per text and shared (a spec is never changed, and one listing 10,000
    parameter sets is read at every dispatch and every trial's end): never modify it."""
    try:
        spec = json.loads(spec_json)
    except (ValueError, RecursionError):
        spec = None
    if not isinstance(spec, dict):
        return {"limits": limits.DEFAULTS.copy()}
    return {**spec, "limits": limits.effective(spec.get("limits"))}


class Script(BaseModel):
    """Trial sources, stored once per distinct text."""

    sha256 = peewee.CharField(primary_key=True)
    source = peewee.TextField()


class Trial(BaseModel):
    id = peewee.CharField(primary_key=True)  # "<sweep id>/<position>"
    sweep = peewee.ForeignKeyField(Sweep, backref="trials", on_delete="CASCADE")
    sweep_id: str  # peewee's column accessor for `sweep`, declared for the type checker
    # The trial's place in its sweep ("index" would shadow Model.index).
    position = peewee.IntegerField()
    name = peewee.CharField()
    script = peewee.ForeignKeyField(Script)
    params_json = peewee.TextField()
    state = peewee.CharField(index=True)
    attempts = peewee.IntegerField(default=0)
    # A retried trial is not dispatched again before this time (epoch seconds).
    not_before = peewee.FloatField(default=0.0)
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
    result_json = peewee.TextField(default="")
    peak_memory_bytes = peewee.BigIntegerField(default=0)
    artifacts_skipped_json = peewee.TextField(default="[]")
    # Early stopping: where the rule stopped it (once decided, for good), and the
    # [step, value] pairs told to the rule.
    pruned_step = peewee.BigIntegerField(null=True)
    pruned_value = peewee.FloatField(null=True)
    intermediate_json = peewee.TextField(default="")
    # Lower is better: a succeeded trial's finite objective value, negated when the goal
    # is to maximize; NULL for every other trial (written once, when it finishes). Stored
    # so that best-first pages, the best trial and the history are read by the index.
    objective_rank = peewee.FloatField(null=True)

    class Meta:
        # Every read of a sweep's trials is a search of one of these, never a scan of the
        # table (tests/unit/test_query_plans.py checks each query's plan): (sweep,
        # position) lists them by index; (sweep, state, position) and (sweep, outcome,
        # position) list those in one state or with one outcome by index, and find a
        # sweep's pending ones; (sweep, objective_rank, position) lists them best first;
        # (sweep, state, outcome) counts them by both from the index alone, as (state,
        # outcome) does over every sweep for the metrics (orchestrator_svc.metrics).
        # Opening an older file adds those it lacks.
        indexes = (
            (("sweep", "position"), True),
            (("state", "outcome"), False),
            (("sweep", "state", "position"), False),
            (("sweep", "outcome", "position"), False),
            (("sweep", "objective_rank", "position"), False),
            (("sweep", "state", "outcome"), False),
        )

    @property
    def artifacts_skipped(self) -> list[str]:
        """The notes as stored; none when what is stored is not a list of strings (a
        damaged row: reads stay total)."""
        try:
            notes = json.loads(self.artifacts_skipped_json)
        except (ValueError, RecursionError):
            return []
        if not isinstance(notes, list):
            return []
        return [note for note in notes if isinstance(note, str)]

    @property
    def execution_id(self) -> str:
        """The id the runner knows the current execution by."""
        return domain.execution_id(self.id, self.attempts)


class Artifact(BaseModel):
    trial = peewee.ForeignKeyField(Trial, backref="artifact_rows", on_delete="CASCADE")
    name = peewee.TextField()
    size = peewee.IntegerField()
    data = peewee.BlobField()

    class Meta:
        indexes = ((("trial", "name"), True),)


class Event(BaseModel):
    sweep = peewee.ForeignKeyField(Sweep, backref="events", on_delete="CASCADE")
    seq = peewee.IntegerField()
    kind = peewee.CharField()
    trial_index = peewee.IntegerField(null=True)
    data = peewee.TextField(default="{}")
    at = peewee.FloatField()

    class Meta:
        indexes = ((("sweep", "seq"), True),)


class Abandoned(BaseModel):
    """An execution given up on because its runner was unreachable, which that
    runner may still be running: it is told to stop it when it is back. Gone
    once the runner has reported the execution's end. (A table added to schema
    3: opening an older file creates it.)"""

    execution_id = peewee.CharField(primary_key=True)
    runner = peewee.CharField(index=True)


class SearchLog(BaseModel):
    """An adaptive sweep's Optuna journal (orchestrator_svc.search), in order."""

    sweep = peewee.ForeignKeyField(Sweep, on_delete="CASCADE")
    number = peewee.IntegerField()
    body = peewee.TextField()

    class Meta:
        indexes = ((("sweep", "number"), True),)


MODELS = [Sweep, Script, Trial, Artifact, Event, Abandoned, SearchLog]


# The columns schema 4 added to schema 3's tables, as SQLite declares them.
_ADDED_IN_4 = {
    Sweep: {
        "budget": "INTEGER NOT NULL DEFAULT 0",
        "deadline": "REAL",
        "stop_reason": "VARCHAR(255) NOT NULL DEFAULT ''",
    },
    Trial: {
        "pruned_step": "INTEGER",
        "pruned_value": "REAL",
        "intermediate_json": "TEXT NOT NULL DEFAULT ''",
    },
}


# The columns schema 5 added to schema 4's tables.
_ADDED_IN_5 = {Trial: {"objective_rank": "REAL"}}


def migrate(found: int) -> bool:
    """Bring a file of schema `found` to this one (the new tables and indexes are made
    after); False when it cannot be."""
    if found not in (3, 4):
        return False
    for added in [_ADDED_IN_4] * (found == 3) + [_ADDED_IN_5]:
        for model, columns in added.items():
            table = model._meta.table_name  # type: ignore[attr-defined]
            for name, kind in columns.items():
                db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {kind}')
    _rank_finished()
    return True


def _rank_finished() -> None:
    """Schema 5: the objective rank of every trial that succeeded before it, read from
    its stored result by the rule that ranks a new one (_rank)."""
    sweeps: Any = Sweep.select(Sweep.id, Sweep.spec_json).tuples()
    for sweep_id, spec_json in sweeps:
        spec = read_spec(spec_json)
        if not (spec.get("objective") or {}).get("metric"):
            continue
        succeeded: Any = (
            Trial.select(Trial.id, Trial.result_json)
            .where((Trial.sweep == sweep_id) & (Trial.outcome == Outcome.SUCCEEDED))
            .tuples()
        )
        for trial_id, result_json in list(succeeded):
            try:
                result = json.loads(result_json) if result_json else None
            except (ValueError, RecursionError):
                continue
            rank = _rank(spec, result) if isinstance(result, dict) else None
            if rank is not None:
                Trial.update(objective_rank=rank).where(Trial.id == trial_id).execute()


@dataclass(frozen=True)
class Dispatchable:
    trial: Trial
    source: str
    spec: dict[str, Any]
    # The sweep was cancelled: the runner is told to stop the trial instead.
    cancelled: bool = False
    # Since when the trial could have been dispatched (epoch seconds): its sweep's
    # creation, or its last requeue or retry backoff. What its dispatch waited from.
    ready_since: float = 0.0


def _append(sweep_id: str, kind: str, trial_index: int | None = None, **data: Any) -> None:
    """Append an event; call inside the transaction that made the change."""
    _append_many(sweep_id, [(kind, trial_index, json.dumps(data))])


def _append_many(sweep_id: str, events: list[tuple[str, int | None, str]]) -> None:
    """Append (kind, trial index, data as JSON text) events in order, with one read and
    one write of the sweep's sequence; call inside the transaction that made the change."""
    # The sequence moved on and read back in one statement (the sweep's row is not read).
    last = db.execute_sql(_TAKE_SEQ, (len(events), sweep_id)).fetchone()[0]
    now = time.time()
    rows = [
        (sweep_id, last - len(events) + number, kind, trial_index, data, now)
        for number, (kind, trial_index, data) in enumerate(events, start=1)
    ]
    # One prepared statement run per row: a flood of metric events costs a sixth of
    # what Peewee's insert_many (one statement built value by value) does.
    db.cursor().executemany(_INSERT_EVENT, rows)


_TAKE_SEQ = (
    f'UPDATE "{Sweep._meta.table_name}" SET {Sweep.last_seq.column_name} = '  # type: ignore[attr-defined]
    f"{Sweep.last_seq.column_name} + ? WHERE {Sweep.id.column_name} = ? "
    f"RETURNING {Sweep.last_seq.column_name}"
)
_EVENT_COLUMNS = (Event.sweep, Event.seq, Event.kind, Event.trial_index, Event.data, Event.at)
_INSERT_EVENT = (
    f'INSERT INTO "{Event._meta.table_name}" '  # type: ignore[attr-defined]
    f"({', '.join(column.column_name for column in _EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _EVENT_COLUMNS)})"
)


# The adaptive sweeps' studies, by sweep id: loaded from the journal on first use,
# dropped when their sweep finishes, and those a transaction used when it fails (what
# it wrote to their journals is not in the store).
_searches: dict[str, search.Search] = {}
# The sweeps whose studies the transaction under way has used.
_used: set[str] = set()
# Sweeps whose studies could not be read (not tried again until a restart).
_unreadable: set[str] = set()
# (runner, execution id) of trials a committed change stopped (a pruned trial, a sweep
# that reached its target or deadline): the dispatcher takes them and tells the runners.
_stops: list[tuple[str, str]] = []
_stops_lock = threading.Lock()


@contextlib.contextmanager
def _writing() -> Iterator[list[tuple[str, str]]]:
    """A write transaction; yields the list of trials it stops, handed to the
    dispatcher (take_stops) once it committed."""
    stops: list[tuple[str, str]] = []
    _used.clear()
    try:
        with db.atomic("IMMEDIATE"):
            yield stops
    except BaseException:
        for sweep_id in _used:
            _searches.pop(sweep_id, None)
        raise
    with _stops_lock:
        _stops.extend(stops)


def take_stops() -> list[tuple[str, str]]:
    """The (runner, execution id) of the trials committed changes stopped since the
    last call."""
    with _stops_lock:
        taken = list(_stops)
        _stops.clear()
    return taken


def _search(sweep: Sweep) -> search.Search:
    """The sweep's study, read from its journal the first time."""
    _used.add(sweep.id)
    if sweep.id in _unreadable:
        raise search.SearchFailed("its study could not be read")
    found = _searches.get(sweep.id)
    if found is None:
        query: Any = (
            SearchLog.select(SearchLog.body)
            .where(SearchLog.sweep == sweep.id)
            .order_by(SearchLog.number)
            .tuples()
        )
        spec = sweep.spec

        def write(number: int, rows: list[dict[str, Any]]) -> None:
            SearchLog.insert_many(
                [(sweep.id, number + i, json.dumps(row)) for i, row in enumerate(rows)],
                fields=[SearchLog.sweep, SearchLog.number, SearchLog.body],
            ).execute()

        try:
            logs = [json.loads(body) for (body,) in query]
            found = search.Search(sweep.id, spec, specs.stored_space(spec), logs, write)
        except Exception as error:  # its spec or journal cannot be read: it alone fails
            _unreadable.add(sweep.id)
            raise search.SearchFailed(f"{type(error).__name__}: {error}") from error
        _searches[sweep.id] = found
    return found


def _objective(spec: dict[str, Any], result: TrialResult) -> float | None:
    """The trial's objective value: its result's metric, when it succeeded with a
    finite number there."""
    metric = (spec.get("objective") or {}).get("metric")
    if not metric or result.outcome != Outcome.SUCCEEDED or not result.result:
        return None
    return domain.objective_value(result.result.get(metric))


def _rank(spec: dict[str, Any], result: Mapping[str, Any] | None) -> float | None:
    """A succeeded trial's objective rank (Trial.objective_rank) from its result: the
    objective's finite value, negated when the goal is to maximize, so that lower is
    better whatever the goal; None without one (or without a single objective)."""
    objective = spec.get("objective") or {}
    metric = objective.get("metric")
    value = domain.objective_value(result.get(metric)) if metric and result else None
    if value is None:
        return None
    return -value if objective.get("goal") == "maximize" else value


def _objective_values(spec: dict[str, Any], result: TrialResult) -> list[float] | None:
    """What the sampler is told of a trial: each objective's value, or None (failed)
    unless it succeeded with a finite number for every one."""
    objectives = spec.get("objectives") or [spec.get("objective") or {}]
    if result.outcome != Outcome.SUCCEEDED or not result.result:
        return None
    values = [domain.objective_value(result.result.get(o.get("metric", ""))) for o in objectives]
    return None if None in values else values  # type: ignore[return-value]


def create_sweep(
    sweep_id: str,
    task: str,
    spec: dict[str, Any],
    trials: list[PlannedTrial],
    request_id: str | None = None,
) -> str:
    """Record a sweep and its queued trials; with a request id already used,
    record nothing and return the id of the sweep that request made."""
    with db.atomic("IMMEDIATE"):
        if request_id:
            earlier = Sweep.get_or_none(Sweep.request_id == request_id)
            if earlier is not None:
                return str(earlier.id)
        now = time.time()
        seconds = spec.get("maxDurationSeconds")
        budget = int(spec["search"]["trials"]) if spec.get("search") else 0
        Sweep.create(
            id=sweep_id,
            task=task,
            spec_json=json.dumps(spec),
            request_id=request_id or None,
            status=SWEEP_RUNNING,
            created_at=now,
            budget=budget,
            deadline=None if seconds is None else now + float(seconds),
        )
        if budget:
            source = spec["script"]
            sha = hashlib.sha256(source.encode()).hexdigest()
            Script.insert(sha256=sha, source=source).on_conflict_ignore().execute()
        _append(sweep_id, "sweep_created", trials=budget or len(trials))
        # Up to 10,000 trials: their rows and events written in batches, not one by one.
        scripts = {p.script: hashlib.sha256(p.script.encode()).hexdigest() for p in trials}
        for source, sha in scripts.items():
            Script.insert(sha256=sha, source=source).on_conflict_ignore().execute()
        rows = [
            {
                "id": f"{sweep_id}/{index}",
                "sweep": sweep_id,
                "position": index,
                "name": planned.name,
                "script": scripts[planned.script],
                "params_json": json.dumps(planned.params),
                "state": PENDING,
            }
            for index, planned in enumerate(trials)
        ]
        for start in range(0, len(rows), _INSERT_BATCH):
            Trial.insert_many(rows[start : start + _INSERT_BATCH]).execute()
        _append_many(
            sweep_id,
            [
                ("trial_queued", index, json.dumps({"name": planned.name}))
                for index, planned in enumerate(trials)
            ],
        )
        return sweep_id


# Rows a multi-row insert takes: well within SQLite's bound on a statement's variables.
_INSERT_BATCH = 500


def ask_trials(free: int) -> int | None:
    """Ask the adaptive sweeps' samplers for trials to fill up to `free` runner slots:
    each open sweep at most its budget and its maxParallel (the sweep with the fewest
    trials waiting or in flight first), each asked-for trial recorded pending in the
    transaction its sampler's journal is written in. A sweep whose sampler fails
    stops (search_failed), alone. Returns how many were asked for; None when no
    adaptive sweep is open (nothing was, or could have been, written)."""
    if free <= 0:
        return 0
    asked = 0
    with _writing() as stops:
        open_sweeps = list(
            Sweep.select().where(
                (Sweep.budget > 0) & (Sweep.status == SWEEP_RUNNING) & (Sweep.stop_reason == "")
            )
        )
        if not open_sweeps:
            return None
        by_state: dict[tuple[str, str], int] = {}
        rows: Any = (
            Trial.select(Trial.sweep, Trial.state, peewee.fn.COUNT(Trial.id))
            .where(Trial.sweep.in_([s.id for s in open_sweeps]))
            .group_by(Trial.sweep, Trial.state)
            .tuples()
        )
        for sweep_id, state, n in rows:
            by_state[sweep_id, state] = n
        room = []
        for sweep in open_sweeps:
            total = sum(n for (sid, _), n in by_state.items() if sid == sweep.id)
            waiting = sum(by_state.get((sweep.id, state), 0) for state in (PENDING, *IN_FLIGHT))
            cap = _max_parallel(sweep.spec_json) or free
            want = min(sweep.budget - total, cap - waiting)
            if want > 0:
                room.append((waiting, sweep.created_at, sweep, total, want))
        room.sort(key=lambda r: (r[0], r[1]))
        for _, _, sweep, total, want in room:
            n = min(want, free - asked)
            if n <= 0:
                break
            try:
                with db.atomic():  # a savepoint: a failing sampler undoes its sweep's asks
                    _ask(sweep, total, n)
                asked += n
            except search.SearchFailed as error:
                _searches.pop(sweep.id, None)
                why = str(error)[:500]
                stops.extend(_stop(sweep.id, "search_failed", "sweep_search_failed", error=why)[1])
    return asked


def _ask(sweep: Sweep, total: int, n: int) -> None:
    source = sweep.spec["script"]
    sha = hashlib.sha256(source.encode()).hexdigest()
    for index in range(total, total + n):
        try:
            params = _search(sweep).ask(index)
        except Exception as error:  # the store's own failures are not the sampler's
            if isinstance(error, peewee.PeeweeException):
                raise
            raise search.SearchFailed(f"{type(error).__name__}: {error}") from error
        Trial.create(
            id=f"{sweep.id}/{index}",
            sweep=sweep.id,
            position=index,
            name=f"trial-{index}",
            script=sha,
            params_json=json.dumps(params),
            state=PENDING,
        )
        _append(sweep.id, "trial_queued", index, name=f"trial-{index}", params=params)


def _dispatchables(query: Any) -> list[Dispatchable]:
    rows = query.select(Trial, Script, Sweep).join(Script).switch(Trial).join(Sweep)
    specs: dict[str, dict[str, Any]] = {}
    found = []
    for trial in rows:
        spec = specs.setdefault(trial.sweep_id, trial.sweep.spec)
        # A trial of a sweep that stopped, or one pruned, is stopped, never started.
        cancelled = not trial.sweep.open or trial.pruned_step is not None
        ready_since = max(trial.sweep.created_at, trial.not_before)
        found.append(Dispatchable(trial, trial.script.source, spec, cancelled, ready_since))
    return found


def dispatchable(limit: int) -> list[Dispatchable]:
    """Up to `limit` pending trials that may start now, in the scheduler's fair order."""
    if limit <= 0:
        return []
    busy: dict[str, int] = dict(
        Trial.select(Trial.sweep, peewee.fn.COUNT(Trial.id))  # type: ignore[arg-type]
        .where(Trial.state.in_(IN_FLIGHT))
        .group_by(Trial.sweep)
        .tuples()
    )
    # Each running sweep's first pending trials (only a running sweep has any), by
    # index: no sweep can use more than `limit` of them. Read from the front of each
    # sweep's (state, position) index, so a dispatch costs the same for a sweep of
    # 10,000 queued trials as for one of 10.
    now = time.time()
    pending: dict[str, list[str]] = {}
    running: Any = Sweep.select(Sweep.id).where(Sweep.status == SWEEP_RUNNING).tuples()
    for (sweep_id,) in running:
        query: Any = (
            Trial.select(Trial.id)
            .where((Trial.sweep == sweep_id) & (Trial.state == PENDING) & (Trial.not_before <= now))
            .order_by(Trial.position)
            .limit(limit)
            .tuples()
        )
        found = [trial_id for (trial_id,) in query]
        if found:
            pending[sweep_id] = found
    sweeps: Any = Sweep.select(Sweep.id, Sweep.created_at, Sweep.spec_json).where(
        Sweep.id.in_(list(pending))
    )
    queues = [
        scheduler.SweepQueue(
            sweep_id,
            created_at,
            in_flight=busy.get(sweep_id, 0),
            max_parallel=_max_parallel(spec_json),
            pending=pending[sweep_id],
        )
        for sweep_id, created_at, spec_json in sweeps.tuples()
    ]
    picked = scheduler.fair_order(queues, limit)
    chosen = {d.trial.id: d for d in _dispatchables(Trial.select().where(Trial.id.in_(picked)))}
    return [chosen[trial_id] for trial_id in picked]


def _max_parallel(spec_json: str) -> int:
    """The spec's cap on trials in flight; none (0) when the stored spec cannot be read."""
    cap = read_spec(spec_json).get("maxParallel", 0)
    return int(cap) if isinstance(cap, (int, float)) and cap >= 1 else 0


def assign(trial_id: str, runner: str) -> Trial | None:
    """Mark a pending trial as dispatched to `runner` as a new execution;
    None if it is not pending."""
    with db.atomic("IMMEDIATE"):
        trial = Trial.get_by_id(trial_id)
        if trial.state != PENDING:
            return None
        trial.state, trial.runner, trial.dispatched_at = DISPATCHED, runner, time.time()
        trial.attempts += 1
        trial.save()
        _append(
            trial.sweep_id,
            "trial_dispatched",
            trial.position,
            runner=runner,
            attempt=trial.attempts,
        )
        return trial


def _requeue(trial: Trial, kind: str, **data: Any) -> None:
    """Back to pending, off its runner, with the event saying why; call inside
    the transaction. Its next dispatch is a new execution."""
    trial.state, trial.runner, trial.dispatched_at, trial.started_at = PENDING, None, None, None
    # Queued again now (or when its backoff ends): where its next dispatch waits from.
    trial.not_before = max(trial.not_before, time.time())
    trial.save()
    _append(trial.sweep_id, kind, trial.position, **data)


def unassign(trial_id: str, runner: str, why: str) -> None:
    """Put a dispatched trial back to pending: it is known never to have reached `runner`."""
    with _writing():
        trial = Trial.get_by_id(trial_id)
        if trial.state != DISPATCHED or trial.runner != runner:
            return
        trial.attempts -= 1  # that execution never existed
        _release(trial, why)


def release_unknown_runners(runners: list[str]) -> list[str]:
    """Trials held by runners no longer configured cannot be answered for: queue
    them again as a new execution (or end them: see _release). Returns their ids."""
    with _writing():
        Abandoned.delete().where(Abandoned.runner.not_in(runners)).execute()
        held = list(Trial.select().where(Trial.state.in_(IN_FLIGHT) & Trial.runner.not_in(runners)))
        for trial in held:
            _release(trial, "runner no longer configured")
    return [t.id for t in held]


def _release(trial: Trial, why: str) -> None:
    """A trial whose execution ended without a word from its runner, that failed no
    one: queued again, unless its sweep's rule pruned it (it ends pruned) or its sweep
    stopped (it ends cancelled); call inside the transaction."""
    sweep = Sweep.get_by_id(trial.sweep_id)
    if trial.pruned_step is None and sweep.open:
        _requeue(trial, "trial_requeued", runner=trial.runner, reason=why)
        return
    ended = not_run(Outcome.CANCELLED, _stopped(sweep, why))
    _end(trial, _pruned(sweep, trial, ended) if trial.pruned_step is not None else ended)
    _finish_sweep_if_done(trial.sweep_id)


def held_by(runner: str) -> tuple[list[Dispatchable], list[str]]:
    """What `runner` must be told on a new stream, read at one instant: the trials
    it holds, and the executions given up on that it may still be running."""
    with db.atomic():
        abandoned = Abandoned.select().where(Abandoned.runner == runner)
        return in_flight(runner), sorted(a.execution_id for a in abandoned)


def holders() -> set[str]:
    """Runners holding trials that have not finished."""
    query = Trial.select(Trial.runner).where(Trial.state.in_(IN_FLIGHT)).distinct()
    return {t.runner for t in query if t.runner}


def _current(execution_id: str) -> Trial | None:
    """The trial this execution belongs to, if it is still its current one."""
    trial_id, attempt = domain.split_execution_id(execution_id)
    trial = Trial.get_or_none(Trial.id == trial_id)
    if trial is None or trial.attempts != attempt or trial.state not in IN_FLIGHT:
        return None
    return trial


def mark_started(execution_id: str) -> None:
    with db.atomic("IMMEDIATE"):
        trial = _current(execution_id)
        if trial is None or trial.state != DISPATCHED:
            return
        trial.state, trial.started_at = RUNNING, time.time()
        trial.save()
        _append(trial.sweep_id, "trial_started", trial.position, runner=trial.runner)


# A metric line is judged by its sweep's early-stopping rule only within this many
# characters (a step and a few values take far fewer): each one judged is parsed on the
# store's thread, and a trial may print 10,000 lines of 64 KiB.
MAX_JUDGED_LINE_CHARS = 1024


def record_metrics(metrics: Iterable[tuple[str, str]]) -> None:
    """Append a batch of (execution id, values as JSON text) metric events in one
    transaction (one commit to disk for the batch, not one per line); a metric of an
    execution that is no longer current is dropped. In a sweep with early stopping,
    each is told to its rule, in the same transaction: a trial the rule stops is
    marked pruned (for good) and handed to the runner to stop (take_stops)."""
    by_sweep: dict[str, list[tuple[str, int | None, str]]] = {}
    with _writing() as stops:
        current: dict[str, Trial | None] = {}
        # Per sweep in the batch, read once: its row and early-stopping rule (None: none).
        rules: dict[str, tuple[Sweep, dict[str, Any] | None]] = {}
        # Per execution judged in the batch: its [step, value] pairs told to the rule.
        told: dict[str, list[list[float]]] = {}
        for execution_id, values_json in metrics:
            if execution_id not in current:
                current[execution_id] = _current(execution_id)
            trial = current[execution_id]
            if trial is None:
                continue
            events = by_sweep.setdefault(trial.sweep_id, [])
            events.append(("metric", trial.position, '{"values":' + values_json + "}"))
            if trial.sweep_id not in rules:
                sweep = Sweep.get_by_id(trial.sweep_id)
                rule = sweep.spec.get("earlyStopping") if sweep.budget else None
                rules[trial.sweep_id] = sweep, rule
            sweep, rule = rules[trial.sweep_id]
            if rule is None or trial.pruned_step is not None:
                continue
            if len(values_json) > MAX_JUDGED_LINE_CHARS:
                continue
            judged = _judge(sweep, rule, trial, values_json)
            if judged is None:
                continue
            if execution_id not in told:
                told[execution_id] = json.loads(trial.intermediate_json or "[]")
            told[execution_id].append(list(judged))
            if trial.pruned_step is not None:
                data = json.dumps({"step": trial.pruned_step, "value": trial.pruned_value})
                events.append(("trial_pruned", trial.position, data))
                stops.append((str(trial.runner), trial.execution_id))
        for execution_id, pairs in told.items():
            trial = current[execution_id]
            assert trial is not None
            Trial.update(
                intermediate_json=json.dumps(pairs),
                pruned_step=trial.pruned_step,
                pruned_value=trial.pruned_value,
            ).where(Trial.id == trial.id).execute()
        for sweep_id, events in by_sweep.items():
            _append_many(sweep_id, events)


def _judge(
    sweep: Sweep, rule: dict[str, Any], trial: Trial, values_json: str
) -> tuple[int, float] | None:
    """Tell the sweep's rule a metric of `trial` (when it has the rule's metric and
    step, at a step the rule judges); the (step, value) told, with the trial's row marked
    pruned (its columns, not yet written) when the rule stops it; None when nothing was
    told."""
    try:
        values = json.loads(values_json)
    except (ValueError, RecursionError):
        return None
    if not isinstance(values, dict):
        return None
    value, step = domain.objective_value(values.get(rule["metric"])), values.get(rule["stepKey"])
    if isinstance(step, float) and step.is_integer() and abs(step) <= specs.MAX_STEP:
        step = int(step)
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= specs.MAX_STEP:
        return None
    if value is None:
        return None
    try:
        study = _search(sweep)
    except search.SearchFailed:
        return None  # a study that cannot be read judges nothing; its sweep stops
    verdict = study.report(trial.position, step, value)
    if verdict is None:
        return None
    if verdict:
        study.tell(trial.position, None, pruned=True)
        trial.pruned_step, trial.pruned_value = step, value
    return step, value


def finish_trial(execution_id: str, result: TrialResult) -> str | None:
    """Record an execution's result, once: a repeated or stale report changes
    nothing. An infrastructure failure with retries left queues the trial
    again instead. A trial its sweep's rule pruned ends pruned, whatever the runner
    says. Returns the sweep's new status when this finished it."""
    with _writing() as stops:
        Abandoned.delete().where(Abandoned.execution_id == execution_id).execute()
        trial = _current(execution_id)
        if trial is None:
            return None
        if result.outcome == Outcome.RUNNER_LOST and trial.runner:
            Abandoned.insert(execution_id=execution_id, runner=trial.runner).execute()
        sweep = Sweep.get_by_id(trial.sweep_id)
        if trial.pruned_step is not None:
            _end(trial, _pruned(sweep, trial, result))
            return _finish_sweep_if_done(trial.sweep_id)
        if result.outcome == Outcome.PRUNED:  # the rule's word, never a runner's
            result = not_run(
                Outcome.SANDBOX_ERROR, "the runner reported an outcome only the orchestrator gives"
            )
        if policy.retries(
            result.outcome,
            attempts=trial.attempts,
            allowed=int(sweep.spec.get("retries", 0)),
            sweep_running=sweep.open,
        ):
            trial.not_before = time.time() + policy.retry_backoff(trial.attempts)
            _requeue(
                trial,
                "trial_retrying",
                outcome=result.outcome.value,
                reason=result.reason,
                attempt=trial.attempts,
            )
            return None
        if sweep.stop_reason and result.outcome == Outcome.CANCELLED:
            # Stopped by the sweep's target or deadline: the reason says which.
            result = dataclasses.replace(result, reason=_stopped(sweep, result.reason))
        _end(trial, result)
        target = sweep.spec.get("target")
        value = _objective(sweep.spec, result)
        if target and value is not None and sweep.open and _reached(sweep.spec, value):
            status, in_flight = _stop(
                sweep.id,
                "target_reached",
                "sweep_target_reached",
                trial=trial.position,
                value=value,
            )
            stops.extend(in_flight)
            return status
        return _finish_sweep_if_done(trial.sweep_id)


def _reached(spec: dict[str, Any], value: float) -> bool:
    target = float(spec["target"]["value"])
    maximize = spec["objective"].get("goal") == "maximize"
    return value >= target if maximize else value <= target


def _pruned(sweep: Sweep, trial: Trial, result: TrialResult) -> TrialResult:
    """What the runner reported of a trial the rule stopped, as a pruned trial: what
    the runner measured and kept stays, the outcome and reason are the rule's."""
    rule = sweep.spec.get("earlyStopping") or {}
    reason = (
        f"stopped by the {rule.get('rule', 'early-stopping')} rule at step {trial.pruned_step} "
        f"({rule.get('metric', 'metric')} {trial.pruned_value:.6g})"
    )
    return dataclasses.replace(result, outcome=Outcome.PRUNED, reason=reason)


def hand_back(execution_id: str, reason: str) -> str | None:
    """A runner gave an execution back unfinished (it was stopping): if that is still
    the trial's current execution, the trial goes back to pending, due at once, and its
    next dispatch is a new execution on any runner. That execution counts among the
    trial's attempts as any other (so it leaves one retry fewer for a later
    sandbox_error or runner_lost), but it is requeued whatever `retries` says: it
    failed no one. In a sweep that stopped it ends cancelled instead, and a trial the
    rule pruned ends pruned. A return of an
    earlier execution changes nothing. Returns the sweep's new status when this
    finished it."""
    with _writing():
        Abandoned.delete().where(Abandoned.execution_id == execution_id).execute()
        trial = _current(execution_id)
        if trial is None:
            return None
        runner = trial.runner
        sweep = Sweep.get_by_id(trial.sweep_id)
        if trial.pruned_step is not None:
            _end(trial, _pruned(sweep, trial, not_run(Outcome.CANCELLED, reason)))
            return _finish_sweep_if_done(trial.sweep_id)
        if sweep.open:
            trial.not_before = 0.0
            _requeue(trial, "trial_requeued", runner=runner, reason=reason)
            return None
        _end(trial, TrialResult(outcome=Outcome.CANCELLED, reason=_stopped(sweep, reason)))
        return _finish_sweep_if_done(trial.sweep_id)


def _end(trial: Trial, result: TrialResult, now: float | None = None) -> None:
    """The trial finished with `result` (its columns and artifacts) and its
    `trial_finished` event; call inside the transaction."""
    sweep = Sweep.get_by_id(trial.sweep_id)
    for name, value in result.columns().items():
        setattr(trial, name, value)
    trial.state, trial.finished_at = FINISHED, time.time() if now is None else now
    succeeded = result.outcome == Outcome.SUCCEEDED
    trial.objective_rank = _rank(sweep.spec, result.result) if succeeded else None
    trial.save()
    for artifact in result.artifacts:
        Artifact.create(
            trial=trial.id, name=artifact.name, size=len(artifact.data), data=artifact.data
        )
    _append(
        trial.sweep_id,
        "trial_finished",
        trial.position,
        outcome=result.outcome.value,
        reason=result.reason,
    )
    if sweep.budget and result.outcome != Outcome.PRUNED:
        # Every end is told: a failure of any kind as a failure, never dropped. (A study
        # that cannot be read takes no more asks: its sweep stops when it asks next.)
        with contextlib.suppress(search.SearchFailed):
            _search(sweep).tell(trial.position, _objective_values(sweep.spec, result))


def _finish_sweep_if_done(sweep_id: str) -> str | None:
    """Once every trial has finished: the sweep's final state (a cancelled
    sweep stays cancelled) and its last event."""
    sweep = Sweep.get_by_id(sweep_id)
    if sweep.finished_at is not None:
        return None
    if sweep.open and sweep.budget:
        # Trials are asked for by index, from 0: the last one is there once all are.
        last = (Trial.sweep == sweep_id) & (Trial.position == sweep.budget - 1)
        if not Trial.select().where(last).exists():
            return None  # more to ask for
    # Called at every trial's end: it reads the trials that have not finished (a few
    # index entries), and every trial's outcome only once none is left.
    unfinished = (Trial.sweep == sweep_id) & Trial.state.in_((PENDING, *IN_FLIGHT))
    if Trial.select().where(unfinished).exists():
        return None
    outcomes: Any = Trial.select(Trial.outcome).where(Trial.sweep == sweep_id).distinct().tuples()
    status = policy.final_status(
        (outcome for (outcome,) in outcomes), cancelled=sweep.status == SWEEP_CANCELLED
    )
    if status is None:
        return None
    Sweep.update(status=status, finished_at=time.time()).where(Sweep.id == sweep_id).execute()
    _append(sweep_id, "sweep_finished", status=status)
    _searches.pop(sweep_id, None)
    return status


def cancel_sweep(sweep_id: str) -> tuple[str | None, list[tuple[str, str]]]:
    """Cancel a running sweep: trials not started end cancelled now. Returns
    the sweep's status if this finished it, and the (runner, execution id) of
    each trial in flight, which its runner must stop."""
    with _writing():
        sweep = Sweep.get_or_none(Sweep.id == sweep_id)
        if sweep is None or sweep.status != SWEEP_RUNNING:
            return None, []
        Sweep.update(status=SWEEP_CANCELLED).where(Sweep.id == sweep_id).execute()
        _append(sweep_id, "sweep_cancelled")
        in_flight = _end_waiting(Sweep.get_by_id(sweep_id))
        return _finish_sweep_if_done(sweep_id), in_flight


# Why a stopped sweep's trials did not run, by its stop_reason ("" : cancelled).
STOPPED = {
    "": "the sweep was cancelled",
    "target_reached": "the sweep reached its target",
    "deadline": "the sweep's deadline passed",
    "search_failed": "the sweep's sampler failed",
}


def _stopped(sweep: Sweep, detail: str) -> str:
    return f"{STOPPED.get(sweep.stop_reason, 'the sweep stopped')}; {detail}"


def _end_waiting(sweep: Sweep) -> list[tuple[str, str]]:
    """A sweep that stops: its trials not started end cancelled now; returns the
    (runner, execution id) of those in flight, which their runners must stop."""
    now = time.time()
    for trial in Trial.select().where((Trial.sweep == sweep.id) & (Trial.state == PENDING)):
        reason = f"{STOPPED.get(sweep.stop_reason, 'the sweep stopped')} before the trial started"
        _end(trial, TrialResult(outcome=Outcome.CANCELLED, reason=reason), now)
    return [
        (str(t.runner), t.execution_id)
        for t in Trial.select().where((Trial.sweep == sweep.id) & Trial.state.in_(IN_FLIGHT))
    ]


def _stop(
    sweep_id: str, reason: str, kind: str, **data: Any
) -> tuple[str | None, list[tuple[str, str]]]:
    """Stop an open sweep before its last trial (its target reached, its deadline
    passed, its sampler failed); call inside the transaction. It finishes as any sweep
    does once its trials in flight have ended: done if one succeeded, else error.
    Returns its status if this finished it, and the (runner, execution id) of its
    trials in flight, which their runners must stop."""
    Sweep.update(stop_reason=reason).where(Sweep.id == sweep_id).execute()
    _append(sweep_id, kind, **data)
    in_flight = _end_waiting(Sweep.get_by_id(sweep_id))
    return _finish_sweep_if_done(sweep_id), in_flight


def stop_overdue() -> list[tuple[str, str | None]]:
    """Stop every open sweep whose deadline has passed; returns their ids, each with its
    status if this finished it. Their trials in flight are handed to the dispatcher to
    stop (take_stops)."""
    stopped = []
    with _writing() as stops:
        overdue = list(
            Sweep.select().where(
                (Sweep.deadline < time.time())
                & (Sweep.status == SWEEP_RUNNING)
                & (Sweep.stop_reason == "")
            )
        )
        for sweep in overdue:
            seconds = sweep.spec.get("maxDurationSeconds")
            status, in_flight = _stop(
                sweep.id, "deadline", "sweep_deadline_reached", seconds=seconds
            )
            stops.extend(in_flight)
            stopped.append((sweep.id, status))
    return stopped


def finish_complete_sweeps() -> list[str]:
    """Sweeps whose last trial finished just before a crash: finish them now."""
    finished = []
    with _writing():
        for sweep in Sweep.select().where(Sweep.finished_at.is_null()):
            if _finish_sweep_if_done(sweep.id) is not None:
                finished.append(sweep.id)
    return finished


def in_flight(runner: str) -> list[Dispatchable]:
    """Trials sent to `runner` and not finished, with their scripts and specs."""
    return _dispatchables(
        Trial.select()
        .where((Trial.runner == runner) & Trial.state.in_(IN_FLIGHT))
        .order_by(Trial.sweep, Trial.position)
    )


def sweep(sweep_id: str) -> Sweep | None:
    return Sweep.get_or_none(Sweep.id == sweep_id)


# A trial's columns but its output: what every read but its logs needs.
_WITHOUT_OUTPUT = [
    f
    for f in Trial._meta.sorted_fields  # type: ignore[attr-defined]
    if f.name not in ("stdout", "stderr")
]


def sweep_with_trials(sweep_id: str, *, output_budget: int = 0) -> tuple[Sweep, list[Trial]] | None:
    """The sweep and its trials. A trial's output (up to 16 MiB of each stream) is not
    read, or with ``output_budget`` (characters for all trials together) only its share
    of it, at least OUTPUT_SHARE_CHARS: the start of stdout and the end of stderr, one
    character more than the share so that a cut shows."""
    row = sweep(sweep_id)
    if row is None:
        return None
    columns = list(_WITHOUT_OUTPUT)
    if output_budget:
        count = Trial.select().where(Trial.sweep == sweep_id).count()
        share = output_share(count, output_budget) + 1
        columns += [
            peewee.fn.substr(Trial.stdout, 1, share).alias("stdout"),
            peewee.fn.substr(Trial.stderr, -share).alias("stderr"),
        ]
    query = Trial.select(*columns).where(Trial.sweep == sweep_id).order_by(Trial.position)
    return row, list(query)


def output_share(trials: int, budget: int) -> int:
    """The characters of output each of `trials` trials shows, out of `budget`: at least
    OUTPUT_SHARE_CHARS each up to SHARED_TRIALS trials; past that, those floors' sum
    shared out, so the answer stays within twice OUTPUT_SHARE_CHARS * SHARED_TRIALS
    and `budget`'s sum whatever the sweep's size."""
    trials = max(trials, 1)
    floor = OUTPUT_SHARE_CHARS * min(trials, SHARED_TRIALS) // trials
    return max(floor, budget // trials)


# Trials whose outputs get OUTPUT_SHARE_CHARS at least each (output_share).
SHARED_TRIALS = 1000


@dataclass(frozen=True)
class SweepAnswer:
    """What GetSweep shows of a sweep, read at one instant: its first trials and what
    holds for all of them (counts, the best, the history, the Pareto front's
    candidates), each read by an index, none of the others' rows read."""

    sweep: Sweep
    # The first trials by index (without their output), and whether more follow.
    trials: list[Trial]
    more: bool
    # Trials by state, and by outcome for succeeded and pruned (views.counts).
    by_state: dict[str, int]
    best: Trial | None
    # (index, objective value, finished at) of each trial with an objective value, in
    # the order they finished.
    history: list[tuple[int, float, float]]
    # With objectives: the succeeded trials (index, outcome and result only).
    succeeded: list[Trial]


def sweep_answer(sweep_id: str, first: int) -> SweepAnswer | None:
    """The sweep with its first `first` trials and its summary over all of them."""
    with db.atomic():
        row = sweep(sweep_id)
        if row is None:
            return None
        of_sweep = Trial.sweep == sweep_id
        by_state = _counts_by_sweep([sweep_id])[sweep_id]
        total = sum(n for state, n in by_state.items() if state in _STATES)
        trials = list(
            Trial.select(*_WITHOUT_OUTPUT).where(of_sweep).order_by(Trial.position).limit(first)
        )
        ranked = of_sweep & Trial.objective_rank.is_null(False)
        best = (
            Trial.select(*_WITHOUT_OUTPUT)
            .where(ranked)
            .order_by(Trial.objective_rank, Trial.position)
            .first()
        )
        sign = -1.0 if (row.spec.get("objective") or {}).get("goal") == "maximize" else 1.0
        points: Any = (
            Trial.select(Trial.position, Trial.objective_rank, Trial.finished_at)
            .where(ranked)
            .order_by(Trial.finished_at, Trial.position)
            .tuples()
        )
        history = [(position, sign * rank, at or 0.0) for position, rank, at in points]
        succeeded = []
        if row.spec.get("objectives"):
            succeeded = list(
                Trial.select(Trial.position, Trial.outcome, Trial.result_json).where(
                    of_sweep & (Trial.outcome == Outcome.SUCCEEDED)
                )
            )
        return SweepAnswer(row, trials, total > len(trials), by_state, best, history, succeeded)


_STATES = (PENDING, *IN_FLIGHT, FINISHED)
# How a page of trials is ordered (ListTrials' orderBy).
BY_INDEX, BY_OBJECTIVE = "index", "objective"


def trial_page(
    sweep_id: str,
    *,
    state: str = "",
    outcome: str = "",
    order: str = BY_INDEX,
    after: tuple[float | None, int] | None = None,
    limit: int,
) -> tuple[list[Trial], int]:
    """Up to `limit` of the sweep's trials (without their output) in one state and with
    one outcome ("": any) after the key `after`, and how many match over all pages.
    The key is the last trial's (objective rank, index) by objective (rank None: the
    trials without one, which come last), its (None, index) by index. Keyset, not
    offset: a trial that changes state between pages never shifts another one."""
    with db.atomic():  # the count and the rows at one instant
        return _trial_page(sweep_id, state, outcome, order, after, limit)


def _trial_page(
    sweep_id: str,
    state: str,
    outcome: str,
    order: str,
    after: tuple[float | None, int] | None,
    limit: int,
) -> tuple[list[Trial], int]:
    where = Trial.sweep == sweep_id
    if state:
        where &= Trial.state == state
    if outcome:
        where &= Trial.outcome == outcome
    total = Trial.select().where(where).count()
    unranked_after = -1 if after is None else after[1]
    rows: list[Trial] = []
    if order == BY_OBJECTIVE and (after is None or after[0] is not None):
        ranked = where & Trial.objective_rank.is_null(False)
        if after is not None:
            key = peewee.Tuple(Trial.objective_rank, Trial.position)
            ranked &= key > peewee.Tuple(*after)
        query = Trial.select(*_WITHOUT_OUTPUT).where(ranked)
        rows = list(query.order_by(Trial.objective_rank, Trial.position).limit(limit))
        unranked_after = -1
    if order == BY_OBJECTIVE:
        where &= Trial.objective_rank.is_null()
    if len(rows) < limit:
        rest = where & (Trial.position > unranked_after)
        query = Trial.select(*_WITHOUT_OUTPUT).where(rest).order_by(Trial.position)
        rows += list(query.limit(limit - len(rows)))
    return rows, total


def sweep_finished(sweep_id: str) -> bool:
    """True once the sweep has its final state (and an unknown one counts)."""
    sweep = Sweep.get_or_none(Sweep.id == sweep_id)
    return sweep is None or sweep.finished_at is not None


def list_sweeps(limit: int, before: tuple[float, str] | None) -> list[tuple[Sweep, dict[str, int]]]:
    """Newest first, after the (created_at, id) cursor, with trial counts by state."""
    query = Sweep.select().order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit)
    if before is not None:
        created, sweep_id = before
        query = query.where(
            (Sweep.created_at < created) | ((Sweep.created_at == created) & (Sweep.id < sweep_id))
        )
    sweeps = list(query)
    counts = _counts_by_sweep([s.id for s in sweeps])
    return [(s, counts[s.id]) for s in sweeps]


def _counts_by_sweep(sweep_ids: list[str]) -> dict[str, dict[str, int]]:
    """Each sweep's trials by state, and by outcome for succeeded and pruned: grouped on
    the (sweep, state, outcome) index alone."""
    counts: dict[str, dict[str, int]] = {sweep_id: {} for sweep_id in sweep_ids}
    rows: Any = (
        Trial.select(Trial.sweep, Trial.state, Trial.outcome, peewee.fn.COUNT(peewee.SQL("*")))
        .where(Trial.sweep.in_(sweep_ids))
        .group_by(Trial.sweep, Trial.state, Trial.outcome)
        .tuples()
    )
    for sweep_id, state, outcome, n in rows:
        by = counts[sweep_id]
        by[state] = by.get(state, 0) + n
        if outcome in (Outcome.SUCCEEDED, Outcome.PRUNED):
            by[outcome] = by.get(outcome, 0) + n
    return counts


def trial_at(sweep_id: str, position: int, *, outputs: bool = False) -> Trial | None:
    """A trial; its stdout and stderr (up to 16 MiB each) read only when asked for."""
    columns = Trial._meta.sorted_fields if outputs else _WITHOUT_OUTPUT  # type: ignore[attr-defined]
    query = Trial.select(*columns).where((Trial.sweep == sweep_id) & (Trial.position == position))
    return query.first()  # type: ignore[no-any-return]


def artifacts(trial_id: str) -> list[tuple[str, int]]:
    query = (
        Artifact.select(Artifact.name, Artifact.size)
        .where(Artifact.trial == trial_id)
        .order_by(Artifact.name)
    )
    return [(a.name, a.size) for a in query]


def artifacts_by_trial(trial_ids: list[str]) -> dict[str, list[tuple[str, int]]]:
    found: dict[str, list[tuple[str, int]]] = {t: [] for t in trial_ids}
    query: Any = (
        Artifact.select(Artifact.trial, Artifact.name, Artifact.size)
        .where(Artifact.trial.in_(trial_ids))
        .order_by(Artifact.name)
        .tuples()
    )
    for trial_id, name, size in query:
        found[trial_id].append((name, size))
    return found


def artifact_data(trial_id: str, name: str) -> bytes | None:
    row = Artifact.get_or_none((Artifact.trial == trial_id) & (Artifact.name == name))
    return None if row is None else bytes(row.data)


def events_after(sweep_id: str, after: int, limit: int) -> list[Event]:
    query = (
        Event.select()
        .where((Event.sweep == sweep_id) & (Event.seq > after))
        .order_by(Event.seq)
        .limit(limit)
    )
    return list(query)


@dataclass(frozen=True)
class Counts:
    """What the metrics show of the store at one instant (orchestrator_svc.metrics)."""

    sweeps: dict[str, int]  # by state
    trials: dict[tuple[str, str | None], int]  # by (state, outcome)
    # Pending trials that may be dispatched now: waiting for a slot, not for a backoff.
    ready: int


def counts() -> Counts:
    """Sweeps by state, trials by state and outcome and the trials ready to dispatch,
    read in one transaction. Grouped on the indexes of those columns, so it reads no
    table row but those of pending trials."""
    with db.atomic():
        sweeps: Any = (
            Sweep.select(Sweep.status, peewee.fn.COUNT(peewee.SQL("*")))
            .group_by(Sweep.status)
            .tuples()
        )
        trials: Any = (
            Trial.select(Trial.state, Trial.outcome, peewee.fn.COUNT(peewee.SQL("*")))
            .group_by(Trial.state, Trial.outcome)
            .tuples()
        )
        ready = (
            Trial.select()
            .where((Trial.state == PENDING) & (Trial.not_before <= time.time()))
            .count()
        )
        return Counts(
            sweeps=dict(sweeps),
            trials={(state, outcome): n for state, outcome, n in trials},
            ready=ready,
        )
