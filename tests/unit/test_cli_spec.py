"""What `prism run` sends: specs from a script and flags, and from spec files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prism import cli, specfile
from prism.client import spec_message

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
    from prism.v1 import orchestrator_pb2

    def sweep(state: str, succeeded: int, total: int) -> orchestrator_pb2.Sweep:
        counts = orchestrator_pb2.TrialCounts(total=total, succeeded=succeeded, finished=total)
        return orchestrator_pb2.Sweep(state=state, counts=counts)

    assert cli.sweep_status(sweep("done", 3, 3)) == cli.EXIT_OK
    assert cli.sweep_status(sweep("done", 2, 3)) == cli.EXIT_TRIALS_FAILED
    assert cli.sweep_status(sweep("error", 0, 3)) == cli.EXIT_TRIALS_FAILED
    assert cli.sweep_status(sweep("cancelled", 3, 3)) == cli.EXIT_CANCELLED


def test_a_watch_s_json_lines_are_the_http_api_s_events() -> None:
    from google.protobuf import json_format, struct_pb2, timestamp_pb2

    from prism.client import Event
    from prism.v1 import orchestrator_pb2

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
