"""The fast tier: in-process tests that need no Docker engine, no Envoy and no service
process (`make test-fast`, or `pytest -m "not slow"`). Each file runs in seconds at most.

Fixtures here restore what they change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator_svc import store
from prism.sqlite import PRAGMAS, DbThread


@pytest.fixture(autouse=True)
def no_docker_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever engine this machine runs is out of reach: a test that would use one
    fails at once instead of passing here and slowing the tier down."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")


@pytest.fixture
def orchestrator_db(tmp_path: Path) -> Iterator[Path]:
    """The orchestrator's store on a throwaway file: created by ``prism.sqlite`` as the
    service creates it (schema version, tables), then opened with the service's pragmas
    on the test's own thread, so the store's functions are called directly. The store's
    database is left uninitialised again after the test."""
    path = tmp_path / "orchestrator.db"
    DbThread(store.db, path, store.MODELS, schema_version=store.SCHEMA_VERSION).close()
    store.db.init(str(path), pragmas=PRAGMAS)
    store.db.connect()
    yield path
    store.db.close()
    store.db.init(None)
