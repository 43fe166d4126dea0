"""The fast tier: in-process tests that need no Docker engine, no Envoy and no service
process (`make test-fast`, or `pytest -m "not slow"`). Each file runs in seconds at most.

Fixtures here restore what they change."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_docker_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever engine this machine runs is out of reach: a test that would use one
    fails at once instead of passing here and slowing the tier down."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
