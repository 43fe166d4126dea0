"""What `prism run` sends: specs from a script and flags, and from spec files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator_svc import spec as service_spec
from prism import cli, specfile
from prism.client import spec_message
from prism.v1 import orchestrator_pb2
from tests.unit.test_spec import SETTINGS

SCRIPT = "import json\nprint(json.dumps({'loss': 1}))\n"


def build(tmp_path: Path, *argv: str) -> dict:
    (tmp_path / "train.py").write_text(SCRIPT)
    args = cli.parser().parse_args(["run", *argv])
    spec = cli.build_spec(args)
    spec_message(spec)  # what the command sends must be a valid message
    return spec


@pytest.fixture(autouse=True)
def _in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_the_issue_s_command_line_is_a_random_search(tmp_path: Path) -> None:
    spec = build(
        tmp_path,
        "train.py",
        *("-p", "lr=loguniform:1e-4:1e-1", "-p", "layers=1,2,3", "--trials", "20"),
        *("--objective", "loss:min", "--max-parallel", "4", "-r", "numpy"),
        *("--wall", "60", "--memory", "512"),
    )
    assert spec == {
        "task": "run train.py",
        "script": SCRIPT,
        "parameters": {
            "random": {
                "trials": 20,
                "seed": 0,
                "parameters": {"lr": {"loguniform": [1e-4, 0.1]}, "layers": {"choice": [1, 2, 3]}},
            }
        },
        "objective": {"metric": "loss", "goal": "minimize"},
        "maxParallel": 4,
        "requirements": ["numpy"],
        "limits": {"wallSeconds": 60.0, "memoryMb": 512},
    }


def test_listed_values_alone_are_a_grid_typed_as_json(tmp_path: Path) -> None:
    spec = build(tmp_path, "train.py", "-p", "opt=adam,sgd", "-p", "depth=2", "-p", "x=1.5,true")
    assert spec["parameters"] == {"grid": {"opt": ["adam", "sgd"], "depth": [2], "x": [1.5, True]}}
    assert "objective" not in spec and "limits" not in spec


def test_every_distribution_and_a_seed(tmp_path: Path) -> None:
    spec = build(
        tmp_path,
        "train.py",
        *("-p", "a=uniform:0:1", "-p", "b=int:1:8", "-p", "c=choice:x,y", "-p", "d=1,2"),
        *("--trials", "5", "--seed", "7", "--objective", "acc:max"),
    )
    random = spec["parameters"]["random"]
    assert (random["trials"], random["seed"]) == (5, 7)
    assert random["parameters"] == {
        "a": {"uniform": [0, 1]},
        "b": {"int": [1, 8]},
        "c": {"choice": ["x", "y"]},
        "d": {"choice": [1, 2]},
    }
    assert spec["objective"] == {"metric": "acc", "goal": "maximize"}


def test_an_adaptive_search_from_the_command_line(tmp_path: Path) -> None:
    spec = build(
        tmp_path,
        "train.py",
        *("-p", "lr=loguniform:1e-4:1e-1", "-p", "layers=1,2,3"),
        *("-p", "width=int:16:256:log", "-p", "drop=uniform:0:0.5:0.1", "-p", "n=int:2:8:2"),
        *("--objective", "loss", "--sampler", "tpe", "--trials", "30", "--seed", "4"),
        *("--prune", "asha", "--step-key", "epoch"),
        *("--prune-setting", "reductionFactor=2", "--prune-setting", "min_resource=2"),
        *("--target", "0.05", "--max-duration", "600"),
    )
    assert spec["parameters"] == {
        "random": {
            "parameters": {
                "lr": {"loguniform": [1e-4, 0.1]},
                "layers": {"choice": [1, 2, 3]},
                "width": {"int": [16, 256], "log": True},
                "drop": {"uniform": [0, 0.5], "step": 0.1},
                "n": {"int": [2, 8], "step": 2},
            }
        }
    }
    assert spec["search"] == {"sampler": "tpe", "trials": 30, "seed": 4}
    assert spec["earlyStopping"] == {
        "rule": "asha",
        "stepKey": "epoch",
        "reductionFactor": 2,
        "minResource": 2,
    }
    assert (spec["target"], spec["maxDurationSeconds"]) == ({"value": 0.05}, 600.0)
    # The service takes it, filling in the rule's metric and goal from the objective.
    made = service_spec.plan(spec_message(spec), SETTINGS).spec
    assert made["earlyStopping"]["metric"] == "loss" and made["earlyStopping"]["goal"] == "minimize"
    assert made["parameters"]["random"]["parameters"]["width"] == {"int": [16, 256], "log": True}


def test_a_grid_search_takes_its_size_as_the_budget_and_a_rule_its_own_metric(
    tmp_path: Path,
) -> None:
    spec = build(
        tmp_path,
        "train.py",
        *("-p", "lr=0.1,0.01", "-p", "layers=1,2", "--objective", "acc:max"),
        *("--sampler", "grid", "--prune", "median", "--prune-metric", "val_loss:min"),
    )
    assert spec["parameters"] == {"grid": {"lr": [0.1, 0.01], "layers": [1, 2]}}
    assert spec["search"] == {"sampler": "grid"}
    assert spec["earlyStopping"] == {"rule": "median", "metric": "val_loss", "goal": "minimize"}
    made = service_spec.plan(spec_message(spec), SETTINGS).spec
    assert made["search"]["trials"] == 4 and made["earlyStopping"]["goal"] == "minimize"


# A search that prunes: what the flags of a rule go with.
PRUNING = ["-p", "x=1,2", "--sampler", "grid", "--objective", "l", "--prune", "asha"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["-p", "x=uniform:0:1", "--sampler", "grid", "--objective", "l"], "listed values only"),
        (["-p", "x=uniform:0:1", "--sampler", "tpe", "--objective", "l"], "needs a budget"),
        (["-p", "x=uniform:0:1", "--sampler", "qmc", "--trials", "3"], "give --objective"),
        (["--sampler", "tpe", "--trials", "3", "--objective", "l"], "--sampler needs parameters"),
        (["-p", "x=1,2", "--prune", "asha"], "give --sampler too"),
        (["-p", "x=1,2", "--step-key", "epoch"], "go with --prune"),
        (["-p", "x=1,2", "--prune-setting", "percentile=5"], "go with --prune"),
        ([*PRUNING, "--prune-setting", "reductionFactor"], "expected NAME=NUMBER"),
        (
            [*PRUNING, "--prune-setting", "minResource=1", "--prune-setting", "min_resource=2"],
            "given twice",
        ),
        ([*PRUNING, "--prune-metric", ":max"], "expected METRIC"),
        (["-p", "x=loguniform:1:2:0.1", "--trials", "3"], r"loguniform:LOW:HIGH$"),
        (["-p", "x=uniform:0:1:log", "--trials", "3"], r"uniform:LOW:HIGH\[:STEP\]"),
        (["-p", "x=int:0:10:2:3", "--trials", "3"], r"int:LOW:HIGH\[:STEP\|log\]"),
        (["-p", "x=int:0:10:step", "--trials", "3"], "int takes two numbers"),
    ],
)
def test_a_wrong_search_flag_is_named(tmp_path: Path, argv: list[str], says: str) -> None:
    with pytest.raises(specfile.SpecError, match=says):
        build(tmp_path, "train.py", *argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["--sampler", "bayes"],
        ["--prune", "sha"],
        ["--target", "nan"],
        ["--max-duration", "inf"],
        ["--target", "low"],
    ],
)
def test_a_search_flag_s_value_outside_its_choices_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.parser().parse_args(["run", "train.py", *argv])
    assert exited.value.code == cli.EXIT_USAGE


def test_the_command_s_samplers_and_rules_are_the_service_s() -> None:
    assert specfile.SAMPLERS == service_spec.SAMPLERS
    assert specfile.RULES == tuple(service_spec.RULE_SETTINGS) == service_spec.RULES


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["-p", "lr"], "expected NAME=VALUES"),
        (["-p", "=1"], "expected NAME=VALUES"),
        (["-p", "lr=uniform:1"], "uniform takes two numbers"),
        (["-p", "lr=loguniform:a:b"], "loguniform takes two numbers"),
        (["-p", "lr=uniform:0:1"], "give --trials"),
        (["-p", "lr=1", "-p", "lr=2"], "given twice"),
        (["--trials", "3"], "--trials needs parameters"),
        (["-p", "lr=1,2", "--seed", "3"], "--seed is for a random search"),
        (["--objective", "loss:lowest"], "expected METRIC or METRIC:min"),
        (["--objective", ":min"], "expected METRIC"),
    ],
)
def test_a_wrong_flag_is_named(tmp_path: Path, argv: list[str], says: str) -> None:
    with pytest.raises(specfile.SpecError, match=says):
        build(tmp_path, "train.py", *argv)


def test_a_target_that_is_neither_script_nor_spec_file(tmp_path: Path) -> None:
    with pytest.raises(specfile.SpecError, match=r"expected a trial script \(.py\)"):
        build(tmp_path, "notes.txt")
    with pytest.raises(specfile.SpecError, match=r"missing\.py: No such file"):
        build(tmp_path, "missing.py")


SPEC_FILES = {
    "sweep.toml": """
