"""An adaptive sweep's journal (the store's SearchLog rows) checked against its trials.

`replay` drives a fresh orchestrator_svc.search.Search, in one process that never
stops, through the calls the journal records, in the order it records them: each ask,
each value told to the early-stopping rule (and the prune it led to), each end told.
What that search writes must be what was recorded, entry for entry (but for the
worker ids and clock times Optuna puts in): the parameters of every trial and every
pruning decision are then those a run never interrupted would have made, told the
same things in the same order, wherever the recorded run was killed.

`check_sweep` adds what the store's trials and events must agree with it in, and
`never_killed` runs a sweep that ran one trial at a time again, on a store of its own,
through the store's functions. Each returns the problems found, as sentences; none when
all is well."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState

from orchestrator_svc import search, store
from orchestrator_svc import spec as specs
from prism.sqlite import PRAGMAS, DbThread
from prism.trial import Outcome, TrialResult, not_run

# What differs between two runs that did the same: who wrote an entry, and when.
NOISE = ("worker_id", "datetime_start", "datetime_complete")


@dataclass(frozen=True)
class TrialRow:
    """The columns of a Trial row these checks read."""

    position: int
    params_json: str
    state: str
    outcome: str | None
    result_json: str
    pruned_step: int | None
    pruned_value: float | None
    intermediate_json: str


def plain(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key not in NOISE}


def _state(entry: dict[str, Any]) -> TrialState | None:
    """The finished state a SET_TRIAL_STATE_VALUES entry tells, if it is one."""
    if entry["op_code"] != JournalOperation.SET_TRIAL_STATE_VALUES:
        return None
    state = TrialState(entry["state"])
    return state if state.is_finished() else None


def replay(
    sweep_id: str, spec: dict[str, Any], logs: Sequence[dict[str, Any]]
) -> tuple[search.Search, list[str]]:
    """A fresh search driven through the calls `logs` records; the problems: where what
    it writes differs from `logs`."""
    written: list[dict[str, Any]] = []

    def write(number: int, rows: list[dict[str, Any]]) -> None:
        assert number == len(written)
        written.extend(json.loads(json.dumps(rows)))  # as the store keeps them

    fresh = search.Search(sweep_id, spec, specs.stored_space(spec), [], write)
    rule = spec.get("earlyStopping")
    sign = -1.0 if rule and rule["goal"] != fresh.goal else 1.0
    problems: list[str] = []

    def compare(start: int) -> int:
        """Compare what the fresh search wrote from `start` on; where both have got to."""
        if len(written) <= start:
            problems.append(f"entry {start} ({plain(logs[start])}): the fresh search wrote nothing")
        for at in range(start, min(len(written), len(logs))):
            if plain(written[at]) != plain(logs[at]):
                problems.append(
                    f"entry {at}: recorded {plain(logs[at])}, "
                    f"a run never interrupted writes {plain(written[at])}"
                )
                break
        return min(len(written), len(logs))

    done = compare(0)  # the study's creation
    while not problems and done < len(logs):
        entry = logs[done]
        if entry["op_code"] == JournalOperation.CREATE_TRIAL:
            fresh.ask(fresh.asked)
        elif entry["op_code"] == JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE:
            number = entry["trial_id"]  # one study per journal: the id is the number
            verdict = fresh.report(number, entry["step"], sign * entry["intermediate_value"])
            if verdict is None:
                problems.append(f"entry {done}: trial {number}'s value was not to be told")
                break
            if verdict:
                fresh.tell(number, None, pruned=True)
        elif (state := _state(entry)) in (TrialState.COMPLETE, TrialState.FAIL):
            value = entry["values"][0] if state == TrialState.COMPLETE else None
            fresh.tell(entry["trial_id"], value)
        else:
            problems.append(f"entry {done} ({plain(entry)}) is not the first of a decision")
            break
        done = compare(done)
    if not problems and len(written) != len(logs):
        problems.append(f"{len(logs)} entries recorded, the fresh search wrote {len(written)}")
    return fresh, problems


def check_sweep(
    sweep_id: str,
    spec: dict[str, Any],
    logs: Sequence[dict[str, Any]],
    trials: Sequence[TrialRow],
    pruned_events: Sequence[tuple[int | None, dict[str, Any]]],
) -> list[str]:
    """A settled adaptive sweep: its budget asked for exactly, its journal replayed
    agreeing with its trials and with its trial_pruned events ((trial, data) pairs)."""
    budget = int(spec["search"]["trials"])
    problems = []
    positions = [t.position for t in trials]
    if positions != list(range(budget)):
        problems.append(f"trials at {positions}, not 0..{budget - 1}")
    fresh, replayed = replay(sweep_id, spec, logs)
    problems += replayed
    study = fresh._study.get_trials(deepcopy=False)
    if len(study) != len(trials):
        problems.append(f"{len(study)} trials in the study, {len(trials)} in the store")
    space = specs.stored_space(spec)
    metric = spec["objective"]["metric"]
    rule = spec.get("earlyStopping")
    sign = -1.0 if rule and rule["goal"] != fresh.goal else 1.0
    told: dict[int, list[TrialState]] = {}
    intermediate: dict[int, list[list[float]]] = {}
    for entry in logs:
        if (state := _state(entry)) is not None:
            told.setdefault(entry["trial_id"], []).append(state)
        if entry["op_code"] == JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE:
            step, value = entry["step"], sign * entry["intermediate_value"]
            intermediate.setdefault(entry["trial_id"], []).append([step, value])
    events: dict[int | None, list[dict[str, Any]]] = {}
    for position, data in pruned_events:
        events.setdefault(position, []).append(data)
    for row, frozen in zip(trials, study, strict=False):
        n = row.position
        where = f"trial {n}"
        params = {
            name: dist.choices[frozen.params[name]]
            if dist.kind == "choice"
            else frozen.params[name]
            for name, dist in space.items()
            if name in frozen.params
        }
        if json.loads(row.params_json) != params:
            problems.append(f"{where}: params {row.params_json} in the store, {params} asked for")
        if row.state != "finished":
            problems.append(f"{where} is {row.state}, not finished")
            continue
        expected = (
            TrialState.PRUNED
            if row.outcome == "pruned"
            else TrialState.COMPLETE
            if row.outcome == "succeeded"
            else TrialState.FAIL
        )
        if told.get(frozen._trial_id) != [expected]:
            problems.append(f"{where} ({row.outcome}) told {told.get(frozen._trial_id)}")
        if expected == TrialState.COMPLETE:
            value = json.loads(row.result_json or "{}").get(metric)
            if frozen.values != [value]:
                problems.append(f"{where}: told {frozen.values}, its result's {metric} {value}")
        steps = intermediate.get(frozen._trial_id, [])
        stored = json.loads(row.intermediate_json) if row.intermediate_json else []
        if stored != steps:
            problems.append(f"{where}: values told {steps}, the store's {stored}")
        if any(a[0] >= b[0] for a, b in itertools.pairwise(steps)):
            problems.append(f"{where}: steps told out of order: {steps}")
        pruned = row.pruned_step is not None
        if pruned != (row.outcome == "pruned"):
            problems.append(f"{where}: pruned at {row.pruned_step}, ended {row.outcome}")
        if pruned:
            last = steps[-1] if steps else None
            if last != [row.pruned_step, row.pruned_value]:
                problems.append(
                    f"{where}: pruned at {[row.pruned_step, row.pruned_value]}, "
                    f"the last value told {last}"
                )
            shown = [{"step": row.pruned_step, "value": row.pruned_value}]
            if events.get(n) != shown:
                problems.append(f"{where}: trial_pruned events {events.get(n)}, not {shown}")
        elif n in events:
            problems.append(f"{where} ended {row.outcome}, yet trial_pruned {events[n]}")
    return problems


def never_killed(
    sweep_id: str, spec: dict[str, Any], trials: Sequence[TrialRow], path: Path
) -> list[str]:
    """The course of an adaptive sweep that ran one trial at a time, run again in this
    process on a new store at `path` (a file not there yet) that is never killed: each
    trial asked for in turn, told the values its namesake's rule was told
    (TrialRow.intermediate_json), then ended as it ended. The problems: where this run
    asks for other parameters, or prunes elsewhere."""
    DbThread(store.db, path, store.MODELS, schema_version=store.SCHEMA_VERSION).close()
    store.db.init(str(path), pragmas=PRAGMAS)
    store.db.connect()
    store._searches.clear()
    try:
        return _again(sweep_id, spec, trials)
    finally:
        store._searches.clear()
        store.take_stops()
        store.db.close()
        store.db.init(None)


def _again(sweep_id: str, spec: dict[str, Any], trials: Sequence[TrialRow]) -> list[str]:
    store.create_sweep(sweep_id, "again", spec, [])
    rule = spec["earlyStopping"]
    problems: list[str] = []
    for row in trials:
        where = f"trial {row.position}"
        if store.ask_trials(1) != 1:
            return [*problems, f"{where} was not asked for"]
        again = store.trial_at(sweep_id, row.position)
        assert again is not None
        if json.loads(again.params_json) != json.loads(row.params_json):
            problems.append(f"{where}: {row.params_json} asked for, unkilled {again.params_json}")
        execution = store.assign(again.id, "runner")
        assert execution is not None
        execution_id = execution.execution_id
        store.mark_started(execution_id)
        for step, value in json.loads(row.intermediate_json or "[]"):
            values = json.dumps({rule["stepKey"]: step, rule["metric"]: value})
            store.record_metrics([(execution_id, values)])
        now = store.trial_at(sweep_id, row.position)
        assert now is not None
        if (now.pruned_step, now.pruned_value) != (row.pruned_step, row.pruned_value):
            problems.append(
                f"{where}: pruned at {(row.pruned_step, row.pruned_value)}, "
                f"unkilled {(now.pruned_step, now.pruned_value)}"
            )
        if now.pruned_step is not None:
            result = not_run(Outcome.CANCELLED, "stopped")
        elif row.outcome == Outcome.SUCCEEDED:
            result = TrialResult(
                outcome=Outcome.SUCCEEDED, reason="", result=json.loads(row.result_json)
            )
        else:  # told as a failure, whatever it was
            result = not_run(Outcome.FAILED, str(row.outcome))
        store.finish_trial(execution_id, result)
    if not store.sweep_finished(sweep_id):
        problems.append("the sweep run again did not finish")
    return problems
