"""The orchestrator's recovery time: restarted (SIGKILL, then started) holding 50
unfinished sweeps with 500 running trials, how long until it reports SERVING, beside
the same orchestrator restarted on an empty database in the same run; and whether
anything was lost.

    .venv/bin/python bench/recovery.py [--rounds 5] [--sweeps 50] [--trials 10] [--runners 5]

Prints the median time to SERVING of each, their ratio, and the target (at most 3 s).

The orchestrator is the real process (`python -m orchestrator_svc`) on a free loopback
port, in a temporary folder. Its database is written beforehand through the store's
own functions, as a run leaves it: every sweep's trials created, dispatched to a
runner and started. The runners are this script: gRPC servers on free loopback ports
speaking the runner protocol (prism.runner_protocol), with the runner token, each
holding its share of the 500 executions as running and answering each one re-sent as
a real runner does (TrialAccepted, previous RUNNING). No Docker, no sandbox: what is
measured is the orchestrator's own recovery, which waits for every runner holding
trials to answer for them before it serves.

Checked after every restart: every trial still running, on the same runner, as the
same execution (none queued again, none run twice), each sweep still running, and
every execution re-sent exactly once on its runner's new stream.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator_svc import domain, store
from prism import runner_protocol as protocol
from prism.server import listen, new_server
from prism.sqlite import PRAGMAS, DbThread
from prism.stack import free_ports
from prism.v1 import runner_pb2, runner_pb2_grpc

TARGET_SECONDS = 3.0
SCRIPT = "import time\ntime.sleep(3600)\n"
API_TOKEN, RUNNER_TOKEN = uuid.uuid4().hex, uuid.uuid4().hex


class HeldRunner(runner_pb2_grpc.RunnerServicer):
    """A runner holding `running` executions: it says hello, accepts each one re-sent
    as running (any other as new), and counts what each stream was sent."""

    def __init__(self, name: str, running: set[str]) -> None:
        self.name = name
        self.running = running
        # Per stream, in order: execution id -> times sent a RunTrial on it.
        self.streams: list[collections.Counter[str]] = []

    async def Connect(
        self,
        request_iterator: AsyncIterator[runner_pb2.RunnerCommand],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[runner_pb2.RunnerEvent]:
        sent: collections.Counter[str] = collections.Counter()
        self.streams.append(sent)
        events: asyncio.Queue[runner_pb2.RunnerEvent] = asyncio.Queue()
        await events.put(protocol.hello(self.name, protocol.MAX_SLOTS))

        async def read() -> None:
            async for command in request_iterator:
                if command.WhichOneof("command") == "run_trial":
                    execution_id = command.run_trial.trial_id
                    sent[execution_id] += 1
                    previous = protocol.Previous.RUNNING
                    if execution_id not in self.running:
                        previous = protocol.Previous.NONE
                    await events.put(protocol.accepted(execution_id, previous))

        reader = asyncio.create_task(read())
        try:
            while True:
                try:
                    async with asyncio.timeout(2.0):
                        yield await events.get()
                except TimeoutError:
                    yield protocol.HEARTBEAT
        finally:
            reader.cancel()


def write_state(path: Path, sweeps: int, trials: int, runners: list[str]) -> dict[str, set[str]]:
    """The database of an orchestrator killed mid-run: `sweeps` sweeps of `trials`
    trials, each started on one of `runners` in turn. The executions each runner holds."""
    DbThread(store.db, path, store.MODELS, schema_version=store.SCHEMA_VERSION).close()
    # Bench data: no need to wait for the disk on each of a thousand commits.
    store.db.init(str(path), pragmas={**PRAGMAS, "synchronous": "off"})
    store.db.connect()
    held: dict[str, set[str]] = {name: set() for name in runners}
    try:
        planned = [domain.PlannedTrial(f"trial-{i}", SCRIPT, {"i": i}) for i in range(trials)]
        n = 0
        for _ in range(sweeps):
            sweep_id = store.create_sweep(str(uuid.uuid4()), "recovery", {"task": "x"}, planned)
            for index in range(trials):
                runner = runners[n % len(runners)]
                n += 1
                trial = store.assign(f"{sweep_id}/{index}", runner)
                assert trial is not None
                store.mark_started(trial.execution_id)
                held[runner].add(trial.execution_id)
    finally:
        store.db.close()
        store.db.init(None)
    return held


def trials_as_recorded(path: Path) -> dict[str, tuple[str, str | None, int]]:
    """trial id -> (state, runner, attempts), read from the file."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT id, state, runner, attempts FROM trial").fetchall()
    return {trial_id: (state, runner, attempts) for trial_id, state, runner, attempts in rows}


def unfinished_sweeps(path: Path) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COUNT(*) FROM sweep WHERE finished_at IS NULL").fetchone()[0])


