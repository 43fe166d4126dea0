"""Flat cost with sweep size: reads of large sweeps and the orchestrator's work per trial.

    PYTHONPATH=. .venv/bin/python bench/scale.py [--rounds 7] [--only a,b,c]

Prints each figure beside its floor and their ratio, medians of `--rounds` rounds:

(a) the first page (100 trials) of ListTrials on a sweep of 10,000, through the real
    servicer on an in-process gRPC server (target < 20 ms), by index and best first;
    floor: the same page read with a bare SQLite query.
(b) GetSweep (its first 1,000 trials), ListTrials and ListSweeps on a store of 100,000
    trials (ten sweeps of 10,000 and ninety of 0 to 10; target < 50 ms each); floor: the
    bare query of the same trials.
(c) the orchestrator's CPU time per trial, running a sweep of 10,000 trials against one
    of 100 (target at most 1.2 times: the 100-trial figure is the floor). The
    orchestrator (store, dispatcher, runner links) runs in this process and its CPU is
    this process's; the runner is a fake in a child process that answers every trial
    at once (accepted, started, succeeded), so no Docker engine is needed.

Everything runs on throwaway files in a temporary folder and on loopback ports.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import grpc

from orchestrator_svc import store
from orchestrator_svc.config import Settings
from orchestrator_svc.dispatch import Dispatcher
from orchestrator_svc.domain import PlannedTrial
from orchestrator_svc.news import SweepNews
from orchestrator_svc.servicer import OrchestratorServicer
from prism import runner_protocol as protocol
from prism.sqlite import DbThread
from prism.trial import Outcome, TrialResult
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc, runner_pb2, runner_pb2_grpc

TARGET_CPU_RATIO = 1.2
SCRIPT = "import json, os\nprint(json.dumps({'loss': len(os.environ['PRISM_PARAMS'])}))"


def settings(folder: Path, runners: tuple[tuple[str, str], ...] = ()) -> Settings:
    return Settings(
        address="127.0.0.1:0",
        data_dir=folder,
        api_token=None,
        runner_token="bench",
        runners=runners,
        examples=(),
        example_wall_seconds=1.0,
        sync_wait_seconds=1.0,
        reconcile_seconds=1.0,
    )


def planned(trials: int) -> list[PlannedTrial]:
    return [PlannedTrial(f"trial-{i}", SCRIPT, {"x": i % 97, "y": i % 13}) for i in range(trials)]


def fill(sweep_id: str, trials: int, *, finished_every: int = 2) -> None:
    """A sweep of `trials`, every `finished_every`-th one succeeded with a loss."""
    spec = {"task": "bench", "objective": {"metric": "loss", "goal": "minimize"}}
    store.create_sweep(sweep_id, "bench", spec, planned(trials))
    done = list(range(0, trials, finished_every))
    with store.db.atomic():
        for start in range(0, len(done), 500):
            ids = [f"{sweep_id}/{i}" for i in done[start : start + 500]]
            store.Trial.update(
                state="finished", outcome="succeeded", attempts=1, finished_at=time.time()
            ).where(store.Trial.id.in_(ids)).execute()
        for i in done:
            store.Trial.update(
                result_json=f'{{"loss": {(i * 7919) % 1000 / 10}}}',
                objective_rank=(i * 7919) % 1000 / 10,
            ).where(store.Trial.id == f"{sweep_id}/{i}").execute()


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def amedian_ms(fn: Callable[[], Awaitable[object]], rounds: int) -> float:
    await fn()  # warm: the first call opens the channel
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def line(what: str, ms: float, floor_ms: float, target: str) -> None:
    print(f"{what}: {ms:.2f} ms; floor {floor_ms:.2f} ms; {ms / floor_ms:.1f}x; target {target}")


def bare_page(path: Path, sweep_id: str, order: str) -> Callable[[], object]:
    """The same page with a bare SQLite query: the floor."""
    by = "objective_rank IS NULL, objective_rank, position" if order == "objective" else "position"
    sql = f"SELECT * FROM trial WHERE sweep_id = ? ORDER BY {by} LIMIT 101"
    connection = sqlite3.connect(path)
    return lambda: connection.execute(sql, (sweep_id,)).fetchall()


async def with_servicer(
    folder: Path, scenario: Callable[[orchestrator_pb2_grpc.OrchestratorStub], Awaitable[None]]
) -> None:
    config = settings(folder)
    db = DbThread(store.db, config.db_path, store.MODELS, schema_version=store.SCHEMA_VERSION)
    news = SweepNews()
    servicer = OrchestratorServicer(config, db, news, Dispatcher(config, db, news))
    servicer.ready = True
    server = grpc.aio.server()
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await scenario(orchestrator_pb2_grpc.OrchestratorStub(channel))
    finally:
        await server.stop(0)
        db.close()
        store.db.init(None)


def populate(folder: Path, sweeps: list[tuple[str, int]]) -> Path:
    config = settings(folder)
    DbThread(store.db, config.db_path, store.MODELS, schema_version=store.SCHEMA_VERSION).close()
    store.db.init(str(config.db_path))
    store.db.connect()
    try:
        for sweep_id, trials in sweeps:
            fill(sweep_id, trials)
    finally:
        store.db.close()
        store.db.init(None)
    return config.db_path


def bench_page(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = populate(folder, [("big", 10_000)])

        async def scenario(stub: orchestrator_pb2_grpc.OrchestratorStub) -> None:
            for order in ("index", "objective"):
                request = orchestrator_pb2.ListTrialsRequest(sweep_id="big", order_by=order)
                ms = await amedian_ms(functools.partial(stub.ListTrials, request), rounds)
                floor = median_ms(bare_page(path, "big", order), rounds)
                line(f"(a) ListTrials first page of 10,000 by {order}", ms, floor, "< 20 ms")

        asyncio.run(with_servicer(folder, scenario))


def bench_store(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sweeps = [(f"big-{i}", 10_000) for i in range(10)]
        sweeps += [(f"small-{i}", i % 11) for i in range(90)]
        start = time.perf_counter()
        path = populate(folder, sweeps)
        with closing(sqlite3.connect(path)) as raw:
            total = raw.execute("SELECT COUNT(*) FROM trial").fetchone()[0]
        made = time.perf_counter() - start
        print(f"(b) store: {total:,} trials in {len(sweeps)} sweeps ({made:.1f} s to make)")

        async def scenario(stub: orchestrator_pb2_grpc.OrchestratorStub) -> None:
            floor = median_ms(bare_page(path, "big-4", "index"), rounds)
            get = orchestrator_pb2.GetSweepRequest(sweep_id="big-4")
            ms = await amedian_ms(lambda: stub.GetSweep(get), rounds)
            bare_1000 = sqlite3.connect(path)
            sql = "SELECT * FROM trial WHERE sweep_id = ? ORDER BY position LIMIT 1000"
            floor_1000 = median_ms(lambda: bare_1000.execute(sql, ("big-4",)).fetchall(), rounds)
            line("(b) GetSweep of 10,000 (first 1,000 trials)", ms, floor_1000, "< 50 ms")
            for order in ("index", "objective"):
                listed = orchestrator_pb2.ListTrialsRequest(sweep_id="big-7", order_by=order)
                ms = await amedian_ms(functools.partial(stub.ListTrials, listed), rounds)
                line(f"(b) ListTrials first page by {order}", ms, floor, "< 50 ms")
            page = await stub.ListTrials(
                orchestrator_pb2.ListTrialsRequest(sweep_id="big-7", page_size=100)
            )
            for _ in range(40):  # well into the sweep
                page = await stub.ListTrials(
                    orchestrator_pb2.ListTrialsRequest(
                        sweep_id="big-7", page_size=100, page_token=page.next_page_token
                    )
                )
            deep = orchestrator_pb2.ListTrialsRequest(
                sweep_id="big-7", page_token=page.next_page_token, page_size=100
            )
            ms = await amedian_ms(lambda: stub.ListTrials(deep), rounds)
            line("(b) ListTrials page 42", ms, floor, "< 50 ms")
            sweeps_page = orchestrator_pb2.ListSweepsRequest(page_size=100)
            ms = await amedian_ms(lambda: stub.ListSweeps(sweeps_page), rounds)
            bare = sqlite3.connect(path)
            counts = (
                "SELECT sweep_id, state, outcome, COUNT(*) FROM trial WHERE sweep_id IN "
                "(SELECT id FROM sweep ORDER BY created_at DESC LIMIT 100) "
                "GROUP BY sweep_id, state, outcome"
            )
            floor_counts = median_ms(lambda: bare.execute(counts).fetchall(), rounds)
            line("(b) ListSweeps, 100 sweeps with their counts", ms, floor_counts, "< 50 ms")

        asyncio.run(with_servicer(folder, scenario))


class InstantRunner(runner_pb2_grpc.RunnerServicer):
    """A runner whose every trial succeeds at once."""

    async def Connect(
        self, request_iterator: AsyncIterator[runner_pb2.RunnerCommand], context: Any
    ) -> AsyncIterator[runner_pb2.RunnerEvent]:
        yield protocol.hello("runner-1", 8)
        result = TrialResult(outcome=Outcome.SUCCEEDED, reason="exit code 0", exit_code=0)
        async for command in request_iterator:
            if command.HasField("run_trial"):
                execution_id = command.run_trial.trial_id
                yield protocol.accepted(execution_id, protocol.Previous.NONE)
                yield protocol.started(execution_id)
                yield protocol.finished(execution_id, result)
            elif command.HasField("cancel_trial"):
                execution_id = command.cancel_trial.trial_id
                yield protocol.accepted(execution_id, protocol.Previous.NONE)
                yield protocol.finished(execution_id, result)


def run_runner(port: int) -> None:
    async def main() -> None:
        server = grpc.aio.server()
        runner_pb2_grpc.add_RunnerServicer_to_server(InstantRunner(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def cpu_per_trial(folder: Path, address: str, trials: int) -> float:
    """The orchestrator's CPU seconds per trial for one sweep of `trials`, create to done."""
    config = settings(folder, (("runner-1", address),))

    async def main() -> float:
        db = DbThread(store.db, config.db_path, store.MODELS, schema_version=store.SCHEMA_VERSION)
        dispatcher = Dispatcher(config, db, SweepNews())
        await dispatcher.start()
        try:
            start = time.process_time()
            spec = {"task": "bench", "objective": {"metric": "loss"}, "script": SCRIPT}
            sweep_id = await db(store.create_sweep, f"s{trials}", "bench", spec, planned(trials))
            dispatcher.kick()
            while not await db(store.sweep_finished, sweep_id):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            return (time.process_time() - start) / trials
        finally:
            await dispatcher.close()
            db.close()
            store.db.init(None)

    return asyncio.run(main())


def bench_cpu(rounds: int) -> None:
    with closing(__import__("socket").socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = multiprocessing.get_context("spawn").Process(target=run_runner, args=(port,))
    runner.start()
    try:
        time.sleep(1.0)
        figures: dict[int, list[float]] = {100: [], 10_000: []}
        for _ in range(max(1, rounds // 3)):
            for trials in figures:
                with tempfile.TemporaryDirectory() as tmp:
                    figures[trials].append(cpu_per_trial(Path(tmp), f"127.0.0.1:{port}", trials))
        small, large = (statistics.median(figures[n]) * 1000 for n in (100, 10_000))
        print(
            f"(c) orchestrator CPU per trial at 10,000 trials: {large:.2f} ms; floor (at 100) "
            f"{small:.2f} ms; {large / small:.2f}x; target <= {TARGET_CPU_RATIO}x"
        )
    finally:
        runner.terminate()
        runner.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", default="a,b,c", help="which figures: a, b, c")
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    if "a" in chosen:
        bench_page(args.rounds)
    if "b" in chosen:
        bench_store(args.rounds)
    if "c" in chosen:
        bench_cpu(args.rounds)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
