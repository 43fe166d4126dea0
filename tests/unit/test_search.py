"""Adaptive search in the store, on a throwaway SQLite file: trials asked for as slots
free, results told, pruning decided on live metrics, budgets, targets and deadlines,
and a search that goes on after a restart exactly as it would have without one."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from orchestrator_svc import search, store
from orchestrator_svc.spec import plan
from prism.errors import InvalidArgument
from prism.trial import Outcome, TrialResult, not_run
from prism.v1 import orchestrator_pb2
from tests.unit.test_spec import SETTINGS

SCRIPT = "import prism_trial\n"
SPACE = {
    "x": {"uniform": [-5, 10]},
    "y": {"uniform": [0, 15]},
    "k": {"choice": ["a", [1], {"b": 2}]},
}


@pytest.fixture(autouse=True)
def fresh_memory() -> None:
    """Each test starts as a fresh process would."""
    store._searches.clear()
    store._unreadable.clear()
    store.take_stops()


def spec(**more: Any) -> dict[str, Any]:
    return {
        "task": "search",
        "script": SCRIPT,
        "parameters": {"random": {"parameters": SPACE}},
        "objective": {"metric": "loss"},
        "search": {"sampler": "tpe", "trials": 12, "seed": 7},
        **more,
    }


def create(sweep_id: str, **more: Any) -> str:
    made = plan(json_format.ParseDict(spec(**more), orchestrator_pb2.SweepSpec()), SETTINGS)
    assert made.trials == []
    return store.create_sweep(sweep_id, made.task, made.spec, made.trials)


def branin(params: dict[str, Any]) -> float:
    x, y = params["x"], params["y"]
    return float(
        (y - 5.1 / (4 * math.pi**2) * x * x + 5 / math.pi * x - 6) ** 2
        + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x)
        + 10
    )


def trials(sweep_id: str) -> list[store.Trial]:
    found = store.sweep_with_trials(sweep_id)
    assert found is not None
    return found[1]


def start(trial: store.Trial, runner: str = "r1") -> str:
    assigned = store.assign(trial.id, runner)
    assert assigned is not None
    store.mark_started(assigned.execution_id)
    return assigned.execution_id


def succeed(execution_id: str, loss: float) -> str | None:
    return store.finish_trial(
        execution_id, TrialResult(outcome=Outcome.SUCCEEDED, reason="", result={"loss": loss})
    )


def kinds(sweep_id: str) -> list[str]:
    return [e.kind for e in store.events_after(sweep_id, 0, 100_000)]


def drive(sweep_id: str, *, restart: bool = False, parallel: int = 3) -> list[dict[str, Any]]:
    """Run the sweep to its end, `parallel` trials at a time, finishing the oldest
    first; with `restart`, the orchestrator's memory is lost before every step."""
    while not store.sweep_finished(sweep_id):
        if restart:
            store._searches.clear()
        store.ask_trials(parallel)
        rows = trials(sweep_id)
        for row in rows:
            if row.state == "pending":
                start(row)
        running = [t for t in trials(sweep_id) if t.state == "running"]
        assert running, [(e.kind, e.data[:200]) for e in store.events_after(sweep_id, 0, 1000)][-6:]
        if restart:
            store._searches.clear()
        oldest = running[0]
        succeed(oldest.execution_id, branin(json.loads(oldest.params_json)))
    return [json.loads(t.params_json) for t in trials(sweep_id)]


def test_an_adaptive_sweep_asks_for_its_budget_and_finishes(orchestrator_db: Path) -> None:
    create("s", maxParallel=3)
    assert store.ask_trials(10) == 3  # its maxParallel
    assert store.ask_trials(10) == 0  # three wait already
    asked = drive("s")
    assert len(asked) == 12
    for params in asked:
        assert -5 <= params["x"] <= 10 and 0 <= params["y"] <= 15
        assert params["k"] in ("a", [1], {"b": 2})
    sweep = store.sweep("s")
    assert sweep is not None and sweep.status == "done"
    assert kinds("s").count("trial_queued") == 12


def test_the_search_after_a_restart_is_the_search_without_one(orchestrator_db: Path) -> None:
    for sampler in ("tpe", "cmaes", "qmc", "random"):
        more = {"search": {"sampler": sampler, "trials": 14, "seed": 3}}
        create(f"calm-{sampler}", **more)
        calm = drive(f"calm-{sampler}")
        create(f"crash-{sampler}", **more)
        crashed = drive(f"crash-{sampler}", restart=True)
        assert calm == crashed, sampler
        assert len({json.dumps(p, sort_keys=True) for p in calm}) == 14, sampler


