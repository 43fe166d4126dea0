"""The client's own parts, in-process: the spec builder, error mapping, artifact paths."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2, json_format
from google.rpc import error_details_pb2, status_pb2

from orchestrator_svc.spec import plan
from prism import client
from prism.client import (
    EarlyStopping,
    InvalidArgument,
    Limits,
    NotFound,
    Objective,
    Search,
    SweepSpec,
    Target,
    UnsafeArtifactName,
    choice,
    grid,
    integer,
    listed,
    loguniform,
    random_search,
    search_space,
    uniform,
)
from tests.unit.test_spec import SETTINGS


def test_the_builder_writes_the_json_spec_the_api_takes() -> None:
    spec = SweepSpec(
        task="tune",
        script="print(1)",
        parameters=random_search(
            20,
            seed=7,
            lr=loguniform(1e-4, 1e-1),
            momentum=uniform(0.5, 0.99),
            layers=integer(1, 4),
            act=choice("relu", "tanh"),
        ),
        objective=Objective("loss", "minimize"),
        max_parallel=4,
        retries=1,
        limits=Limits(wall_seconds=60, memory_mb=512),
        requirements=("numpy",),
    )
    assert spec.to_json() == {
        "task": "tune",
        "script": "print(1)",
        "parameters": {
            "random": {
                "trials": 20,
                "seed": 7,
                "parameters": {
                    "lr": {"loguniform": [1e-4, 1e-1]},
                    "momentum": {"uniform": [0.5, 0.99]},
                    "layers": {"int": [1, 4]},
                    "act": {"choice": ["relu", "tanh"]},
                },
            }
        },
        "objective": {"metric": "loss", "goal": "minimize"},
        "maxParallel": 4,
        "retries": 1,
        "limits": {"wallSeconds": 60, "memoryMb": 512},
        "requirements": ["numpy"],
    }
    # The message the gRPC call carries says the same.
    shown = json_format.MessageToDict(spec.to_proto())
    assert shown["limits"] == {"wallSeconds": 60.0, "memoryMb": 512}
    assert shown["parameters"]["random"]["trials"] == 20


def test_grid_and_listed_parameters() -> None:
    assert grid(lr=[0.1, 0.01], layers=(1, 2)).space == {
        "grid": {"lr": [0.1, 0.01], "layers": [1, 2]}
    }
    assert listed({"a": 1}, {"a": 2}).space == {"list": [{"a": 1}, {"a": 2}]}
    assert SweepSpec(task="t").to_json() == {"task": "t"}


def test_an_adaptive_search_as_the_api_takes_it() -> None:
    spec = SweepSpec(
        task="tune",
        script="print(1)",
        parameters=search_space(
            lr=loguniform(1e-4, 1e-1),
            momentum=uniform(0.5, 0.9, step=0.1),
            batch=integer(16, 1024, log=True),
            layers=integer(2, 8, step=2),
            act=choice("relu", "tanh"),
        ),
        objective=Objective("loss"),
        search=Search("cmaes", trials=40, seed=3),
        early_stopping=EarlyStopping("hyperband", step_key="epoch", max_resource=30),
        target=Target(0.05),
        max_duration_seconds=600,
    )
    shown = spec.to_json()
    assert shown["parameters"] == {
        "random": {
            "parameters": {
                "lr": {"loguniform": [1e-4, 1e-1]},
                "momentum": {"uniform": [0.5, 0.9], "step": 0.1},
                "batch": {"int": [16, 1024], "log": True},
                "layers": {"int": [2, 8], "step": 2},
                "act": {"choice": ["relu", "tanh"]},
            }
        }
    }
    assert shown["search"] == {"sampler": "cmaes", "trials": 40, "seed": 3}
    assert shown["earlyStopping"] == {"rule": "hyperband", "stepKey": "epoch", "maxResource": 30}
    assert (shown["target"], shown["maxDurationSeconds"]) == ({"value": 0.05}, 600)
    # The service takes it as it is, every default filled in.
    made = plan(spec.to_proto(), SETTINGS).spec
    assert made["earlyStopping"]["metric"] == "loss" and made["earlyStopping"]["stepKey"] == "epoch"
    assert made["target"] == {"metric": "loss", "value": 0.05}


def test_several_objectives_as_the_api_takes_them() -> None:
    spec = SweepSpec(
        task="tune",
        script="print(1)",
        parameters=search_space(lr=loguniform(1e-4, 1e-1)),
        objectives=[Objective("loss"), Objective("accuracy", "maximize")],
        search=Search("nsga2", trials=20),
    )
    shown = spec.to_json()
    assert shown["objectives"] == [
        {"metric": "loss", "goal": "minimize"},
        {"metric": "accuracy", "goal": "maximize"},
    ]
    assert plan(spec.to_proto(), SETTINGS).spec["objectives"] == shown["objectives"]


def test_search_settings_left_out_are_the_service_s_defaults() -> None:
    spec = SweepSpec(
        task="t",
        script="print(1)",
        parameters=grid(lr=[0.1, 0.01]),
        objective=Objective("acc", "maximize"),
        search=Search("grid"),
        early_stopping=EarlyStopping("median", startup_trials=0),
        target=Target(0.0, metric="acc"),
    )
    shown = spec.to_json()
    assert shown["search"] == {"sampler": "grid"}
    assert shown["earlyStopping"] == {"rule": "median", "startupTrials": 0}
    assert shown["target"] == {"value": 0.0, "metric": "acc"}
    assert "maxDurationSeconds" not in shown
    made = plan(spec.to_proto(), SETTINGS).spec
    assert made["search"] == {"sampler": "grid", "trials": 2, "seed": 0}
    assert made["earlyStopping"]["goal"] == "maximize"


def test_a_spec_field_the_api_does_not_have_is_refused_naming_it() -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.spec_message({"task": "t", "maxParalel": 2})
    assert "maxParalel" in caught.value.message
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


class Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailing


def test_errors_carry_their_code_message_and_field_violations() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="limits.cpus", description="> 0")
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad)
    status = status_pb2.Status(code=3, message="limits.cpus: > 0", details=[detail])
    error = client.error_from(
        Failed(
            grpc.StatusCode.INVALID_ARGUMENT,
            "limits.cpus: > 0",
            (("grpc-status-details-bin", status.SerializeToString()),),
        )
    )
    assert isinstance(error, InvalidArgument)
    assert error.violations == (client.FieldViolation("limits.cpus", "> 0"),)
    assert isinstance(client.error_from(Failed(grpc.StatusCode.NOT_FOUND, "no")), NotFound)
    other = client.error_from(Failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"))
    assert type(other) is client.ApiError and other.code == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    "name",
    ["../up", "a/../../up", "/etc/passwd", "a//b", "./a", "a/.", "", "nul\0"],
)
def test_an_artifact_name_that_would_leave_the_folder_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeArtifactName):
        client._inside(tmp_path, name)


def test_a_symlink_inside_the_folder_does_not_lead_out(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    os.symlink(tmp_path, tmp_path / "dest" / "link")
    with pytest.raises(UnsafeArtifactName):
        client._inside(tmp_path / "dest", "link/escape.txt")
    assert client._inside(tmp_path / "dest", "plots/a.png") == tmp_path / "dest" / "plots" / "a.png"


def test_the_token_comes_from_the_environment_then_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PRISM_API_TOKEN", "PRISM_API_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PRISM_DATA_DIR", str(tmp_path))
    assert client.default_token() is None
    (tmp_path / "api_token").write_text("from-file\n")
    assert client.default_token() == "from-file"
    monkeypatch.setenv("PRISM_API_TOKEN", "from-env")
    assert client.default_token() == "from-env"


def test_a_backslash_is_an_ordinary_character_of_a_name(tmp_path: Path) -> None:
    assert client._inside(tmp_path, "a\\..\\b") == tmp_path / "a\\..\\b"


def test_errors_survive_pickling() -> None:
    error = InvalidArgument(
        grpc.StatusCode.INVALID_ARGUMENT, "bad", [client.FieldViolation("task", "required")]
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is InvalidArgument and copy.violations == error.violations
    assert str(copy) == str(error)


def test_unreadable_status_details_leave_the_code_and_message() -> None:
    broken = Failed(
        grpc.StatusCode.INVALID_ARGUMENT, "bad", (("grpc-status-details-bin", b"\xff\xff"),)
    )
    error = client.error_from(broken)
    assert isinstance(error, InvalidArgument) and error.violations == ()


def test_builder_footguns_are_caught() -> None:
    with pytest.raises(TypeError, match="requirements"):
        SweepSpec(task="t", requirements="numpy")
    # A parameter named like an argument goes through the mapping.
    space = random_search(3, {"seed": integer(0, 9)}, seed=5).space
    assert space["random"]["seed"] == 5
    assert space["random"]["parameters"] == {"seed": {"int": [0, 9]}}
    assert search_space({"seed": integer(0, 9)}).space == {
        "random": {"parameters": {"seed": {"int": [0, 9]}}}
    }
    # A random search's own trials and seed would be refused beside the Search's.
    with pytest.raises(ValueError, match="search_space"):
        SweepSpec(task="t", parameters=random_search(3, x=uniform(0, 1)), search=Search())


def test_the_client_s_names_are_the_package_s() -> None:
    import prism
    import prism.client

    assert prism.Client is prism.client.Client and prism.AsyncClient is prism.client.AsyncClient
    assert prism.SweepSpec is prism.client.SweepSpec and prism.NotFound is prism.client.NotFound
    with pytest.raises(AttributeError):
        prism.no_such_name  # noqa: B018
