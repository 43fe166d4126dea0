"""An orchestrator that dies at any instant of an adaptive sweep with early stopping
continues it as if nothing happened: the searcher's state is rebuilt from what the
store recorded, and the sweep asks for the same parameters, takes the same pruning
decisions and tells the same ends as a run that never died.

A death is the process stopping inside a store transaction that writes the sweep's
journal (the SearchLog rows): at the k-th such write, for every k a run makes. What
that transaction did is rolled back, the orchestrator's memory is lost
(store._searches), and what was being recorded is delivered again, as a runner does
with a result it has not heard was recorded. (A metric printed while the orchestrator
is away is not sent again by a real runner; here it is, so that the run can be compared
with one in which it was told.) The runners are the driver below: what they do depends
only on what the store says, so two runs recorded alike are driven alike."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orchestrator_svc import store
from orchestrator_svc.config import Settings
from orchestrator_svc.dispatch import Dispatcher
from orchestrator_svc.news import SweepNews
from prism import runner_protocol as protocol
from prism.sqlite import DbThread
from prism.trial import Outcome, TrialResult, not_run
from tests.search_journal import TrialRow, check_sweep, plain
from tests.unit.test_link import ScriptedRunner, serve
from tests.unit.test_search import branin, create, metric, start, trials

T = TypeVar("T")

STEPS = 4
PARALLEL = 3
SWEEP = "s"


class Died(BaseException):
    """The orchestrator process stopped here (a BaseException: nothing catches it as
    a failure of the sampler, or of anything else, as nothing would catch a SIGKILL)."""


@pytest.fixture(autouse=True)
def fresh_memory() -> Iterator[None]:
    store._searches.clear()
    store.take_stops()
    yield
    store._searches.clear()
    store.take_stops()


class Deaths:
    """Where the orchestrator dies: before the SearchLog insert that `die` picks (by
    the count of inserts tried so far, from 1, and the journal entry's number)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, die: Callable[[int, int], bool]) -> None:
        self.tried = 0
        self.died = 0
        real = store.SearchLog.insert_many

        def insert_many(rows: Any, fields: Any = None) -> Any:
            rows = list(rows)
            self.tried += 1
            if die(self.tried, rows[0][1]):
                self.died += 1
                raise Died
            return real(rows, fields=fields)

        monkeypatch.setattr(store.SearchLog, "insert_many", insert_many)

    def deliver(self, call: Callable[[], T]) -> T:
        """`call` on the orchestrator; if it dies meanwhile, on the one started after."""
        for _ in range(100):
            try:
                return call()
            except Died:
                store._searches.clear()  # a new process knows nothing but the store
                store.take_stops()
        raise AssertionError("died a hundred times over one call")


def loss(params: dict[str, Any], step: int) -> float:
    """Each trial's curve: falling to its objective at the last step."""
    return branin(params) * (1 + 2 / step) + len(json.dumps(params["k"]))


def drive(deaths: Deaths) -> None:
    """Run the sweep to its end as the runners would: each loop, ask for trials to fill
    PARALLEL slots, start them, then every running trial does one thing: prints its
    next metric, or ends (at once, failed, when x > 8.5; after its last metric, with
    its curve's last value; a pruned one, stopped)."""
    call = deaths.deliver

    printed: dict[int, int] = {}  # steps each trial printed, as its runner knows
    for _ in range(1000):
        if store.sweep_finished(SWEEP):
            return
        call(lambda: store.ask_trials(PARALLEL))
        for row in trials(SWEEP):
            if row.state == "pending":
                start(row)
        for row in trials(SWEEP):
            if row.state != "running":
                continue
            execution_id = row.execution_id
            params = json.loads(row.params_json)
            done = printed.get(row.position, 0)
            if row.pruned_step is not None:
                result = not_run(Outcome.CANCELLED, "stopped")
            elif params["x"] > 8.5:
                result = not_run(Outcome.FAILED, "exit 1")
            elif done < STEPS:
                step = printed[row.position] = done + 1
                value = loss(params, step)
                call(functools.partial(metric, execution_id, step, value))
                continue
            else:
                objective = {"loss": loss(params, STEPS)}
                result = TrialResult(outcome=Outcome.SUCCEEDED, reason="", result=objective)
            call(functools.partial(store.finish_trial, execution_id, result))
    raise AssertionError("the sweep did not finish")


def recorded() -> dict[str, Any]:
    """What the store holds of the sweep that a run's course decides."""
    rows = trials(SWEEP)
    journal = store.SearchLog.select().where(store.SearchLog.sweep == SWEEP)
    return {
        "params": [json.loads(t.params_json) for t in rows],
        "ends": [(t.outcome, t.pruned_step, t.intermediate_json) for t in rows],
        "journal": [plain(json.loads(e.body)) for e in journal.order_by(store.SearchLog.number)],
        "events": [
            (e.kind, e.trial_index)
            for e in store.events_after(SWEEP, 0, 100_000)
            if e.kind not in ("trial_dispatched", "trial_started")
        ],
    }


def consistent() -> list[str]:
    """tests.search_journal's checks of the sweep as the store holds it."""
    sweep = store.Sweep.get_by_id(SWEEP)
    rows = [
        TrialRow(
            t.position,
            t.params_json,
            t.state,
            t.outcome,
            t.result_json,
            t.pruned_step,
            t.pruned_value,
            t.intermediate_json,
        )
        for t in trials(SWEEP)
    ]
    journal = store.SearchLog.select().where(store.SearchLog.sweep == SWEEP)
    logs = [json.loads(e.body) for e in journal.order_by(store.SearchLog.number)]
    pruned = [
        (e.trial_index, json.loads(e.data))
        for e in store.events_after(SWEEP, 0, 100_000)
        if e.kind == "trial_pruned"
    ]
    return check_sweep(SWEEP, sweep.spec, logs, rows, pruned)


def run(sampler: str, die: Callable[[int, int], bool]) -> tuple[dict[str, Any], Deaths]:
    """One sweep from an empty store to its end; what it recorded, and its deaths. A run
    that never dies is checked with tests.search_journal too (one that ends recorded
    alike needs no check of its own)."""
    for model in reversed(store.MODELS):
        model.delete().execute()
    store._searches.clear()
    create(
        SWEEP,
        maxParallel=PARALLEL,
        search={"sampler": sampler, "trials": SWEEPS[sampler][0], "seed": 5},
        earlyStopping=SWEEPS[sampler][1],
    )
    with pytest.MonkeyPatch.context() as patch:
        deaths = Deaths(patch, die)
        drive(deaths)
    if not deaths.died:
        assert consistent() == []
    return recorded(), deaths


def never(tried: int, number: int) -> bool:
    return False


def at(k: int, tried: int, number: int) -> bool:
    return tried == k


ASHA = {"rule": "asha", "minResource": 2, "reductionFactor": 2}
# Each sampler's budget and rule: enough trials that it decides on what it was told,
# TPE past its 10 random startup trials, CMA-ES past its first generation (6 trials that
# succeeded; under a rule that prunes fewer, so that it gets there sooner).
SWEEPS: dict[str, tuple[int, dict[str, Any]]] = {
    "tpe": (14, ASHA),
    "cmaes": (16, {"rule": "percentile", "percentile": 75, "startupTrials": 3}),
    "qmc": (12, ASHA),
    "random": (10, ASHA),
}


@pytest.mark.parametrize("sampler", list(SWEEPS))
def test_a_death_before_every_journal_write_changes_nothing(
    orchestrator_db: Path, sampler: str
) -> None:
    calm, _ = run(sampler, never)
    ends = {outcome for outcome, _, _ in calm["ends"]}
    assert ends == {"pruned", "succeeded", "failed"}, calm["ends"]
    if sampler == "cmaes":  # its second generation came from what the first was told
        generations = [e.get("system_attr", {}).get("cma:generation") for e in calm["journal"]]
        assert 1 in generations
    # One run dying once before each entry of its journal is written: the write fails,
    # is tried again by the process started after, and that one dies at the next entry.
    seen: set[int] = set()

    def first_time(tried: int, number: int) -> bool:
        new = number not in seen
        seen.add(number)
        return new

    crashed, deaths = run(sampler, first_time)
    assert deaths.died == len(calm["journal"])
    assert crashed == calm


def test_one_death_changes_nothing_wherever_it_comes(orchestrator_db: Path) -> None:
    """Runs that each die once, at their k-th journal write (k spread over a run, past
    TPE's startup trials too), then go on: each ends as the run that never died."""
    calm, deaths = run("tpe", never)
    for k in range(1, deaths.tried + 1, deaths.tried // 3):
        crashed, died = run("tpe", functools.partial(at, k))
        assert died.died == 1
        assert crashed == calm, f"died at journal write {k}"


def test_a_pruned_trial_is_not_run_again_when_its_runner_is_gone_at_a_restart(
    tmp_path: Path,
) -> None:
    steady = ScriptedRunner(protocol.hello("runner-2", 4))

    async def main() -> tuple[list[store.Trial], list[str]]:
        server, address = await serve(steady)
        settings = Settings(
            address="127.0.0.1:0",
            data_dir=tmp_path,
            api_token="api",
            runner_token="runner",
            runners=(("runner-2", address),),
            examples=(),
            example_wall_seconds=1.0,
            sync_wait_seconds=1.0,
            reconcile_seconds=1.0,
        )
        db = DbThread(store.db, settings.db_path, store.MODELS, schema_version=store.SCHEMA_VERSION)
        try:
            # Before the restart: runner-1 ran trial 0 to its end and holds trial 1,
            # which the rule pruned; then runner-1 leaves the configuration.
            await db(before_the_restart)
            store._searches.clear()
            dispatcher = Dispatcher(settings, db, SweepNews())
            await dispatcher.start()
            try:
                async with asyncio.timeout(20):
                    while not await db(store.sweep_finished, SWEEP):  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
            finally:
                await dispatcher.close()
            return await db(trials, SWEEP), [
                c.run_trial.trial_id for c in steady.commands if c.HasField("run_trial")
            ]
        finally:
            db.close()
            await server.stop(0)

    rows, sent = asyncio.run(main())
    assert rows[1].outcome == "pruned" and rows[1].pruned_step == 1
    assert not [execution for execution in sent if execution.startswith(f"{SWEEP}/1@")], sent


def before_the_restart() -> None:
    create(
        SWEEP,
        maxParallel=2,
        search={"sampler": "random", "trials": 4, "seed": 2},
        earlyStopping={"rule": "asha", "minResource": 1, "reductionFactor": 2},
    )
    store.ask_trials(2)
    first, second = (start(row, "runner-1") for row in trials(SWEEP))
    for step in range(1, 4):
        metric(first, step, 1.0 / step)
    store.finish_trial(
        first, TrialResult(outcome=Outcome.SUCCEEDED, reason="", result={"loss": 0.3})
    )
    metric(second, 1, 50.0)
    assert trials(SWEEP)[1].pruned_step == 1