def test_a_failing_transaction_asks_again_for_the_same_parameters(
    orchestrator_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create("s", maxParallel=1)
    store.ask_trials(1)
    first = trials("s")[0]
    succeed(start(first), 3.0)
    real = store.Trial.create

    def broken(**fields: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(store.Trial, "create", broken)
    with pytest.raises(OSError):
        store.ask_trials(1)
    monkeypatch.setattr(store.Trial, "create", real)
    assert len(trials("s")) == 1  # nothing of the failed ask was kept
    store.ask_trials(1)
    again = json.loads(trials("s")[1].params_json)
    store.cancel_sweep("s")
    create("twin", maxParallel=1)
    store.ask_trials(1)
    succeed(start(trials("twin")[0]), 3.0)
    store.ask_trials(1)
    assert json.loads(trials("twin")[1].params_json) == again


def test_every_end_is_told_and_failures_do_not_stop_the_search(orchestrator_db: Path) -> None:
    create("s", maxParallel=2, search={"sampler": "random", "trials": 4, "seed": 1})
    store.ask_trials(2)
    a, b = (start(t) for t in trials("s"))
    store.finish_trial(a, not_run(Outcome.TIMED_OUT, "too slow"))
    store.finish_trial(
        b, TrialResult(outcome=Outcome.SUCCEEDED, reason="", result={"loss": "nan?"})
    )
    store.ask_trials(2)
    c, d = (start(t) for t in trials("s")[2:])
    succeed(c, 1.5)
    assert store.finish_trial(d, not_run(Outcome.FAILED, "boom")) == "done"
    study = store._search(store.Sweep.get_by_id("s"))
    states = [t.state.name for t in study._study.get_trials()]
    assert states == ["FAIL", "FAIL", "COMPLETE", "FAIL"]


def asha(**more: Any) -> dict[str, Any]:
    return {
        "earlyStopping": {"rule": "asha", "minResource": 1, "reductionFactor": 2, **more},
        "search": {"sampler": "random", "trials": 6, "seed": 2},
    }


def metric(execution_id: str, step: int, loss: float) -> None:
    store.record_metrics([(execution_id, json.dumps({"step": step, "loss": loss}))])


def test_the_rule_prunes_a_losing_trial_for_good(orchestrator_db: Path) -> None:
    create("s", maxParallel=6, **asha())
    store.ask_trials(6)
    ids = [start(t) for t in trials("s")]
    # Two good trials finish their curves first.
    for i, execution_id in enumerate(ids[:2]):
        for step in range(1, 5):
            metric(execution_id, step, 1.0 / step - i * 0.01)
        succeed(execution_id, 0.25 - i * 0.01)
    assert store.take_stops() == []
    metric(ids[2], 1, 50.0)
    row = trials("s")[2]
    assert (row.pruned_step, row.pruned_value) == (1, 50.0)
    assert store.take_stops() == [("r1", ids[2])]
    assert "trial_pruned" in kinds("s")
    # Later metrics are not judged; what the runner then reports ends it pruned.
    metric(ids[2], 2, 0.0)
    assert store.take_stops() == []
    store.finish_trial(ids[2], not_run(Outcome.CANCELLED, "cancelled"))
    row = trials("s")[2]
    assert row.outcome == "pruned" and "step 1" in row.reason
    assert json.loads(row.intermediate_json) == [[1, 50.0]]
    # A runner lost while stopping it does not bring it back either.
    metric(ids[3], 1, 60.0)
    assert trials("s")[3].pruned_step == 1
    store.finish_trial(ids[3], not_run(Outcome.RUNNER_LOST, "gone"))
    assert trials("s")[3].outcome == "pruned"


def test_a_pruning_decision_survives_a_restart(orchestrator_db: Path) -> None:
    create("s", maxParallel=6, **asha())
    store.ask_trials(6)
    ids = [start(t) for t in trials("s")]
    for step in range(1, 4):
        metric(ids[0], step, 1.0 / step)
    succeed(ids[0], 0.3)
    metric(ids[1], 1, 9.0)
    assert trials("s")[1].pruned_step == 1
    store._searches.clear()
    # On its runner's new stream the pruned trial is one to stop, not to run.
    held, _ = store.held_by("r1")
    assert [(item.trial.position, item.cancelled) for item in held] == [
        (1, True),
        *[(i, False) for i in range(2, 6)],
    ]
    study = store._search(store.Sweep.get_by_id("s"))
    assert [t.state.name for t in study._study.get_trials()][:2] == ["COMPLETE", "PRUNED"]


def test_metrics_that_are_not_a_step_and_a_value_are_not_judged(orchestrator_db: Path) -> None:
    create("s", maxParallel=6, **asha())
    store.ask_trials(6)
    ids = [start(t) for t in trials("s")]
    hostile = [
        {"step": 1},
        {"loss": 1.0},
        {"step": -1, "loss": 1.0},
        {"step": 1.5, "loss": 1.0},
        {"step": True, "loss": 1.0},
        {"step": 10**30, "loss": 1.0},
        {"step": "1", "loss": 1.0},
        {"step": 1, "loss": "1"},
        {"step": 1, "loss": 10**400},
        [1, 2],
    ]
    store.record_metrics([(ids[0], json.dumps(v)) for v in hostile])
    assert trials("s")[0].intermediate_json == ""
    # Steps must rise; one told twice counts once; asha judges its rungs' steps only
    # (1, 2, 4, 8… with minResource 1 and reductionFactor 2).
    for step in (2, 2, 1, 3, 4):
        metric(ids[0], step, 1.0)
    assert json.loads(trials("s")[0].intermediate_json) == [[2, 1.0], [4, 1.0]]


@pytest.mark.parametrize(
    ("rule", "told"),
    [
        (
            {"rule": "asha", "minResource": 2, "reductionFactor": 3},
            [2, 6, 18, 54, 162, 486, 1458, 4374],
        ),
        (
            {"rule": "hyperband", "minResource": 1, "maxResource": 27},
            [1, 3, 9, 27, 81, 243, 729, 2187, 6561],
        ),
        ({"rule": "median", "warmupSteps": 5, "intervalSteps": 10}, list(range(5, 1000, 10))[:100]),
        ({"rule": "percentile"}, list(range(0, 100))),
    ],
)
def test_a_trial_printing_every_step_is_judged_a_bounded_number_of_times(
    orchestrator_db: Path, rule: dict[str, Any], told: list[int]
) -> None:
    create("s", maxParallel=1, earlyStopping=rule, search={"sampler": "random", "trials": 2})
    store.ask_trials(1)
    execution_id = start(trials("s")[0])
    store.record_metrics(
        [(execution_id, json.dumps({"step": step, "loss": 1.0})) for step in range(10_000)]
    )
    assert [step for step, _ in json.loads(trials("s")[0].intermediate_json)] == told


def test_the_target_ends_the_sweep(orchestrator_db: Path) -> None:
    create("s", maxParallel=2, target={"value": 1.0})
    store.ask_trials(2)
    a, b = (start(t) for t in trials("s"))
    succeed(a, 5.0)
    assert store.ask_trials(1) == 1
    assert succeed(b, 0.5) == "done"
    third = trials("s")[2]
    assert third.outcome == "cancelled" and "target" in third.reason
    assert store.take_stops() == []  # it had not started
    sweep = store.sweep("s")
    assert sweep is not None and sweep.stop_reason == "target_reached"
    assert sweep.status == "done" and "sweep_target_reached" in kinds("s")
    assert store.ask_trials(5) is None  # no adaptive sweep is open


def test_the_deadline_ends_the_sweep_even_with_no_runner(orchestrator_db: Path) -> None:
    create("s", maxParallel=2, maxDurationSeconds=5)
    store.ask_trials(2)
    execution_id = start(trials("s")[0])
    assert store.stop_overdue() == []
    store.Sweep.update(deadline=time.time() - 1).execute()
    assert store.stop_overdue() == [("s", None)]
    assert store.take_stops() == [("r1", execution_id)]
    assert trials("s")[1].outcome == "cancelled"
    store.finish_trial(execution_id, not_run(Outcome.CANCELLED, "stopped"))
    assert trials("s")[0].reason == "the sweep's deadline passed; stopped"
    sweep = store.sweep("s")
    assert sweep is not None and (sweep.status, sweep.stop_reason) == ("error", "deadline")
    assert store.stop_overdue() == []


@pytest.mark.parametrize(
    ("more", "where"),
    [
        ({"search": {"sampler": "bayes", "trials": 3}}, "search.sampler"),
        ({"search": {"trials": 0}}, "search.trials"),
        ({"search": {"trials": 100000}}, "search.trials"),
        ({"objective": {}}, "objective.metric"),
        ({"parameters": {"list": [{"a": 1}]}}, "parameters.random.parameters"),
        ({"parameters": {"random": {"trials": 3, "parameters": SPACE}}}, "parameters.random"),
        ({"search": {"sampler": "grid"}}, "parameters.grid"),
        ({"earlyStopping": {"rule": "sha"}}, "earlyStopping.rule"),
        ({"earlyStopping": {"rule": "asha", "percentile": 10}}, "earlyStopping.percentile"),
        ({"earlyStopping": {"rule": "hyperband", "maxResource": 1}}, "earlyStopping.maxResource"),
        ({"earlyStopping": {"rule": "median", "stepKey": "no spaces"}}, "earlyStopping.stepKey"),
        ({"maxDurationSeconds": 0}, "maxDurationSeconds"),
        ({"target": {"metric": "acc", "value": 1}}, "target.metric"),
        ({"parameters": {"random": {"parameters": {"n": {"int": [0, 9], "log": True}}}}}, "n"),
        (
            {"parameters": {"random": {"parameters": {"n": {"uniform": [0, 1], "step": 0}}}}},
            "n.step",
        ),
        ({"parameters": {"random": {"parameters": {"n": {"uniform": [0, 1], "x": 1}}}}}, "n"),
    ],
)
def test_a_wrong_search_is_refused_naming_the_field(more: dict[str, Any], where: str) -> None:
    body = json_format.ParseDict(spec(**more), orchestrator_pb2.SweepSpec())
    with pytest.raises(InvalidArgument) as raised:
        plan(body, SETTINGS)
    assert any(w.endswith(where) for w, _ in raised.value.violations), raised.value.violations


def test_the_stored_spec_shows_every_setting_in_effect() -> None:
    made = plan(
        json_format.ParseDict(
            spec(earlyStopping={"rule": "hyperband"}, target={"value": 0.1}),
            orchestrator_pb2.SweepSpec(),
        ),
        SETTINGS,
    )
    assert made.spec["search"] == {"sampler": "tpe", "trials": 12, "seed": 7}
    assert made.spec["earlyStopping"] == {
        "rule": "hyperband",
        "metric": "loss",
        "goal": "minimize",
        "stepKey": "step",
        "minResource": 1,
        "maxResource": 100,
        "reductionFactor": 3,
    }
    assert made.spec["target"] == {"metric": "loss", "value": 0.1}


def test_several_objectives_are_learnt_together(orchestrator_db: Path) -> None:
    objectives = [{"metric": "loss"}, {"metric": "speed", "goal": "maximize"}]
    for sampler in ("tpe", "nsga2", "random", "qmc"):
        sweep_id = f"multi-{sampler}"
        made = plan(
            json_format.ParseDict(
                {
                    **spec(search={"sampler": sampler, "trials": 8, "seed": 1}),
                    "objective": {},
                    "objectives": objectives,
                },
                orchestrator_pb2.SweepSpec(),
            ),
            SETTINGS,
        )
        assert made.spec["objectives"] == [
            {"metric": "loss", "goal": "minimize"},
            {"metric": "speed", "goal": "maximize"},
        ]
        store.create_sweep(sweep_id, made.task, made.spec, made.trials)
        while not store.sweep_finished(sweep_id):
            store.ask_trials(2)
            for row in trials(sweep_id):
                if row.state == "pending":
                    params = json.loads(row.params_json)
                    result = {"loss": branin(params), "speed": params["x"]}
                    if row.position == 3:
                        result = {"loss": 1.0}  # no speed: told as failed
                    store.finish_trial(
                        start(row),
                        TrialResult(outcome=Outcome.SUCCEEDED, reason="", result=result),
                    )
        study = store._search(store.Sweep.get_by_id(sweep_id))
        told = study._study.get_trials()
        assert [t.state.name for t in told].count("COMPLETE") == 7, sampler
        assert told[3].state.name == "FAIL"
        assert all(len(t.values) == 2 for t in told if t.values)


def test_the_pareto_front_is_what_nothing_beats() -> None:
    from orchestrator_svc import views

    spec_ = {"objectives": [{"metric": "a"}, {"metric": "b", "goal": "maximize"}]}

    def row(i: int, result: dict[str, Any] | None, outcome: str = "succeeded") -> Any:
        return store.Trial(
            position=i, outcome=outcome, result_json=json.dumps(result) if result else ""
        )

    rows = [
        row(0, {"a": 1, "b": 1}),
        row(1, {"a": 2, "b": 3}),
        row(2, {"a": 1, "b": 1}),  # equals 0: the lower index stands
        row(3, {"a": 0, "b": 0}),
        row(4, {"a": 3, "b": 2}),  # beaten by 1
        row(5, {"a": 0.5, "b": 5}, outcome="failed"),
        row(6, {"a": 0.5}),
        row(7, {"a": 2, "b": 3.5}),
    ]
    assert views.pareto_front(spec_, rows) == [0, 3, 7]
    assert views.pareto_front({"objective": {"metric": "a"}}, rows) == []


@pytest.mark.parametrize(
    ("more", "where"),
    [
        ({"objectives": [{"metric": "a"}, {"metric": "b"}]}, "objective"),
        ({"objective": {}, "objectives": [{"metric": "a"}]}, "objectives"),
        ({"objective": {}, "objectives": [{"metric": "a"}, {"metric": "a"}]}, "objectives"),
        (
            {
                "objective": {},
                "objectives": [{"metric": "a"}, {"metric": "b"}],
                "search": {"sampler": "cmaes", "trials": 3},
            },
            "search.sampler",
        ),
        (
            {
                "objective": {},
                "objectives": [{"metric": "a"}, {"metric": "b"}],
                "earlyStopping": {"rule": "median"},
            },
            "earlyStopping",
        ),
        (
            {"objective": {}, "objectives": [{"metric": "a"}, {"metric": "b", "goal": "up"}]},
            "objectives[1].goal",
        ),
    ],
)
def test_wrong_objectives_are_refused(more: dict[str, Any], where: str) -> None:
    body = json_format.ParseDict(spec(**more), orchestrator_pb2.SweepSpec())
    with pytest.raises(InvalidArgument) as raised:
        plan(body, SETTINGS)
    assert any(w == where for w, _ in raised.value.violations), raised.value.violations


def test_a_schema_3_file_is_brought_up_to_date(tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    from prism.sqlite import DbThread, SchemaError

    path = tmp_path / "orchestrator.db"
    DbThread(store.db, path, store.MODELS, schema_version=store.SCHEMA_VERSION).close()
    # The file as version 3 left it: without schema 4's and 5's columns and table, one
    # sweep in it.
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP INDEX trial_sweep_id_objective_rank_position")
        db.execute('ALTER TABLE "trial" DROP COLUMN "objective_rank"')
        for model, columns in store._ADDED_IN_4.items():
            for name in columns:
                db.execute(f'ALTER TABLE "{model._meta.table_name}" DROP COLUMN "{name}"')
        db.execute('DROP TABLE "searchlog"')
        db.execute(
            "INSERT INTO sweep (id, task, spec_json, status, created_at, last_seq) "
            "VALUES ('old', 't', '{}', 'done', 1.0, 0)"
        )
        db.execute("PRAGMA user_version = 3")
        db.commit()
    DbThread(
        store.db, path, store.MODELS, schema_version=store.SCHEMA_VERSION, migrate=store.migrate
    ).close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        assert db.execute("SELECT id, budget, stop_reason FROM sweep").fetchall() == [
            ("old", 0, "")
        ]
        assert db.execute("SELECT COUNT(*) FROM searchlog").fetchone()[0] == 0
        db.execute("PRAGMA user_version = 2")
        db.commit()
    with pytest.raises(SchemaError):  # older than that: refused, as before
        DbThread(
            store.db, path, store.MODELS, schema_version=store.SCHEMA_VERSION, migrate=store.migrate
        )
    store.db.init(None)


@pytest.mark.parametrize("rule", [None, {"rule": "asha"}])
def test_the_grid_sampler_runs_each_combination_once(
    orchestrator_db: Path, rule: dict[str, Any] | None
) -> None:
    grid: dict[str, list[Any]] = {"x": [0, 1, 2, 3, 4, 5], "k": ["a", {"b": 1}]}
    more: dict[str, Any] = {
        "parameters": {"grid": grid},
        "search": {"sampler": "grid", "seed": 1},
        "maxParallel": 1,
    }
    if rule:
        more["earlyStopping"] = rule
    create("g", **more)
    while not store.sweep_finished("g"):
        assert store.ask_trials(1) == 1
        [row] = [t for t in trials("g") if t.state == "pending"]
        execution_id = start(row)
        metric(execution_id, 1, float(row.position))
        succeed(execution_id, float(row.position))
    asked = [json.loads(t.params_json) for t in trials("g")]
    assert len(asked) == 12
    assert sorted(json.dumps(p, sort_keys=True) for p in asked) == sorted(
        json.dumps({"k": k, "x": x}, sort_keys=True) for x in grid["x"] for k in grid["k"]
    )
    sweep = store.sweep("g")
    assert sweep is not None and sweep.status == "done"


def test_a_grid_too_big_to_list_is_refused() -> None:
    grid = {f"p{i}": list(range(10)) for i in range(5)}
    body = json_format.ParseDict(
        spec(parameters={"grid": grid}, search={"sampler": "grid", "trials": 5}),
        orchestrator_pb2.SweepSpec(),
    )
    with pytest.raises(InvalidArgument) as raised:
        plan(body, SETTINGS)
    assert raised.value.violations[0][0] == "parameters.grid"


def test_a_trial_of_a_stopped_sweep_is_never_queued_again(orchestrator_db: Path) -> None:
    create("s", maxParallel=2, maxDurationSeconds=5)
    store.ask_trials(2)
    first, second = trials("s")
    start(first, "gone")
    assigned = store.assign(second.id, "r1")
    assert assigned is not None
    store.Sweep.update(deadline=time.time() - 1).execute()
    store.stop_overdue()
    # The runner never got the second one; the first one's runner left the configuration.
    store.unassign(second.id, "r1", "stream closed before send")
    assert store.release_unknown_runners(["r1"]) == [first.id]
    ended = trials("s")
    assert [t.outcome for t in ended] == ["cancelled", "cancelled"]
    assert "deadline" in ended[0].reason and "deadline" in ended[1].reason
    assert store.dispatchable(10) == []
    sweep = store.sweep("s")
    assert sweep is not None and sweep.finished_at is not None


@pytest.mark.parametrize("with_search", [True, False])
@pytest.mark.parametrize(
    ("dist", "where"),
    [
        ({"uniform": [0, 1], "step": 1e-300}, "x.step"),
        ({"uniform": [0, 1], "step": 5e-324}, "x.step"),
        ({"uniform": [-1e308, 1e308], "step": 1e300}, "x"),
        ({"uniform": [-1e308, 1e308]}, "x"),
        ({"int": [-1e300, 1e300]}, "x"),
    ],
)
def test_a_space_no_sampler_can_use_is_refused(
    dist: dict[str, Any], where: str, with_search: bool
) -> None:
    parameters: dict[str, Any] = {"parameters": {"x": dist}}
    if not with_search:
        parameters["trials"] = 3
    body = spec(parameters={"random": parameters})
    if not with_search:
        del body["search"]
    with pytest.raises(InvalidArgument) as raised:
        plan(json_format.ParseDict(body, orchestrator_pb2.SweepSpec()), SETTINGS)
    assert raised.value.violations[0][0] == f"parameters.random.parameters.{where}"


def test_a_failing_sampler_stops_its_sweep_alone(
    orchestrator_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create("bad", maxParallel=2)
    create("good", maxParallel=2)
    real = search.Search.ask

    def ask(self: search.Search, number: int) -> dict[str, Any]:
        if self._study.study_name == "bad":
            raise ValueError("the sampler broke")
        return real(self, number)

    monkeypatch.setattr(search.Search, "ask", ask)
    assert store.ask_trials(4) == 2
    assert len(trials("good")) == 2 and trials("bad") == []
    bad = store.sweep("bad")
    assert bad is not None and (bad.stop_reason, bad.status) == ("search_failed", "error")
    assert "sweep_search_failed" in kinds("bad")


def test_asha_judges_the_first_step_at_or_past_each_rung(orchestrator_db: Path) -> None:
    create("s", maxParallel=3, **asha(reductionFactor=3))
    store.ask_trials(3)
    ids = [start(t) for t in trials("s")]
    # Steps 10, 20, … 100 hit no rung (1, 3, 9, 27, 81) exactly.
    for i in range(2):
        for step in range(10, 101, 10):
            metric(ids[i], step, 1.0 / step + i * 0.001)
        succeed(ids[i], 0.01)
    for step in (10, 20, 30):
        metric(ids[2], step, 1000.0)
    row = trials("s")[2]
    assert row.outcome is None and row.pruned_step == 10
    assert [s for s, _ in json.loads(trials("s")[0].intermediate_json)] == [10, 30, 90]


def test_a_step_keeps_the_top_of_its_range(orchestrator_db: Path) -> None:
    space = {"x": {"uniform": [0, 0.9], "step": 0.3}}
    create(
        "s",
        parameters={"random": {"parameters": space}},
        search={"sampler": "random", "trials": 40, "seed": 1},
    )
    store.ask_trials(40)
    drawn = {round(json.loads(t.params_json)["x"], 9) for t in trials("s")}
    assert drawn == {0, 0.3, 0.6, 0.9}


def test_a_long_metric_line_is_recorded_not_judged(orchestrator_db: Path) -> None:
    create("s", maxParallel=1, **asha())
    store.ask_trials(1)
    execution_id = start(trials("s")[0])
    line = json.dumps({"step": 1, "loss": 1.0, "note": "x" * store.MAX_JUDGED_LINE_CHARS})
    store.record_metrics([(execution_id, line)])
    assert kinds("s").count("metric") == 1
    assert trials("s")[0].intermediate_json == ""


def test_median_judges_the_first_step_at_or_past_each_interval(orchestrator_db: Path) -> None:
    rule = {"rule": "median", "warmupSteps": 5, "intervalSteps": 20, "startupTrials": 1}
    create("s", maxParallel=2, earlyStopping=rule, search={"sampler": "random", "trials": 2})
    store.ask_trials(2)
    good, bad = (start(t) for t in trials("s"))
    for step in range(10, 101, 10):  # none of them is on the grid 5 + 20k
        metric(good, step, 0.1)
    succeed(good, 0.1)
    told = [step for step, _ in json.loads(trials("s")[0].intermediate_json)]
    assert told == [10, 30, 50, 70, 90]
    metric(bad, 10, 100.0)
    assert trials("s")[1].pruned_step == 10


def test_an_adaptive_space_whose_trials_may_be_too_big_is_refused() -> None:
    big = {"x": {"choice": ["a" * 40_000, "b"]}}
    body = spec(parameters={"random": {"parameters": big}})
    with pytest.raises(InvalidArgument) as raised:
        plan(json_format.ParseDict(body, orchestrator_pb2.SweepSpec()), SETTINGS)
    assert raised.value.violations[0][0] == "parameters"


def test_a_step_past_the_largest_number_is_refused() -> None:
    space = {"x": {"uniform": [0, 1e308], "step": 1e308}}
    body = spec(parameters={"random": {"parameters": space}})
    with pytest.raises(InvalidArgument) as raised:
        plan(json_format.ParseDict(body, orchestrator_pb2.SweepSpec()), SETTINGS)
    assert raised.value.violations[0][0] == "parameters.random.parameters.x.step"


def test_a_study_that_cannot_be_read_fails_its_sweep_alone(orchestrator_db: Path) -> None:
    create("broken", maxParallel=2, **asha())
    store.ask_trials(2)
    held = start(trials("broken")[0])
    # Its journal is damaged, and nothing of it is in memory (as after a restart).
    store.SearchLog.update(body="not json").where(store.SearchLog.sweep == "broken").execute()
    store._searches.clear()
    create("fine", maxParallel=2, **asha())
    metric(held, 1, 1.0)  # recorded, not judged
    assert kinds("broken").count("metric") == 1
    assert succeed(held, 1.0) is None
    assert trials("broken")[0].outcome == "succeeded"
    assert store.ask_trials(4) == 2  # the fine sweep's, and the broken one stops
    assert len(trials("fine")) == 2
    broken = store.sweep("broken")
    assert broken is not None and (broken.stop_reason, broken.status) == ("search_failed", "done")
    assert [t.outcome for t in trials("broken")] == ["succeeded", "cancelled"]
