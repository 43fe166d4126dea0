"""Runners found by DNS (PRISM_RUNNERS_DNS), in-process: a real Dispatcher on a throwaway
store, real gRPC streams to scripted runners on loopback addresses that share one port (as
a Swarm service's tasks do), and the name's answer played by the test."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from orchestrator_svc import discovery, domain, store
from orchestrator_svc import link as link_module
from orchestrator_svc.config import ConfigError, Settings, parse_discovery
from orchestrator_svc.dispatch import Dispatcher
from orchestrator_svc.news import SweepNews
from prism import runner_protocol as protocol
from prism.sqlite import DbThread
from prism.v1 import runner_pb2_grpc
from tests.unit.test_link import ScriptedRunner

HOSTS = [f"127.0.0.{i}" for i in range(2, 7)]


def test_the_name_and_port_are_checked() -> None:
    assert parse_discovery("tasks.runner:50061") == ("tasks.runner", 50061)
    assert parse_discovery("[::1]:7") == ("::1", 7)
    for wrong in ("tasks.runner", "tasks.runner:", ":50061", "h:0", "h:70000", "h:x"):
        with pytest.raises(ConfigError, match="PRISM_RUNNERS_DNS"):
            parse_discovery(wrong)


def test_both_ways_of_naming_runners_at_once_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISM_RUNNERS", "runner-1=127.0.0.1:1")
    monkeypatch.setenv("PRISM_RUNNERS_DNS", "tasks.runner:50061")
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env()
    monkeypatch.delenv("PRISM_RUNNERS")
    settings = Settings.from_env()
    assert settings.runners == () and settings.discover == ("tasks.runner", 50061)


def test_resolve_gives_grpc_addresses_and_tells_no_name_from_no_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers: dict[str, object] = {}

    async def getaddrinfo(host: str, port: int, **_: object) -> object:
        answer = answers[host]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def main() -> None:
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
        stream = (socket.AF_INET, socket.SOCK_STREAM, 6, "")
        answers["two"] = [(*stream, ("10.0.0.2", 7)), (*stream, ("10.0.0.3", 7))]
        answers["six"] = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::2", 7, 0, 0))]
        answers["gone"] = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers["down"] = socket.gaierror(socket.EAI_AGAIN, "Temporary failure")
        assert await discovery.resolve("two", 7) == {"10.0.0.2:7", "10.0.0.3:7"}
        assert await discovery.resolve("six", 7) == {"[fd00::2]:7"}
        assert await discovery.resolve("gone", 7) == set()  # scaled to nothing
        assert await discovery.resolve("down", 7) is None  # unknown: keep the runners

    asyncio.run(main())


class Cluster:
    """Scripted runners on 127.0.0.x, one port for all, and what the name resolves to."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.servers: dict[str, grpc.aio.Server] = {}
        self.runners: dict[str, ScriptedRunner] = {}
        self.resolves: set[str] = set()

    async def start(self, host: str, name: str) -> str:
        runner = ScriptedRunner(protocol.hello(name, 2))
        server = grpc.aio.server()
        runner_pb2_grpc.add_RunnerServicer_to_server(runner, server)
        address = f"{host}:{self.port}"
        server.add_insecure_port(address)
        await server.start()
        self.servers[address], self.runners[address] = server, runner
        self.resolves.add(address)
        return address

    async def stop(self, address: str) -> None:
        await self.servers.pop(address).stop(0)

    async def resolve(self, host: str, port: int) -> set[str]:
        return set(self.resolves)