task = "from toml"
scriptFile = "train.py"
maxParallel = 2
[parameters.grid]
lr = [0.1, 0.01]
[objective]
metric = "loss"
[limits]
wall_seconds = 30
""",
    "sweep.yaml": """
task: from yaml
scriptFile: train.py
maxParallel: 2
parameters: {grid: {lr: [0.1, 0.01]}}
objective: {metric: loss}
limits: {wall_seconds: 30}
""",
    "sweep.json": json.dumps(
        {
            "task": "from json",
            "script": SCRIPT,
            "maxParallel": 2,
            "parameters": {"grid": {"lr": [0.1, 0.01]}},
            "objective": {"metric": "loss"},
            "limits": {"wall_seconds": 30},
        }
    ),
}


@pytest.mark.parametrize("name", sorted(SPEC_FILES))
def test_spec_files_in_each_format_give_the_same_spec(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text(SPEC_FILES[name])
    message = spec_message(build(tmp_path, name))
    assert message.script == SCRIPT
    assert message.max_parallel == 2 and message.limits.wall_seconds == 30
    assert list(message.parameters.grid["lr"].values) != []
    assert message.objective.metric == "loss"


ADAPTIVE_FILES = {
    "search.toml": """
task = "adaptive from toml"
scriptFile = "train.py"
max_duration_seconds = 600
[parameters.random.parameters]
lr = { loguniform = [1e-4, 1e-1] }
width = { int = [16, 256], log = true }
drop = { uniform = [0, 0.5], step = 0.1 }
[objective]
metric = "loss"
[search]
sampler = "tpe"
trials = 30
seed = 4
[early_stopping]
rule = "asha"
step_key = "epoch"
reduction_factor = 2
[target]
value = 0.05
""",
    "search.yaml": """
