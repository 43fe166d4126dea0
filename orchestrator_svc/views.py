"""The v1 resources as the API shows them, built from stored rows.

Every function here is total: it answers for whatever the store holds, rows an
earlier version stored without today's checks included. A stored JSON value that
cannot be shown (not an object, too deep, a number protobuf cannot carry) is left
out and marked, never raised."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from orchestrator_svc import domain, store
from prism.errors import InvalidArgument
from prism.trial import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    NotAnObject,
    Outcome,
    RuleBroken,
    parse_object,
)
from prism.v1 import orchestrator_pb2

# The trials' params, results and artifact lists a sweep's answer carries, at most, as
# protobuf or as JSON, whichever is larger (a result of small numbers is several times
# its JSON as a Struct; one of control characters, six times its Struct as JSON): the
# gateway must buffer the whole answer to turn it into JSON, and the orchestrator build
# it. Past the budget, trials are abridged: a few hundred bytes each.
SWEEP_BUDGET_BYTES = 8 * 2**20
# The trials a sweep's answer (GetSweep, CreateSweep, CancelSweep) carries, at most, by
# index: ListTrials goes on from there. Its cost stays flat in the sweep's size.
SWEEP_TRIALS = 1000
# What a stored value that cannot be shown is replaced with.
UNSHOWABLE = {"prism_error": "this stored value breaks the rules for results and cannot be shown"}


def _parsed(value_json: str, *, wrapped: bool) -> dict[str, Any] | None:
    """A stored JSON object, checked against the rules; None when it breaks them.
    ``wrapped``: one holding a trial's object one level down (an event's data)."""
    try:
        return parse_object(
            value_json,
            what="a stored value",
            max_depth=MAX_JSON_DEPTH + 1 if wrapped else MAX_JSON_DEPTH,
            max_bytes=MAX_JSON_BYTES + 1024 if wrapped else MAX_JSON_BYTES,
        )
    except (RuleBroken, NotAnObject):
        return None


def _struct(value_json: str, *, wrapped: bool = False) -> struct_pb2.Struct | None:
    if not value_json:
        return None
    value = _parsed(value_json, wrapped=wrapped)
    struct = struct_pb2.Struct()
    try:
        struct.update(UNSHOWABLE if value is None else value)
        struct.ByteSize()  # what cannot be serialised fails here, not while answering
    except (ValueError, TypeError, RecursionError, OverflowError):
        struct = struct_pb2.Struct()
        struct.update(UNSHOWABLE)
    return struct


def message(text: str) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({"message": text})
    return struct


def _time(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def trial(
    row: store.Trial, artifacts: list[tuple[str, int]], *, abridged: bool = False
) -> orchestrator_pb2.Trial:
    """A trial as shown; ``abridged``: without its params, metrics and artifacts
    (GetTrial has them)."""
    if abridged:
        artifacts = []
    return orchestrator_pb2.Trial(
        index=row.position,
        name=row.name,
        params=None if abridged else _struct(row.params_json),
        state=row.state,
        outcome=row.outcome or "",
        reason=row.reason,
        metrics=None if abridged else _struct(row.result_json),
        abridged=abridged,
        exit_code=row.exit_code if row.exit_code is not None else 0,
        duration_seconds=row.duration_seconds or 0.0,
        peak_memory_bytes=row.peak_memory_bytes,
        attempts=row.attempts,
        runner=row.runner or "",
        artifacts=[orchestrator_pb2.ArtifactInfo(name=n, size_bytes=size) for n, size in artifacts],
        pruned_step=row.pruned_step,
        pruned_value=row.pruned_value,
        intermediate_values=[] if abridged else intermediate(row),
    )


def intermediate(row: store.Trial) -> list[orchestrator_pb2.IntermediateValue]:
    """The (step, value) pairs told to the sweep's rule, as stored; none when what is
    stored cannot be read as them."""
    try:
        pairs = json.loads(row.intermediate_json) if row.intermediate_json else []
        return [
            orchestrator_pb2.IntermediateValue(step=int(step), value=float(value))
            for step, value in pairs
        ]
    except (ValueError, TypeError, RecursionError, OverflowError):
        return []


def json_bytes(row: store.Trial, artifacts: list[tuple[str, int]]) -> int:
    """At most about what a trial's params, result and artifact names take as the API's
    JSON, should its printer escape every character that is not ASCII: the stored JSON
    with those escaped, each name as an escaped JSON string."""
    names = sum(len(json.dumps(name)) + 40 for name, _ in artifacts)
    stored = (row.params_json, row.result_json, row.intermediate_json * 2)
    return sum(len(text.encode("ascii", "backslashreplace")) for text in stored) + names


def _spec(row: store.Sweep) -> tuple[dict[str, Any], orchestrator_pb2.SweepSpec]:
    """The stored spec, as a dict and as shown, with the limits in effect (store.read_spec
    fills in those a spec stored by an older version left out); a stored spec that cannot
    be read (a damaged file) shows as its task and those limits, so the sweep and every
    list stay readable."""
    spec = row.spec
    try:
        return spec, json_format.ParseDict({"task": row.task, **spec}, orchestrator_pb2.SweepSpec())
    except (ValueError, TypeError, AttributeError, json_format.ParseError, RecursionError):
        pass
    shown = {"task": row.task, "limits": spec["limits"]}
    return {}, json_format.ParseDict(shown, orchestrator_pb2.SweepSpec())


def _scored(rows: list[store.Trial], metrics: list[str]) -> list[tuple[list[float], store.Trial]]:
    """Each succeeded trial with a finite value of every one of `metrics` in its result,
    with those values (its result read once)."""
    if not metrics:
        return []
    scored = []
    for row in rows:
        if row.outcome != Outcome.SUCCEEDED or not row.result_json:
            continue
        try:
            # Checked when it was stored; here only these values of it count.
            found = json.loads(row.result_json)
        except (ValueError, RecursionError):
            continue
        if not isinstance(found, dict):
            continue
        values = [domain.objective_value(found.get(metric)) for metric in metrics]
        numbers = [v for v in values if v is not None]
        if len(numbers) == len(metrics):
            scored.append((numbers, row))
    return scored


def pareto_front(spec: dict[str, Any], rows: list[store.Trial]) -> list[int]:
    """With several objectives: the succeeded trials with a finite value for each that no
    other such trial beats on every one (of equal ones, the lowest index), by index."""
    objectives = spec.get("objectives") or []
    signs = [-1.0 if o.get("goal") == "maximize" else 1.0 for o in objectives]
    scored = _scored(rows, [o.get("metric", "") for o in objectives])
    points = [
        ([s * v for s, v in zip(signs, values, strict=True)], row.position)
        for values, row in scored
    ]
    # In this order whatever beats a point (or equals it) comes before it, and what beats
    # it is beaten by, or is, a point already on the front.
    points.sort()
    front: list[tuple[list[float], int]] = []
    for vector, position in points:
        if not any(all(a <= b for a, b in zip(f, vector, strict=True)) for f, _ in front):
            front.append((vector, position))
    return sorted(position for _, position in front)


def _history(
    scored: list[tuple[int, float, float]], maximize: bool
) -> list[orchestrator_pb2.HistoryPoint]:
    """The optimisation history: each (index, value, finished at) in the order they
    finished (store.SweepAnswer.history), with the best value up to it."""
    points = []
    best_value: float | None = None
    for position, value, _ in scored:
        if best_value is None or (value > best_value if maximize else value < best_value):
            best_value = value
        points.append(
            orchestrator_pb2.HistoryPoint(trial_index=position, value=value, best_value=best_value)
        )
    return points


def counts(by_state: dict[str, int]) -> orchestrator_pb2.TrialCounts:
    return orchestrator_pb2.TrialCounts(
        total=sum(by_state.get(s, 0) for s in (domain.PENDING, *domain.IN_FLIGHT, domain.FINISHED)),
        pending=by_state.get(domain.PENDING, 0),
        running=sum(by_state.get(s, 0) for s in domain.IN_FLIGHT),
        finished=by_state.get(domain.FINISHED, 0),
        succeeded=by_state.get(Outcome.SUCCEEDED, 0),
        pruned=by_state.get(Outcome.PRUNED, 0),
    )


def sweep(
    row: store.Sweep,
    answer: store.SweepAnswer | None = None,
    artifacts: dict[str, list[tuple[str, int]]] | None = None,
    by_state: dict[str, int] | None = None,
) -> orchestrator_pb2.Sweep:
    """With `answer`, its trials (the first ones, and the token that goes on), the best
    one, the history and the front; without, a summary with the counts `by_state`."""
    spec, shown_spec = _spec(row)
    shown = orchestrator_pb2.Sweep(
        id=row.id,
        state=row.status,
        spec=shown_spec,
        create_time=_time(row.created_at),
        finish_time=_time(row.finished_at),
        stop_reason=row.stop_reason,
    )
    if answer is not None:
        by_state = answer.by_state
        artifacts = artifacts or {}
        # Whole trials while the answer is within its budget, abridged ones after.
        spent = 0
        for t in answer.trials:
            listed = artifacts.get(t.id, [])
            shown_trial = trial(t, listed, abridged=spent >= SWEEP_BUDGET_BYTES)
            spent += max(shown_trial.ByteSize(), json_bytes(t, listed))
            shown.trials.append(shown_trial)
        if answer.more and answer.trials:
            last = answer.trials[-1].position
            shown.next_trials_page_token = trials_page_token(row.id, TrialFilter(), None, last)
        if answer.best is not None:
            shown.best_trial.CopyFrom(trial(answer.best, artifacts.get(answer.best.id, [])))
        maximize = (spec.get("objective") or {}).get("goal") == "maximize"
        shown.history.extend(_history(answer.history, maximize))
        shown.pareto_front.extend(pareto_front(spec, answer.succeeded))
    shown.counts.CopyFrom(counts(by_state or {}))
    return shown


# A trial's logs as JSON, at most: its 16 MiB of output can be six times that written
# as JSON (a control character is \u0001, and so may be any that is not ASCII), and
# the gateway buffers the whole answer.
LOGS_BUDGET_BYTES = 24 * 2**20


def logs(row: store.Trial) -> orchestrator_pb2.TrialLogs:
    """The trial's output, each stream cut (and marked truncated) where it would take
    the answer past its budget as JSON."""
    room, cut = LOGS_BUDGET_BYTES, False
    streams = []
    for text in (row.stdout, row.stderr):
        kept = _within_json(text, room)
        cut = cut or len(kept) < len(text)
        room -= len(json.dumps(kept))
        streams.append(kept)
    return orchestrator_pb2.TrialLogs(
        stdout=streams[0], stderr=streams[1], truncated=row.output_truncated or cut
    )


def _within_json(text: str, room: int) -> str:
    """The longest start of ``text`` whose JSON string, every character that is not
    ASCII escaped (the longest a printer makes it), fits ``room`` bytes; found by
    halving (a character takes 1 to 12 bytes)."""
    if len(json.dumps(text)) <= room:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps(text[:middle])) <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def page_token(row: store.Sweep) -> str:
    raw = json.dumps([row.created_at, row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_page_token(token: str) -> tuple[float, str] | None:
    if not token:
        return None
    try:
        created, sweep_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if isinstance(created, (int, float)) and isinstance(sweep_id, str):
            return float(created), sweep_id
    except (ValueError, TypeError):
        pass
    raise InvalidArgument("pageToken", "is not a token from a previous page")


@dataclass(frozen=True)
class TrialFilter:
    """Which of a sweep's trials a ListTrials page shows, in what order: the request's
    fields, checked."""

    state: str = ""
    outcome: str = ""
    order: str = store.BY_INDEX

    @classmethod
    def of(cls, request: orchestrator_pb2.ListTrialsRequest) -> TrialFilter:
        if request.state not in ("", *TRIAL_STATES):
            raise InvalidArgument("state", f"must be one of {', '.join(TRIAL_STATES)} (or empty)")
        if request.outcome not in ("", *OUTCOMES):
            raise InvalidArgument("outcome", f"must be one of {', '.join(OUTCOMES)} (or empty)")
        if request.order_by not in ("", *ORDERS):
            raise InvalidArgument("orderBy", f"must be {' or '.join(ORDERS)} (empty: index)")
        return cls(request.state, request.outcome, request.order_by or store.BY_INDEX)


TRIAL_STATES = (domain.PENDING, *domain.IN_FLIGHT, domain.FINISHED)
OUTCOMES = tuple(outcome.value for outcome in Outcome)
ORDERS = (store.BY_INDEX, store.BY_OBJECTIVE)


def trials_page_token(sweep_id: str, chosen: TrialFilter, rank: float | None, index: int) -> str:
    """The key of a page's last trial, with what the list is of, so that the token is
    taken only for the same list."""
    raw = json.dumps([sweep_id, chosen.state, chosen.outcome, chosen.order, rank, index])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def parse_trials_page_token(
    token: str, sweep_id: str, chosen: TrialFilter
) -> tuple[float | None, int] | None:
    """The (objective rank, index) a page goes on after; None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        found = json.loads(raw)
        key = [sweep_id, chosen.state, chosen.outcome, chosen.order]
        if isinstance(found, list) and len(found) == 6 and found[:4] == key:
            rank, index = found[4:]
            number = isinstance(rank, (int, float)) and not isinstance(rank, bool)
            if (rank is None or number) and isinstance(index, int) and index >= -1:
                return (None if rank is None else float(rank)), index
    except (ValueError, TypeError, RecursionError):
        pass
    raise InvalidArgument(
        "pageToken", "is not a token from a previous page of this list (same filter and order)"
    )


def trials_page(
    rows: list[store.Trial], artifacts: dict[str, list[tuple[str, int]]]
) -> list[orchestrator_pb2.Trial]:
    """The trials of a ListTrials page, whole, as many of `rows` (at least one) as fit
    the answer's size budget: the rest are the next page's."""
    shown: list[orchestrator_pb2.Trial] = []
    spent = 0
    for row in rows:
        if shown and spent >= SWEEP_BUDGET_BYTES:
            break
        listed = artifacts.get(row.id, [])
        one = trial(row, listed)
        spent += max(one.ByteSize(), json_bytes(row, listed))
        shown.append(one)
    return shown


def event(row: store.Event) -> orchestrator_pb2.SweepEvent:
    shown = orchestrator_pb2.SweepEvent(
        seq=row.seq,
        kind=row.kind,
        trial_index=row.trial_index if row.trial_index is not None else -1,
        data=_struct(row.data, wrapped=True),
        time=_time(row.at),
    )
    if row.kind == "sweep_finished":
        shown.final = True
        shown.sweep_state = str((_parsed(row.data, wrapped=True) or {}).get("status", ""))
    return shown
