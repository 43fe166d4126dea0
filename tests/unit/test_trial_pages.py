"""A sweep's trials a page at a time (ListTrials) and GetSweep's first 1,000, through
the real servicer on an in-process gRPC server and a throwaway store: every trial
exactly once across pages while trials finish between them, the filters, best first
for either goal, each bad field named, and schema 4's files ranked by the migration."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from orchestrator_svc import domain, store, sweeps
from orchestrator_svc.dispatch import Dispatcher
from orchestrator_svc.news import SweepNews
from orchestrator_svc.servicer import OrchestratorServicer
from prism.sqlite import DbThread
from prism.trial import Outcome, TrialResult
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.unit.test_spec import SETTINGS

T = TypeVar("T")
Stub = orchestrator_pb2_grpc.OrchestratorStub


def serve(
    path: Path, scenario: Callable[[Stub, DbThread], Awaitable[T]], *, migrate: bool = False
) -> T:
    """Run `scenario` against the orchestrator's servicer on port 0, its store at `path`."""

    async def main() -> T:
        db = DbThread(
            store.db,
            path,
            store.MODELS,
            schema_version=store.SCHEMA_VERSION,
            migrate=store.migrate if migrate else None,
        )
        news = SweepNews()
        servicer = OrchestratorServicer(SETTINGS, db, news, Dispatcher(SETTINGS, db, news))
        servicer.ready = True
        server = grpc.aio.server()
        orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await scenario(Stub(channel), db)
        finally:
            await server.stop(0)
            db.close()
            store.db.init(None)

    return asyncio.run(main())


def create(sweep_id: str, trials: int, **spec: Any) -> None:
    planned = [domain.PlannedTrial(f"trial-{i}", "print(1)", {"i": i}) for i in range(trials)]
    store.create_sweep(sweep_id, "task", {"task": "task", **spec}, planned)


def finish(sweep_id: str, index: int, outcome: Outcome, result: dict[str, Any] | None) -> None:
    """Dispatch, start and end one trial, as a runner's reports would."""
    assigned = store.assign(f"{sweep_id}/{index}", "r1")
    assert assigned is not None
    store.mark_started(assigned.execution_id)
    ended = TrialResult(outcome=outcome, reason=outcome.value, result=result)
    store.finish_trial(assigned.execution_id, ended)


async def pages(stub: Stub, **request: Any) -> list[orchestrator_pb2.ListTrialsResponse]:
    found, token = [], ""
    while True:
        page = await stub.ListTrials(
            orchestrator_pb2.ListTrialsRequest(page_token=token, **request)
        )
        found.append(page)
        token = page.next_page_token
        if not token:
            return found


def indices(found: list[orchestrator_pb2.ListTrialsResponse]) -> list[int]:
    return [t.index for page in found for t in page.trials]


