"""What a restart asks of the store before the orchestrator serves (Dispatcher.start,
then each runner's trials for its new stream), counted in SQL statements: none of it
may run a statement per trial, so recovery stays a handful of queries however many
trials were running. (Its time is measured by bench/recovery.py, not here.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from orchestrator_svc import domain, store

RUNNERS = ["r1", "r2", "r3"]


def crashed_mid_run(sweeps: int, running: int) -> None:
    """`sweeps` sweeps each with `running` trials started on the runners in turn and one
    trial still pending, as an orchestrator killed mid-run leaves them."""
    planned = [domain.PlannedTrial(f"t{i}", "print(1)", {"i": i}) for i in range(running + 1)]
    n = 0
    for _ in range(sweeps):
        sweep_id = store.create_sweep(str(uuid.uuid4()), "task", {"task": "task"}, planned)
        for index in range(running):
            trial = store.assign(f"{sweep_id}/{index}", RUNNERS[n % len(RUNNERS)])
            assert trial is not None
            store.mark_started(trial.execution_id)
            n += 1


def statements(work: Callable[[], object]) -> int:
    executed: list[str] = []
    connection = store.db.connection()
    connection.set_trace_callback(executed.append)
    try:
        work()
    finally:
        connection.set_trace_callback(None)
    return len(executed)


def recovery() -> None:
    """The store's part of a restart, in the order the orchestrator does it."""
    store.finish_complete_sweeps()
    store.release_unknown_runners(RUNNERS)
    for runner in store.holders():
        held, _ = store.held_by(runner)
        assert all(item.trial.state == domain.RUNNING for item in held)


def test_a_restart_runs_no_statement_per_running_trial(orchestrator_db: Path) -> None:
    crashed_mid_run(sweeps=4, running=3)
    few = statements(recovery)
    store.Trial.delete().execute()
    store.Event.delete().execute()
    store.Sweep.delete().execute()
    crashed_mid_run(sweeps=4, running=30)
    assert statements(recovery) == few


def test_a_restart_runs_a_few_statements_per_unfinished_sweep_at_most(
    orchestrator_db: Path,
) -> None:
    crashed_mid_run(sweeps=5, running=2)
    five = statements(recovery)
    crashed_mid_run(sweeps=45, running=2)
    fifty = statements(recovery)
    assert fifty - five <= 3 * 45
