"""The runner's drain setting, read from the environment, and what the local stack
makes of it: how long `make down` waits for a runner before killing it."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism.stack import ORCHESTRATOR, STOP_SECONDS, Layout
from runner_svc.config import Settings


def test_the_drain_defaults_to_20_s_and_takes_a_value_in_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PRISM_RUNNER_DRAIN_SECONDS", raising=False)
    assert Settings.from_env().drain_seconds == 20.0
    monkeypatch.setenv("PRISM_RUNNER_DRAIN_SECONDS", "0")
    assert Settings.from_env().drain_seconds == 0.0
    for bad in ("-1", "3601", "nan"):
        monkeypatch.setenv("PRISM_RUNNER_DRAIN_SECONDS", bad)
        with pytest.raises(ValueError, match="PRISM_RUNNER_DRAIN_SECONDS"):
            Settings.from_env()


def test_the_stack_waits_for_a_runner_s_drain_before_killing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PRISM_RUNNER_DRAIN_SECONDS", raising=False)
    layout = Layout(data_dir=tmp_path, runner_ports=(1, 2))
    assert layout.stop_seconds("runner-1") == STOP_SECONDS + 20
    assert layout.stop_seconds(ORCHESTRATOR) == STOP_SECONDS
    given = Layout(data_dir=tmp_path, extra_env={"PRISM_RUNNER_DRAIN_SECONDS": "2"})
    assert given.stop_seconds("runner-2") == STOP_SECONDS + 2