def free_port() -> int:
    """A port free on every address the test uses."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((HOSTS[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for host in HOSTS:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every test address")


def run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scenario: Callable[[Dispatcher, Cluster, DbThread], Awaitable[None]],
) -> None:
    cluster = Cluster(free_port())
    monkeypatch.setattr(discovery, "resolve", cluster.resolve)
    settings = Settings(
        address="127.0.0.1:0",
        data_dir=tmp_path,
        api_token=None,
        runner_token="t",
        runners=(),
        discover=("runners.test", cluster.port),
        discovery_seconds=0.05,
        examples=(),
        example_wall_seconds=1,
        sync_wait_seconds=1,
        reconcile_seconds=1,
        runner_lost_seconds=1,
    )

    async def main() -> None:
        db = DbThread(store.db, settings.db_path, store.MODELS, schema_version=store.SCHEMA_VERSION)
        dispatcher = Dispatcher(settings, db, SweepNews())
        try:
            async with asyncio.timeout(30):
                await scenario(dispatcher, cluster, db)
        finally:
            await dispatcher.close()
            for address in list(cluster.servers):
                await cluster.stop(address)
            db.close()

    asyncio.run(main())


async def until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - the dispatcher's own state, polled
        await asyncio.sleep(0.02)


def up(dispatcher: Dispatcher) -> dict[str, str]:
    return {link.name: link.address for link in dispatcher.links if link.up and link.name}


def test_found_runners_go_by_the_names_they_say_and_one_name_is_one_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(dispatcher: Dispatcher, cluster: Cluster, db: DbThread) -> None:
        a = await cluster.start(HOSTS[0], "runner-1")
        b = await cluster.start(HOSTS[1], "runner-2")
        await dispatcher.start()
        await until(lambda: up(dispatcher) == {"runner-1": a, "runner-2": b})
        # A third address saying an existing name is refused while that one is connected.
        twin = await cluster.start(HOSTS[2], "runner-1")
        await until(lambda: cluster.runners[twin].streams >= 2)
        assert up(dispatcher) == {"runner-1": a, "runner-2": b}
        assert cluster.runners[twin].commands == []

    run(tmp_path, monkeypatch, scenario)


def test_a_found_runner_takes_trials_and_one_moved_takes_its_name_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(dispatcher: Dispatcher, cluster: Cluster, db: DbThread) -> None:
        a = await cluster.start(HOSTS[0], "runner-1")
        await dispatcher.start()
        planned = [domain.PlannedTrial(f"t{i}", "print(1)", {"i": i}) for i in range(4)]
        sweep_id = await db(store.create_sweep, "s", "task", {"task": "task"}, planned)
        dispatcher.kick()
        await until(lambda: sum(len(r.commands) for r in cluster.runners.values()) == 4)

        async def status() -> str:
            row = await db(store.sweep, sweep_id)
            return "" if row is None else str(row.status)

        while await status() != "done":  # noqa: ASYNC110 - the store, polled
            await asyncio.sleep(0.02)
        # The replica moves: its address goes, and it comes back elsewhere, same name.
        cluster.resolves.discard(a)
        await cluster.stop(a)
        await until(lambda: all(link.address != a for link in dispatcher.links))
        moved = await cluster.start(HOSTS[3], "runner-1")
        await until(lambda: up(dispatcher) == {"runner-1": moved})

    run(tmp_path, monkeypatch, scenario)


def test_a_runner_whose_address_goes_keeps_its_open_stream_to_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(dispatcher: Dispatcher, cluster: Cluster, db: DbThread) -> None:
        a = await cluster.start(HOSTS[0], "runner-1")
        await dispatcher.start()
        await until(lambda: "runner-1" in up(dispatcher))
        # Gone from the name (a task shutting down): no new stream, but the one open
        # stays, so a draining runner still reports what it finishes.
        cluster.resolves.discard(a)
        await until(lambda: all(link.retired for link in dispatcher.links))
        [link] = dispatcher.links
        assert link.connected and cluster.runners[a].streams == 1
        await cluster.stop(a)
        await until(lambda: dispatcher.links == [])
        assert cluster.runners[a].streams == 1

    run(tmp_path, monkeypatch, scenario)


def test_trials_of_a_runner_that_never_comes_back_are_lost_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(dispatcher: Dispatcher, cluster: Cluster, db: DbThread) -> None:
        planned = [domain.PlannedTrial("t0", "print(1)", {})]
        sweep_id = await db(store.create_sweep, "s", "task", {"task": "task"}, planned)
        # Held by a replica from before a restart, which no address answers for.
        trial = await db(store.assign, f"{sweep_id}/0", "runner-9")
        assert trial is not None
        await dispatcher.start()
        assert await dispatcher.reconcile(0.2) == ["runner-9"]

        async def outcome() -> str | None:
            row = await db(store.Trial.get_by_id, f"{sweep_id}/0")
            return row.outcome

        while await outcome() is None:  # noqa: ASYNC110 - the store, polled
            await asyncio.sleep(0.05)
        assert await outcome() == "runner_lost"

    run(tmp_path, monkeypatch, scenario)


def test_a_found_address_that_answers_without_a_hello_gets_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(link_module, "HELLO_SECONDS", 0.2)

    async def scenario(dispatcher: Dispatcher, cluster: Cluster, db: DbThread) -> None:
        a = await cluster.start(HOSTS[0], "runner-1")
        await dispatcher.start()
        await until(lambda: "runner-1" in up(dispatcher))
        # runner-1 holds a trial (recorded as sent to it; the scripted runner never saw
        # it); then its address answers as someone who says nothing.
        planned = [domain.PlannedTrial("t0", "print(1)", {})]
        sweep_id = await db(
            store.create_sweep, "s", "task", {"task": "task", "maxParallel": 1}, planned
        )
        assert await db(store.assign, f"{sweep_id}/0", "runner-1") is not None
        await cluster.stop(a)
        silent = ScriptedRunner(None, metadata_slots="2")  # as a runner older than Hello
        server = grpc.aio.server()
        runner_pb2_grpc.add_RunnerServicer_to_server(silent, server)
        assert server.add_insecure_port(a) == cluster.port
        await server.start()
        try:
            await until(lambda: silent.streams >= 2)
            assert silent.commands == [], "another runner's trial went to whoever answered"
        finally:
            await server.stop(0)

    run(tmp_path, monkeypatch, scenario)


def test_a_name_is_not_taken_from_a_stream_that_is_still_being_set_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(dispatcher: Dispatcher, cluster: Cluster, db: DbThread) -> None:
        planned = [domain.PlannedTrial("t0", "print(1)", {})]
        sweep_id = await db(store.create_sweep, "s", "task", {"task": "task"}, planned)
        assert await db(store.assign, f"{sweep_id}/0", "runner-1") is not None
        # The first stream to say runner-1 waits in the middle of its set-up (reading
        # what the runner holds) while a second address says the same name.
        release, asked = asyncio.Event(), asyncio.Event()
        real = dispatcher.held_by

        async def slow(runner: str) -> tuple[list[store.Dispatchable], list[str]]:
            if not asked.is_set():
                asked.set()
                await release.wait()
            return await real(runner)

        monkeypatch.setattr(dispatcher, "held_by", slow)
        first = await cluster.start(HOSTS[0], "runner-1")
        await dispatcher.start()
        await asked.wait()
        second = await cluster.start(HOSTS[1], "runner-1")
        await until(lambda: cluster.runners[second].streams >= 2)
        release.set()
        await until(lambda: up(dispatcher) == {"runner-1": first})
        await until(lambda: len(cluster.runners[first].commands) == 1)
        assert cluster.runners[second].commands == []
        assert [link.name for link in dispatcher.links if link.connected] == ["runner-1"]

    run(tmp_path, monkeypatch, scenario)
