"""grpcurl, as the README uses it: reflection and calls against the orchestrator
directly and through the gateway."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prism.stack import GATEWAY, ORCHESTRATOR
from tests.conftest import REPO, RunningStack, StackFactory

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def grpcurl(
    stack: RunningStack, *args: str, token: str | None = "default"
) -> subprocess.CompletedProcess[str]:
    auth = (
        []
        if token is None
        else ["-H", f"authorization: Bearer {stack.token if token == 'default' else token}"]
    )
    return subprocess.run(
        [GRPCURL, "-plaintext", "-max-time", "60", *auth, *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.parametrize("service", [ORCHESTRATOR, GATEWAY])
def test_list_and_describe_through_reflection(stack: RunningStack, service: str) -> None:
    address = stack.layout.address(service)
    listed = grpcurl(stack, address, "list")
    assert listed.returncode == 0, listed.stderr
    assert {"prism.v1.Orchestrator", "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = grpcurl(stack, address, "describe", "prism.v1.Orchestrator")
    assert described.returncode == 0, described.stderr
    for method in ("GetLanding", "RunSweep", "GetSweepStatus"):
        assert f"rpc {method}" in described.stdout
    message = grpcurl(stack, address, "describe", "prism.v1.RunSweepRequest")
    assert "optional string task = 1;" in message.stdout


@pytest.mark.parametrize("service", [ORCHESTRATOR, GATEWAY])
def test_run_sweep_with_grpcurl(stack: RunningStack, service: str) -> None:
    called = grpcurl(
        stack,
        "-d",
        '{"task": "via grpcurl"}',
        stack.layout.address(service),
        "prism.v1.Orchestrator/RunSweep",
    )
    assert called.returncode == 0, called.stderr
    reply = json.loads(called.stdout)
    assert [r["runner"] for r in reply["results"]] == ["runner-a", "runner-b", "runner-c"]
    assert [json.loads(r["output"])["best_lr"] for r in reply["results"]] == [0.0001, 0.1, 0.1]

    polled = grpcurl(
        stack,
        "-d",
        json.dumps({"sweep_id": reply["sweep_id"]}),
        stack.layout.address(service),
        "prism.v1.Orchestrator/GetSweepStatus",
    )
    assert polled.returncode == 0, polled.stderr
    assert json.loads(polled.stdout)["status"] == "done"


def test_call_through_the_gateway_with_the_protoset(stack: RunningStack) -> None:
    called = grpcurl(
        stack,
        "-protoset",
        str(REPO / "gateway" / "prism.pb"),
        stack.gateway,
        "prism.v1.Orchestrator/GetLanding",
    )
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["name"] == "prism"


@pytest.mark.parametrize("service", [ORCHESTRATOR, GATEWAY])
@pytest.mark.parametrize("token", [None, "wrong"])
def test_grpcurl_without_the_token_is_refused(
    stack: RunningStack, service: str, token: str | None
) -> None:
    refused = grpcurl(stack, stack.layout.address(service), "list", token=token)
    assert refused.returncode != 0
    assert "Unauthenticated" in refused.stderr


def test_invalid_argument_carries_the_field(stack: RunningStack) -> None:
    called = grpcurl(
        stack, "-d", '{"task": ""}', stack.orchestrator, "prism.v1.Orchestrator/RunSweep"
    )
    assert called.returncode != 0
    assert "InvalidArgument" in called.stderr
    assert "task" in called.stderr


def test_an_orchestrator_without_a_token_configured_is_closed(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    stack = make_stack(runners=1, gateway=False, env={"PRISM_API_TOKEN_FILE": str(empty)})
    refused = grpcurl(stack, stack.orchestrator, "list", token="anything")
    assert refused.returncode != 0
    assert "Unavailable" in refused.stderr and "no API token" in refused.stderr