task: adaptive from yaml
scriptFile: train.py
maxDurationSeconds: 600
parameters:
  random:
    parameters:
      lr: {loguniform: [1.0e-4, 1.0e-1]}
      width: {int: [16, 256], log: true}
      drop: {uniform: [0, 0.5], step: 0.1}
objective: {metric: loss}
search: {sampler: tpe, trials: 30, seed: 4}
earlyStopping: {rule: asha, stepKey: epoch, reductionFactor: 2}
target: {value: 0.05}
""",
    "search.json": json.dumps(
        {
            "task": "adaptive from json",
            "script": SCRIPT,
            "max_duration_seconds": 600,
            "parameters": {
                "random": {
                    "parameters": {
                        "lr": {"loguniform": [1e-4, 1e-1]},
                        "width": {"int": [16, 256], "log": True},
                        "drop": {"uniform": [0, 0.5], "step": 0.1},
                    }
                }
            },
            "objective": {"metric": "loss"},
            "search": {"sampler": "tpe", "trials": 30, "seed": 4},
            "early_stopping": {"rule": "asha", "stepKey": "epoch", "reduction_factor": 2},
            "target": {"value": 0.05},
        }
    ),
}


@pytest.mark.parametrize("name", sorted(ADAPTIVE_FILES))
def test_spec_files_take_a_search_in_each_format_and_spelling(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text(ADAPTIVE_FILES[name])
    message = spec_message(build(tmp_path, name))
    assert (message.search.sampler, message.search.trials, message.search.seed) == ("tpe", 30, 4)
    rule = message.early_stopping
    assert (rule.rule, rule.step_key, rule.reduction_factor) == ("asha", "epoch", 2)
    assert message.max_duration_seconds == 600 and message.target.value == 0.05
    made = service_spec.plan(message, SETTINGS).spec
    assert made["parameters"]["random"]["parameters"]["drop"] == {"uniform": [0, 0.5], "step": 0.1}
    assert made["earlyStopping"]["reductionFactor"] == 2
    # --target and --max-duration replace the file's own, however it spells them.
    spec = build(tmp_path, name, "--target", "0.5", "--max-duration", "60")
    assert (spec["target"], spec["maxDurationSeconds"]) == ({"value": 0.5}, 60.0)
    assert "max_duration_seconds" not in spec
    with pytest.raises(specfile.SpecError, match="go with a script"):
        build(tmp_path, name, "--sampler", "random")
    with pytest.raises(specfile.SpecError, match="go with a script"):
        build(tmp_path, name, "--prune-setting", "minResource=2")


def test_a_target_flag_keeps_the_file_s_target_metric(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text(
        "task: t\nscriptFile: train.py\nobjective: {metric: loss}\n"
        "target: {metric: loss, value: 1}\n"
    )
    assert build(tmp_path, "sweep.yaml", "--target", "0.2")["target"] == {
        "metric": "loss",
        "value": 0.2,
    }


def test_flags_override_a_spec_file(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text(SPEC_FILES["sweep.yaml"])
    spec = build(tmp_path, "sweep.yaml", "--wall", "5", "--max-parallel", "1", "--task", "t")
    assert spec["limits"] == {"wallSeconds": 5.0}  # the file's wall_seconds replaced, not doubled
    assert (spec["maxParallel"], spec["task"]) == (1, "t")
    with pytest.raises(specfile.SpecError, match="go with a script"):
        build(tmp_path, "sweep.yaml", "-p", "lr=1")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("- a list\n", "expected a mapping"),
        ("task: [unclosed\n", "sweep.yaml"),
        ("task: t\nscript: x\nscriptFile: train.py\n", "not both"),
        ("task: t\nscriptFile: nowhere.py\n", "nowhere.py"),
        ("task: t\nscriptFile: 3\n", "scriptFile must be a path"),
    ],
)
def test_a_broken_spec_file_is_named(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / "sweep.yaml").write_text(text)
    with pytest.raises(specfile.SpecError, match=says):
        build(tmp_path, "sweep.yaml")


def test_an_unknown_field_in_a_spec_file_is_named_before_sending(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text("task: t\nmaxParalel: 3\n")
    args = cli.parser().parse_args(["run", "sweep.yaml"])
    with pytest.raises(cli.Usage, match="maxParalel"):
        cli.run(None, args, None)  # type: ignore[arg-type]


def test_exit_statuses_of_a_finished_sweep() -> None:
    def sweep(state: str, succeeded: int, total: int) -> orchestrator_pb2.Sweep:
        counts = orchestrator_pb2.TrialCounts(total=total, succeeded=succeeded, finished=total)
        return orchestrator_pb2.Sweep(state=state, counts=counts)

    assert cli.sweep_status(sweep("done", 3, 3)) == cli.EXIT_OK
    assert cli.sweep_status(sweep("done", 2, 3)) == cli.EXIT_TRIALS_FAILED
    assert cli.sweep_status(sweep("error", 0, 3)) == cli.EXIT_TRIALS_FAILED
    assert cli.sweep_status(sweep("cancelled", 3, 3)) == cli.EXIT_CANCELLED


def stopped(state: str, stop_reason: str, *outcomes: str) -> orchestrator_pb2.Sweep:
    """A finished sweep whose trials ended so, with its counts as the service gives them."""
    counts = orchestrator_pb2.TrialCounts(
        total=len(outcomes),
        finished=len(outcomes),
        succeeded=outcomes.count("succeeded"),
        pruned=outcomes.count("pruned"),
    )
    trials = [
        orchestrator_pb2.Trial(index=i, state="finished", outcome=o) for i, o in enumerate(outcomes)
    ]
    return orchestrator_pb2.Sweep(
        state=state, stop_reason=stop_reason, counts=counts, trials=trials
    )


@pytest.mark.parametrize(
    ("sweep", "status"),
    [
        # Pruned trials were stopped on purpose: not failures.
        (stopped("done", "", "succeeded", "pruned", "pruned"), cli.EXIT_OK),
        (stopped("done", "", "succeeded", "pruned", "failed"), cli.EXIT_TRIALS_FAILED),
        # Nor are the trials a reached target or a passed deadline cancelled.
        (stopped("done", "target_reached", "succeeded", "cancelled", "pruned"), cli.EXIT_OK),
        (stopped("done", "deadline", "succeeded", "cancelled"), cli.EXIT_OK),
        (
            stopped("done", "deadline", "succeeded", "cancelled", "timed_out"),
            cli.EXIT_TRIALS_FAILED,
        ),
        # A sampler that failed, or no trial that succeeded, is a failure.
        (stopped("done", "search_failed", "succeeded", "cancelled"), cli.EXIT_TRIALS_FAILED),
        (stopped("done", "search_failed", "succeeded"), cli.EXIT_TRIALS_FAILED),
        (stopped("error", "deadline", "pruned", "cancelled"), cli.EXIT_TRIALS_FAILED),
        (stopped("cancelled", "", "pruned", "cancelled"), cli.EXIT_CANCELLED),
    ],
)
def test_pruned_trials_and_a_purposeful_stop_are_no_failure(
    sweep: orchestrator_pb2.Sweep, status: int
) -> None:
    assert cli.sweep_status(sweep) == status


def test_a_watch_s_json_lines_are_the_http_api_s_events() -> None:
    from google.protobuf import json_format, struct_pb2, timestamp_pb2

    from prism.client import Event

    data = struct_pb2.Struct()
    data.update({"values": {"step": 1, "loss": 0.5}})
    for index, final in ((3, False), (-1, True)):
        message = orchestrator_pb2.SweepEvent(
            seq=7,
            kind="metric" if index >= 0 else "sweep_finished",
            trial_index=index,
            data=data,
            time=timestamp_pb2.Timestamp(seconds=1_800_000_000, nanos=250_000_000),
            final=final,
            sweep_state="done" if final else "",
        )
        api = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        assert cli.event_json(Event.from_proto(message)) == api


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "", "9" * 5000])
def test_a_parameter_value_that_is_no_finite_number_or_empty_is_refused(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(specfile.SpecError, match="-p"):
        build(tmp_path, "train.py", "-p", f"x={value}")


@pytest.mark.parametrize(
    ("text", "says"),
    [("requirements: numpy\n", "requirements: expected a list"), ("requirements:\n", None)],
)
def test_requirements_from_the_command_line_join_the_file_s_list(
    tmp_path: Path, text: str, says: str | None
) -> None:
    (tmp_path / "sweep.yaml").write_text("task: t\nscriptFile: train.py\n" + text)
    if says:
        with pytest.raises(specfile.SpecError, match=says):
            build(tmp_path, "sweep.yaml", "-r", "scipy")
    else:  # an empty key is left out, as the API takes null
        assert build(tmp_path, "sweep.yaml", "-r", "scipy")["requirements"] == ["scipy"]
