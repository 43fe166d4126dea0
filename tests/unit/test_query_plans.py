"""The orchestrator's reads of trials, each checked with SQLite's EXPLAIN QUERY PLAN:
every query a sweep's reads and the dispatcher's hot paths run searches an index,
none scans the trial table, so their cost stays flat in the sweep's and the store's
size. The statements are the ones the store really runs (caught from Peewee's log),
explained with their own parameters."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator_svc import store
from prism.trial import Outcome
from tests.unit.test_trial_pages import create, finish


class Statements(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[tuple[str, tuple[Any, ...]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, tuple) and len(record.msg) == 2:
            sql, params = record.msg
            self.found.append((sql, tuple(params or ())))


@contextmanager
def caught() -> Iterator[Statements]:
    """The statements Peewee runs meanwhile."""
    logger = logging.getLogger("peewee")
    handler, level = Statements(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def plans(path: Path, read: Callable[[], object]) -> list[tuple[str, str]]:
    """Each SELECT of trials `read` runs, with its plan as one text."""
    with caught() as statements:
        read()
    assert statements.found, "nothing was read"
    explained = []
    with closing(sqlite3.connect(path)) as raw:
        for sql, params in statements.found:
            if not sql.lstrip().upper().startswith("SELECT") or '"trial"' not in sql:
                continue
            rows = raw.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
            explained.append((sql, " | ".join(str(row[-1]) for row in rows)))
    assert explained, "no read of trials"
    return explained


@pytest.fixture
def populated(orchestrator_db: Path) -> Path:
    """Sweeps of several sizes, their trials in every state, some ranked."""
    create("big", 400, objective={"metric": "loss", "goal": "maximize"})
    create("small", 20)
    create("done", 5, objective={"metric": "loss"})
    for index in range(0, 400, 7):
        finish("big", index, Outcome.SUCCEEDED, {"loss": index % 13})
    for index in [i for i in range(1, 400, 31) if i % 7]:
        finish("big", index, Outcome.FAILED, None)
    for index in range(4):
        finish("done", index, Outcome.SUCCEEDED, {"loss": index})
    store.assign("big/2", "r1")
    store.assign("small/0", "r1")
    return orchestrator_db


READS: dict[str, Callable[[], object]] = {
    "get sweep": lambda: store.sweep_answer("big", 1000),
    "list trials by index": lambda: store.trial_page("big", limit=101),
    "list trials by index after a key": lambda: store.trial_page(
        "big", after=(None, 150), limit=101
    ),
    "list trials in a state": lambda: store.trial_page(
        "big", state="pending", after=(None, 10), limit=101
    ),
    "list trials with an outcome": lambda: store.trial_page(
        "big", outcome="failed", after=(None, 10), limit=101
    ),
    "list trials in a state with an outcome": lambda: store.trial_page(
        "big", state="finished", outcome="succeeded", limit=101
    ),
    "list trials best first": lambda: store.trial_page("big", order="objective", limit=101),
    "list trials best first after a key": lambda: store.trial_page(
        "big", order="objective", after=(-3.0, 14), limit=101
    ),
    "list trials best first in the rest": lambda: store.trial_page(
        "big", order="objective", after=(None, 30), limit=101
    ),
    "list trials best first with an outcome": lambda: store.trial_page(
        "big", order="objective", outcome="succeeded", limit=101
    ),
    "list sweeps with their counts": lambda: store.list_sweeps(20, None),
    "dispatch the queued trials": lambda: store.dispatchable(8),
    "a trial ends, its sweep goes on": lambda: finish("big", 398, Outcome.SUCCEEDED, {"loss": 1}),
    "a sweep's last trial ends": lambda: finish("done", 4, Outcome.SUCCEEDED, {"loss": 1}),
    "a trial and its artifacts": lambda: store.trial_at("big", 3),
}


@pytest.mark.parametrize("name", list(READS))
def test_each_read_of_trials_searches_an_index(populated: Path, name: str) -> None:
    for sql, plan in plans(populated, READS[name]):
        assert "SCAN trial" not in plan, f"{name}: {plan}\n{sql}"
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan or "PRIMARY KEY" in plan, (
            f"{name}: {plan}\n{sql}"
        )


def test_pages_need_no_sort_of_the_sweeps_trials(populated: Path) -> None:
    """A page is read from the front of its index: no temporary tree of every matching
    trial, which would cost as much as the sweep is large."""
    for name in [n for n in READS if n.startswith("list trials")]:
        for sql, plan in plans(populated, READS[name]):
            if "LIMIT" in sql:
                assert "TEMP B-TREE" not in plan, f"{name}: {plan}\n{sql}"
