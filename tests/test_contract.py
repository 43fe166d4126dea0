"""The committed stubs and descriptor set are what the protos generate."""

from __future__ import annotations

import subprocess
import sys

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from tests.conftest import REPO


def test_generated_files_are_up_to_date() -> None:
    check = subprocess.run(
        [sys.executable, str(REPO / "protos" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr + check.stdout


def test_descriptor_set_carries_the_http_rules_and_rich_errors() -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(
        (REPO / "gateway" / "prism.pb").read_bytes()
    )
    names = {f.name for f in files.file}
    assert {
        "prism/v1/orchestrator.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
        "google/api/annotations.proto",
    } <= names
    [orchestrator] = [f for f in files.file if f.name == "prism/v1/orchestrator.proto"]
    rules = {
        m.name: m.options.Extensions[annotations_pb2.http] for m in orchestrator.service[0].method
    }
    assert (rules["GetLanding"].get, rules["GetLanding"].body) == ("/", "")
    assert (rules["RunSweep"].post, rules["RunSweep"].body) == ("/", "*")
    assert rules["GetSweepStatus"].get == "/sweeps/{sweep_id}"
    assert rules["ListTrials"].get == "/v1/sweeps/{sweep_id}/trials"
    # The HTTP create takes the raw body, parsed strictly by the orchestrator; the typed
    # create is for gRPC clients only (the transcoder would drop unknown JSON fields).
    create = rules["CreateSweepFromJson"]
    assert (create.post, create.body) == ("/v1/sweeps", "body")
    methods = {m.name: m for m in orchestrator.service[0].method}
    assert not methods["CreateSweep"].options.HasExtension(annotations_pb2.http)
