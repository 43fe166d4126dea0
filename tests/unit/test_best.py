"""The best trial of a sweep: among the succeeded trials whose result holds a finite
number for the objective's metric, the lowest (or, to maximize, the highest), the
lowest index among equals. Rows are taken as the store may hold them, damaged ones
included: those are passed over, never raised on. The rows are stored as an older
version left them, ranked by the schema-5 backfill (store._rank_finished, the rule a
trial that finishes is ranked by) and the best one read as GetSweep reads it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from orchestrator_svc import domain, store, views
from prism.sqlite import PRAGMAS, DbThread

MINIMIZE = {"task": "t", "objective": {"metric": "loss", "goal": "minimize"}}
MAXIMIZE = {"task": "t", "objective": {"metric": "loss", "goal": "maximize"}}


def row(position: int, result: Any = None, *, outcome: str | None = "succeeded") -> store.Trial:
    """A stored trial; ``result`` as a dict is stored as JSON, as text it is stored as is."""
    text = result if isinstance(result, str) else ("" if result is None else json.dumps(result))
    return store.Trial(
        id=f"s/{position}",
        position=position,
        name=f"trial-{position}",
        params_json="{}",
        state=domain.FINISHED if outcome else domain.RUNNING,
        outcome=outcome,
        result_json=text,
        attempts=1,
    )


def best_index(spec: dict[str, Any], rows: list[store.Trial]) -> int | None:
    answer = stored_answer(spec, rows)
    return None if answer.best is None else answer.best.position


def stored_answer(spec: dict[str, Any], rows: list[store.Trial]) -> store.SweepAnswer:
    """The sweep's answer with `rows` stored and ranked, on a throwaway file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "orchestrator.db"
        DbThread(store.db, path, store.MODELS, schema_version=store.SCHEMA_VERSION).close()
        store.db.init(str(path), pragmas=PRAGMAS)
        try:
            store.Sweep.create(
                id="s", task="t", spec_json=json.dumps(spec), status="done", created_at=1.0
            )
            store.Script.create(sha256="x", source="")
            for row in rows:
                row.sweep, row.script = "s", "x"  # type: ignore[assignment]
                row.finished_at = 1.0
                row.save(force_insert=True)
            store._rank_finished()
            answer = store.sweep_answer("s", first=len(rows))
            assert answer is not None
            return answer
        finally:
            store.db.close()
            store.db.init(None)


def test_the_lowest_value_by_default_and_to_minimize() -> None:
    rows = [row(0, {"loss": 0.5}), row(1, {"loss": -2}), row(2, {"loss": 0.1}), row(3, {"loss": 3})]
    assert best_index(MINIMIZE, rows) == 1
    assert best_index({"objective": {"metric": "loss"}}, rows) == 1


def test_the_highest_value_to_maximize() -> None:
    rows = [row(0, {"loss": 0.5}), row(1, {"loss": -2}), row(2, {"loss": 3}), row(3, {"loss": 2.5})]
    assert best_index(MAXIMIZE, rows) == 2


def test_ints_and_floats_rank_together() -> None:
    rows = [row(0, {"loss": 2}), row(1, {"loss": 1.5}), row(2, {"loss": 1})]
    assert best_index(MINIMIZE, rows) == 2
    assert best_index(MAXIMIZE, rows) == 0


@pytest.mark.parametrize("spec", [MINIMIZE, MAXIMIZE], ids=["minimize", "maximize"])
def test_among_equals_the_lowest_index_wins(spec: dict[str, Any]) -> None:
    worst = 7 if spec is MINIMIZE else -7
    rows = [
        row(3, {"loss": 1}),
        row(1, {"loss": 1.0}),
        row(2, {"loss": 1}),
        row(0, {"loss": worst}),
    ]
    assert best_index(spec, rows) == 1


@pytest.mark.parametrize(
    "outcome", ["failed", "timed_out", "oom_killed", "output_limit", "cancelled", None]
)
def test_only_succeeded_trials_count(outcome: str | None) -> None:
    rows = [row(0, {"loss": 5}), row(1, {"loss": -100}, outcome=outcome), row(2, {"loss": 4})]
    assert best_index(MINIMIZE, rows) == 2
    assert best_index(MINIMIZE, [rows[1]]) is None


@pytest.mark.parametrize(
    "value",
    [
        "NaN",
        "-Infinity",
        "Infinity",
        "1e400",
        "-1e400",
        "null",
        '"-5"',
        "true",
        "[-5]",
        '{"v": -5}',
        str(-(2**70)),
        str(2**70),
    ],
)
def test_a_value_that_is_no_finite_number_is_passed_over(value: str) -> None:
    rows = [row(0, {"loss": 3}), row(1, '{"loss": ' + value + "}"), row(2, {"loss": 2})]
    assert best_index(MINIMIZE, rows) == 2
    assert best_index(MAXIMIZE, rows) == 0


def test_a_trial_without_the_metric_is_passed_over() -> None:
    rows = [row(0, {"accuracy": 0.9}), row(1, {"loss": 4}), row(2), row(3, {})]
    assert best_index(MINIMIZE, rows) == 1
    assert best_index(MINIMIZE, [rows[0], rows[2], rows[3]]) is None


@pytest.mark.parametrize(
    "stored",
    ["not json", "[1, 2]", '"text"', "{", '{"loss": 1', '{"a":' * 100_000 + "1" + "}" * 100_000],
    ids=["text", "list", "string", "cut", "unclosed", "deep"],
)
def test_a_damaged_result_is_passed_over(stored: str) -> None:
    rows = [row(0, {"loss": 3}), row(1, stored), row(2, {"loss": 5})]
    assert best_index(MINIMIZE, rows) == 0
    assert best_index(MAXIMIZE, rows) == 2


@pytest.mark.parametrize(
    "spec",
    [{}, {"objective": {}}, {"objective": {"metric": ""}}, {"objective": None}],
    ids=["no-objective", "empty", "no-metric", "null"],
)
def test_without_an_objective_metric_there_is_no_best(spec: dict[str, Any]) -> None:
    assert best_index(spec, [row(0, {"loss": 1})]) is None


def test_the_sweep_shows_its_best_trial() -> None:
    rows = [row(0, {"loss": 3}), row(1, {"loss": 1}), row(2, {"loss": 2}, outcome="failed")]
    sweep = store.Sweep(
        id="s", task="t", spec_json=json.dumps(MINIMIZE), status="done", created_at=1.0
    )

    shown = views.sweep(sweep, stored_answer(MINIMIZE, rows), {})

    assert shown.HasField("best_trial")
    assert (shown.best_trial.index, shown.best_trial.metrics["loss"]) == (1, 1)
    nothing = views.sweep(sweep, stored_answer(MINIMIZE, [row(0, {"accuracy": 1})]), {})
    assert not nothing.HasField("best_trial")