def violation(error: grpc.aio.AioRpcError) -> str:
    """The one field an INVALID_ARGUMENT names."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    [detail] = [v for k, v in error.trailing_metadata() or () if k == "grpc-status-details-bin"]
    status = status_pb2.Status.FromString(detail)
    request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(request)
    [field] = [v.field for v in request.field_violations]
    return field


def test_pages_by_index_show_every_trial_once_while_trials_finish(tmp_path: Path) -> None:
    async def scenario(stub: Stub, db: DbThread) -> list[int]:
        await db(create, "s", 250)
        seen, token, rounds = [], "", 0
        while True:
            page = await stub.ListTrials(
                orchestrator_pb2.ListTrialsRequest(sweep_id="s", page_size=40, page_token=token)
            )
            assert page.total_size == 250
            assert not any(t.HasField("metrics") for t in page.trials if t.state != "finished")
            seen += [t.index for t in page.trials]
            token = page.next_page_token
            if not token:
                return seen
            # Between pages, trials behind and ahead of the page end, some succeed.
            rounds += 1
            for index in (rounds * 7, 249 - rounds * 11, seen[-1], seen[-1] + 1):
                await db(finish, "s", index, Outcome.SUCCEEDED, {"loss": index})

    assert serve(tmp_path / "o.db", scenario) == list(range(250))


def test_pages_of_pending_trials_skip_none_while_those_behind_finish(tmp_path: Path) -> None:
    """Keyset, not offset: trials that leave the filter behind the page do not shift the
    ones ahead of it out of sight (an offset would skip as many as left)."""

    async def scenario(stub: Stub, db: DbThread) -> tuple[list[int], set[int]]:
        await db(create, "s", 100)
        seen, token = [], ""
        ended: set[int] = set()
        while True:
            page = await stub.ListTrials(
                orchestrator_pb2.ListTrialsRequest(
                    sweep_id="s", state="pending", page_size=10, page_token=token
                )
            )
            seen += [t.index for t in page.trials]
            token = page.next_page_token
            if not token:
                return seen, ended
            for index in seen[-5:]:
                await db(finish, "s", index, Outcome.SUCCEEDED, None)
                ended.add(index)

    seen, ended = serve(tmp_path / "o.db", scenario)
    assert seen == list(range(100)) and len(ended) == 45


def test_filters_by_state_and_outcome_with_their_total(tmp_path: Path) -> None:
    async def scenario(stub: Stub, db: DbThread) -> dict[str, tuple[list[int], int]]:
        await db(create, "s", 30)
        await db(create, "other", 5)
        for index in range(0, 30, 3):
            await db(finish, "s", index, Outcome.SUCCEEDED, {"loss": 1})
        for index in range(1, 30, 6):
            await db(finish, "s", index, Outcome.FAILED, None)
        await db(store.assign, "s/2", "r1")
        pruned = store.Trial.update(state="finished", outcome="pruned")
        await db(pruned.where(store.Trial.id == "s/5").execute)
        found = {}
        for name, request in {
            "finished": {"state": "finished"},
            "dispatched": {"state": "dispatched"},
            "pending": {"state": "pending"},
            "succeeded": {"outcome": "succeeded"},
            "failed": {"outcome": "failed"},
            "pruned": {"outcome": "pruned"},
            "failed-finished": {"state": "finished", "outcome": "failed"},
            "failed-pending": {"state": "pending", "outcome": "failed"},
        }.items():
            got = await pages(stub, sweep_id="s", page_size=4, **request)
            found[name] = indices(got), got[0].total_size
        return found

    found = serve(tmp_path / "o.db", scenario)
    succeeded, failed = list(range(0, 30, 3)), list(range(1, 30, 6))
    finished = sorted([*succeeded, *failed, 5])
    assert found["finished"] == (finished, len(finished))
    assert found["dispatched"] == ([2], 1)
    pending = [i for i in range(30) if i not in finished and i != 2]
    assert found["pending"] == (pending, len(pending))
    assert found["succeeded"] == (succeeded, len(succeeded))
    assert found["failed"] == found["failed-finished"] == (failed, len(failed))
    assert found["pruned"] == ([5], 1)
    assert found["failed-pending"] == ([], 0)


@pytest.mark.parametrize("goal", ["minimize", "maximize"])
def test_best_first_by_the_goal_ties_by_index_the_rest_last(tmp_path: Path, goal: str) -> None:
    losses = {0: 3.0, 1: 1.0, 2: 2.0, 4: 1.0, 5: -1.5, 7: 2.0, 8: 10.0, 9: 1.0}
    failed, without_metric = (3, 10), (6, 11)

    async def scenario(stub: Stub, db: DbThread) -> tuple[list[int], orchestrator_pb2.Sweep]:
        await db(create, "s", 14, objective={"metric": "loss", "goal": goal})
        for index, loss in losses.items():
            await db(finish, "s", index, Outcome.SUCCEEDED, {"loss": loss})
        for index in failed:
            await db(finish, "s", index, Outcome.FAILED, {"loss": -100})
        for index in without_metric:
            await db(finish, "s", index, Outcome.SUCCEEDED, {"other": 1})
        got = await pages(stub, sweep_id="s", page_size=3, order_by="objective")
        assert {page.total_size for page in got} == {14}
        whole = await stub.GetSweep(orchestrator_pb2.GetSweepRequest(sweep_id="s"))
        return indices(got), whole

    order, whole = serve(tmp_path / "o.db", scenario)
    sign = -1 if goal == "maximize" else 1
    ranked = sorted(losses, key=lambda i: (sign * losses[i], i))
    assert order == ranked + [i for i in range(14) if i not in losses]
    # The sweep's best and history say the same, from the same column.
    assert whole.best_trial.index == ranked[0]
    assert sorted(p.trial_index for p in whole.history) == sorted(losses)
    assert whole.history[-1].best_value == losses[ranked[0]]


def test_get_sweep_carries_the_first_1000_and_list_trials_the_rest(tmp_path: Path) -> None:
    async def scenario(stub: Stub, db: DbThread) -> tuple[orchestrator_pb2.Sweep, list[int]]:
        await db(create, "s", 1200, objective={"metric": "loss"})
        await db(finish, "s", 1100, Outcome.SUCCEEDED, {"loss": 0.5})
        await db(finish, "s", 3, Outcome.SUCCEEDED, {"loss": 0.7})
        sweep = await stub.GetSweep(orchestrator_pb2.GetSweepRequest(sweep_id="s"))
        rest = await stub.ListTrials(
            orchestrator_pb2.ListTrialsRequest(
                sweep_id="s", page_size=1000, page_token=sweep.next_trials_page_token
            )
        )
        assert not rest.next_page_token
        return sweep, [t.index for t in rest.trials]

    sweep, rest = serve(tmp_path / "o.db", scenario)
    assert [t.index for t in sweep.trials] == list(range(1000))
    assert sweep.next_trials_page_token
    assert rest == list(range(1000, 1200))
    assert (sweep.counts.total, sweep.counts.finished, sweep.counts.succeeded) == (1200, 2, 2)
    assert sweep.best_trial.index == 1100
    assert [p.trial_index for p in sweep.history] == [1100, 3]


def test_a_small_sweep_has_no_next_trials_page(tmp_path: Path) -> None:
    async def scenario(stub: Stub, db: DbThread) -> orchestrator_pb2.Sweep:
        await db(create, "s", 1000)
        return await stub.GetSweep(orchestrator_pb2.GetSweepRequest(sweep_id="s"))

    sweep = serve(tmp_path / "o.db", scenario)
    assert len(sweep.trials) == 1000 and not sweep.next_trials_page_token


@pytest.mark.parametrize("trials", [1, 3, 1000, 1001, 4000, 10_000])
def test_the_compatible_routes_outputs_stay_within_the_gateways_buffer(trials: int) -> None:
    share = store.output_share(trials, sweeps.OUTPUT_BUDGET_CHARS)
    assert share >= min(store.OUTPUT_SHARE_CHARS, sweeps.OUTPUT_BUDGET_CHARS // trials)
    # Each character 6 bytes as JSON at most, and one more each to show a cut.
    assert (share + 1) * trials * 6 < 32 * 2**20


def token(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"page_size": -1}, "pageSize"),
        ({"page_size": 1001}, "pageSize"),
        ({"page_token": "x"}, "pageToken"),
        ({"page_token": "!!!"}, "pageToken"),
        ({"page_token": token("s", "", "", "index", None, "3")}, "pageToken"),
        ({"page_token": token("s", "", "", "index", None)}, "pageToken"),
        ({"page_token": token("s", "", "", "index", True, 3)}, "pageToken"),
        # A token of another sweep's list, or of this one's with another filter or order.
        ({"page_token": token("other", "", "", "index", None, 3)}, "pageToken"),
        ({"page_token": token("s", "finished", "", "index", None, 3)}, "pageToken"),
        ({"page_token": token("s", "", "", "objective", None, 3)}, "pageToken"),
        ({"state": "done"}, "state"),
        ({"state": "Pending"}, "state"),
        ({"outcome": "success"}, "outcome"),
        ({"order_by": "loss"}, "orderBy"),
        ({"order_by": "index desc"}, "orderBy"),
        # A sweep without an objective has nothing to rank by.
        ({"order_by": "objective"}, "orderBy"),
    ],
)
def test_each_bad_field_is_invalid_argument_naming_it(
    tmp_path: Path, request_fields: dict[str, Any], field: str
) -> None:
    async def scenario(stub: Stub, db: DbThread) -> str:
        await db(create, "s", 3)
        request = orchestrator_pb2.ListTrialsRequest(sweep_id="s", **request_fields)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.ListTrials(request)
        return violation(failure.value)

    assert serve(tmp_path / "o.db", scenario) == field


def test_the_limits_themselves_are_taken_and_an_unknown_sweep_is_not_found(tmp_path: Path) -> None:
    async def scenario(stub: Stub, db: DbThread) -> list[int]:
        await db(create, "s", 1001)
        sizes = []
        for size in (0, 1, 1000):
            page = await stub.ListTrials(
                orchestrator_pb2.ListTrialsRequest(sweep_id="s", page_size=size)
            )
            sizes.append(len(page.trials))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.ListTrials(orchestrator_pb2.ListTrialsRequest(sweep_id="nope"))
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        return sizes

    assert serve(tmp_path / "o.db", scenario) == [100, 1, 1000]


def test_a_schema_4_file_gets_its_finished_trials_ranked(tmp_path: Path) -> None:
    path = tmp_path / "o.db"

    async def before(stub: Stub, db: DbThread) -> None:
        await db(create, "min", 4, objective={"metric": "loss"})
        await db(create, "max", 3, objective={"metric": "loss", "goal": "maximize"})
        await db(create, "none", 1)
        for sweep_id, index, loss in [("min", 0, 5), ("min", 1, 2), ("max", 0, 5), ("max", 2, 9)]:
            await db(finish, sweep_id, index, Outcome.SUCCEEDED, {"loss": loss})
        await db(finish, "min", 2, Outcome.SUCCEEDED, {"loss": "2"})
        await db(finish, "none", 0, Outcome.SUCCEEDED, {"loss": 1})

    serve(path, before)
    # The file as schema 4 left it: no rank column, nor its index.
    with closing(sqlite3.connect(path)) as raw:
        raw.execute("DROP INDEX trial_sweep_id_objective_rank_position")
        raw.execute('ALTER TABLE "trial" DROP COLUMN "objective_rank"')
        raw.execute("PRAGMA user_version = 4")
        raw.commit()

    async def after(stub: Stub, db: DbThread) -> dict[str, list[int]]:
        found = {}
        for sweep_id in ("min", "max"):
            got = await pages(stub, sweep_id=sweep_id, order_by="objective")
            found[sweep_id] = indices(got)
        return found

    assert serve(path, after, migrate=True) == {"min": [1, 0, 2, 3], "max": [2, 0, 1]}
    with closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        ranks = raw.execute("SELECT id, objective_rank FROM trial ORDER BY id").fetchall()
    assert ranks == [
        ("max/0", -5.0),
        ("max/1", None),
        ("max/2", -9.0),
        ("min/0", 5.0),
        ("min/1", 2.0),
        ("min/2", None),
        ("min/3", None),
        ("none/0", None),
    ]