async def is_serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=0.5
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class Orchestrator:
    """The real orchestrator process, started and killed by pid."""

    def __init__(self, data_dir: Path, runners: dict[str, str]) -> None:
        self.address = f"127.0.0.1:{free_ports(1)[0]}"
        self.log = data_dir / "orchestrator.log"
        self.env = {
            **os.environ,
            "PRISM_DATA_DIR": str(data_dir),
            "PRISM_ORCHESTRATOR_ADDR": self.address,
            "PRISM_API_TOKEN": API_TOKEN,
            "PRISM_RUNNER_TOKEN": RUNNER_TOKEN,
            "PRISM_RUNNERS": ",".join(f"{n}={a}" for n, a in runners.items()),
            "PRISM_METRICS_ADDR": "",
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: asyncio.subprocess.Process | None = None
        self._log = open(self.log, "ab")  # closed by close()

    async def start(self) -> float:
        """Start it; the seconds until it reports SERVING."""
        started = time.perf_counter()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestrator_svc", env=self.env,
            stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )  # fmt: skip
        while not await is_serving(self.address):
            if self.proc.returncode is not None:
                raise RuntimeError(f"the orchestrator exited; see {self.log}")
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"the orchestrator is not serving after 60 s; see {self.log}")
            await asyncio.sleep(0.005)
        return time.perf_counter() - started

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self._log.close()


async def restarts(
    data_dir: Path, rounds: int, held: dict[str, set[str]]
) -> tuple[list[float], list[str]]:
    """Start the orchestrator once, then kill and start it `rounds` times: the seconds
    to SERVING of each restart, and what was found lost or doubled, if anything."""
    doubles = {name: HeldRunner(name, executions) for name, executions in held.items()}
    servers, addresses = [], {}
    for name, double in doubles.items():
        server, _ = new_server(token=RUNNER_TOKEN, what="runner token", services=[])
        runner_pb2_grpc.add_RunnerServicer_to_server(double, server)
        addresses[name] = f"127.0.0.1:{listen(server, '127.0.0.1:0')}"
        await server.start()
        servers.append(server)
    orchestrator = Orchestrator(data_dir, addresses)
    db_path = data_dir / "orchestrator.db"
    before = trials_as_recorded(db_path) if db_path.exists() else {}
    sweeps = unfinished_sweeps(db_path) if db_path.exists() else 0
    times, faults = [], []
    try:
        await orchestrator.start()
        for _ in range(rounds):
            await orchestrator.kill()
            times.append(await orchestrator.start())
            faults += lost(db_path, before, sweeps, doubles)
    finally:
        await orchestrator.kill()
        orchestrator.close()
        for server in servers:
            await server.stop(None)
    return times, faults


def lost(
    db_path: Path, before: dict[str, tuple[str, str | None, int]], sweeps: int,
    doubles: dict[str, HeldRunner],
) -> list[str]:  # fmt: skip
    """What differs from before the restart: trials or sweeps changed, executions not
    re-sent on the runner's new stream, or re-sent more than once."""
    faults = []
    after = trials_as_recorded(db_path)
    if after != before:
        changed = [t for t in before if after.get(t) != before[t]]
        faults.append(f"{len(changed)} trials changed, e.g. {changed[:3]}")
    if unfinished_sweeps(db_path) != sweeps:
        faults.append(f"{sweeps - unfinished_sweeps(db_path)} sweeps finished or lost")
    for double in doubles.values():
        sent = double.streams[-1] if double.streams else collections.Counter()
        if set(sent) != double.running:
            faults.append(
                f"{double.name}: {len(double.running - set(sent))} executions not re-sent"
            )
        if any(n != 1 for n in sent.values()):
            faults.append(f"{double.name}: executions re-sent more than once on one stream")
    return faults


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sweeps", type=int, default=50)
    parser.add_argument("--trials", type=int, default=10, help="running trials per sweep")
    parser.add_argument("--runners", type=int, default=5)
    args = parser.parse_args()
    names = [f"held{i}" for i in range(1, args.runners + 1)]
    with tempfile.TemporaryDirectory() as full_dir, tempfile.TemporaryDirectory() as empty_dir:
        held = write_state(Path(full_dir) / "orchestrator.db", args.sweeps, args.trials, names)
        empty, _ = await restarts(Path(empty_dir), args.rounds, {name: set() for name in names})
        full, faults = await restarts(Path(full_dir), args.rounds, held)
    running = sum(len(executions) for executions in held.values())
    e, f = statistics.median(empty), statistics.median(full)
    print(f"rounds: {args.rounds}; runners: {args.runners}")
    print(f"restart, empty database:   median {e:.3f} s to SERVING (max {max(empty):.3f})")
    print(
        f"restart, {args.sweeps} sweeps, {running} running trials: "
        f"median {f:.3f} s to SERVING (max {max(full):.3f})"
    )
    print(f"ratio held/empty: {f / e:.2f}; target: at most {TARGET_SECONDS:g} s ({f:.2f} s)")
    print("lost or doubled: " + ("nothing" if not faults else "; ".join(sorted(set(faults)))))
    if faults:
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
