"""The orchestrator's side of the runner stream, in-process: a real RunnerLink over a
real gRPC stream on a loopback port to a scripted runner, reporting to a recorder (or
to a real Dispatcher on a throwaway store)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from orchestrator_svc import link as link_module
from orchestrator_svc import store
from orchestrator_svc.config import Settings
from orchestrator_svc.dispatch import Dispatcher
from orchestrator_svc.domain import PlannedTrial
from orchestrator_svc.link import RunnerLink
from orchestrator_svc.news import SweepNews
from orchestrator_svc.spec import Plan
from prism import runner_protocol as protocol
from prism.sqlite import DbThread
from prism.trial import MAX_JSON_BYTES, Outcome, TrialResult
from prism.v1 import runner_pb2, runner_pb2_grpc

T = TypeVar("T")
RESULT = TrialResult(outcome=Outcome.SUCCEEDED, reason="exit code 0", exit_code=0)
STOPPED = TrialResult(outcome=Outcome.CANCELLED, reason="cancelled")
RETURNED = "handed back: runner stopping"


def held(trial_id: str, attempts: int = 1, *, cancelled: bool = False) -> store.Dispatchable:
    trial = store.Trial(id=trial_id, attempts=attempts, params_json='{"x": 1}')
    return store.Dispatchable(trial, "print(1)", {"task": "t"}, cancelled)


@dataclass
class Reports:
    """What the link reported, in order."""

    holds: tuple[list[store.Dispatchable], list[str]] = ([], [])
    seen: list[tuple[str, ...]] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)
    up: asyncio.Event = field(default_factory=asyncio.Event)
    _news: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def note(self, *what: str) -> None:
        async with self._news:
            self.seen.append(what)
            self._news.notify_all()

    async def until(self, predicate: Callable[[list[tuple[str, ...]]], bool]) -> None:
        async with self._news:
            await self._news.wait_for(lambda: predicate(self.seen))

    async def held_by(self, runner: str) -> tuple[list[store.Dispatchable], list[str]]:
        self.asked.append(runner)
        return self.holds

    def runner_up(self, runner: str) -> None:
        self.up.set()

    def claim(self, runner: str, link: RunnerLink) -> bool:
        return True  # a configured link never asks

    async def trial_started(self, execution_id: str) -> None:
        await self.note("started", execution_id)

    async def trial_metrics(self, execution_id: str, values_json: tuple[str, ...]) -> None:
        await self.note("metrics", execution_id, *values_json)

    async def trial_finished(self, execution_id: str, result: TrialResult) -> None:
        await self.note("finished", execution_id, result.outcome.value)

    async def trial_returned(self, execution_id: str, reason: str) -> None:
        await self.note("returned", execution_id, reason)


class ScriptedRunner(runner_pb2_grpc.RunnerServicer):
    """Says hello as told (or not at all, as a runner older than Hello), then answers
    each RunTrial with accepted, started, `metrics` and finished."""

    def __init__(
        self,
        hello: runner_pb2.RunnerEvent | None,
        *,
        metadata_slots: str = "",
        metrics: tuple[str, ...] = (),
        hello_after: float = 0.0,
        draining_streams: int = 0,
    ) -> None:
        self.hello = hello
        # Its first this many streams drain: each RunTrial gets Draining, then its
        # return; a CancelTrial ends the stream (the test's way to stop the runner).
        self.draining_streams = draining_streams
        self.hello_after = hello_after
        self.metadata_slots = metadata_slots
        self.metrics = metrics
        self.commands: list[runner_pb2.RunnerCommand] = []
        self.streams = 0

    async def Connect(
        self,
        request_iterator: AsyncIterator[runner_pb2.RunnerCommand],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[runner_pb2.RunnerEvent]:
        self.streams += 1
        draining = self.streams <= self.draining_streams
        if self.metadata_slots:
            await context.send_initial_metadata(((protocol.SLOTS_KEY, self.metadata_slots),))
        if self.hello is not None:
            await asyncio.sleep(self.hello_after)
            yield self.hello
        async for command in request_iterator:
            self.commands.append(command)
            if draining and command.HasField("cancel_trial"):
                return
            if command.HasField("cancel_trial"):
                execution_id = command.cancel_trial.trial_id
                yield protocol.accepted(execution_id, protocol.Previous.NONE)
                yield protocol.finished(execution_id, STOPPED)
            elif draining:
                execution_id = command.run_trial.trial_id
                yield protocol.accepted(execution_id, protocol.Previous.NONE)
                yield protocol.started(execution_id)
                yield protocol.DRAINING
                yield protocol.returned(execution_id, RETURNED)
            else:
                execution_id = command.run_trial.trial_id
                yield protocol.accepted(execution_id, protocol.Previous.NONE)
                yield protocol.started(execution_id)
                if self.metrics:
                    yield protocol.metrics(execution_id, list(self.metrics))
                yield protocol.finished(execution_id, RESULT)


def run(scenario: Callable[..., Awaitable[T]], runner: ScriptedRunner, **link: Any) -> T:
    async def main() -> T:
        server = grpc.aio.server()
        runner_pb2_grpc.add_RunnerServicer_to_server(runner, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        reports = Reports(**link.pop("reports", {}))
        connection = RunnerLink(
            "runner-1", f"127.0.0.1:{port}", token="t", silence_seconds=10, reports=reports
        )
        task = asyncio.create_task(connection.run())
        try:
            async with asyncio.timeout(20):
                return await scenario(connection, reports)
        finally:
            task.cancel()
            await connection.close()
            await server.stop(0)

    return asyncio.run(main())


def test_a_hello_sets_the_slots_and_capabilities_and_held_trials_are_sent_again() -> None:
    runner = ScriptedRunner(protocol.hello("runner-1", 7), metadata_slots="3")

    async def scenario(link: RunnerLink, reports: Reports) -> None:
        await reports.up.wait()
        assert (link.slots, link.capabilities) == (7, frozenset(protocol.CAPABILITIES))
        await reports.until(lambda seen: ("finished", "s/3@2", "cancelled") in seen)

    holds = ([held("s/0"), held("s/1", attempts=2), held("s/2", cancelled=True)], ["s/3@2"])
    run(scenario, runner, reports={"holds": holds})
    sent = [
        ("run", c.run_trial.trial_id)
        if c.HasField("run_trial")
        else ("cancel", c.cancel_trial.trial_id)
        for c in runner.commands
    ]
    # Each held trial as its current execution; a cancelled sweep's trial and an
    # abandoned execution are told to stop.
    assert sent == [
        ("run", "s/0"),
        ("run", "s/1@2"),
        ("cancel", "s/2"),
        ("cancel", "s/3@2"),
    ]


def test_a_trial_takes_a_slot_until_it_finishes() -> None:
    runner = ScriptedRunner(protocol.hello("runner-1", 2))

    async def scenario(link: RunnerLink, reports: Reports) -> None:
        await reports.up.wait()
        assert link.up and link.free == 2
        assert link.dispatch(held("s/0"))
        assert link.free == 1
        await reports.until(lambda seen: ("finished", "s/0", "succeeded") in seen)
        assert link.free == 2

    run(scenario, runner)


def test_what_the_runner_reports_arrives_as_typed_values() -> None:
    runner = ScriptedRunner(
        protocol.hello("runner-1", 2), metrics=('{"step":1}', "not an object", '{"step":2}')
    )
    seen: list[tuple[str, ...]] = []

    async def scenario(link: RunnerLink, reports: Reports) -> None:
        await reports.up.wait()
        link.dispatch(held("s/0"))
        await reports.until(lambda seen: len(seen) >= 3)
        seen.extend(reports.seen)

    run(scenario, runner)
    # What cannot be a metric object is dropped at the boundary.
    assert seen == [
        ("started", "s/0"),
        ("metrics", "s/0", '{"step":1}', '{"step":2}'),
        ("finished", "s/0", "succeeded"),
    ]


def test_a_runner_under_another_name_gets_nothing() -> None:
    runner = ScriptedRunner(protocol.hello("someone-else", 4))

    async def scenario(link: RunnerLink, reports: Reports) -> None:
        # Refused, and refused again on each new stream.
        while runner.streams < 3:  # noqa: ASYNC110 - the count is the fake runner's
            await asyncio.sleep(0.05)
        assert not link.up and not reports.up.is_set()
        assert not link.dispatch(held("s/0"))

    holds: tuple[list[store.Dispatchable], list[str]] = ([held("s/0")], [])
    run(scenario, runner, reports={"holds": holds})
    # Its records are not this runner's: nothing held here is sent to it.
    assert runner.commands == []


def test_a_runner_older_than_hello_is_still_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(link_module, "HELLO_SECONDS", 0.2)
    # It says nothing first: after a short wait the link goes on with the slot count
    # of the stream's metadata.
    runner = ScriptedRunner(None, metadata_slots="3")

    async def scenario(link: RunnerLink, reports: Reports) -> None:
        await reports.up.wait()
        assert link.slots == 3 and link.capabilities == frozenset()
        assert link.dispatch(held("s/0"))
        await reports.until(lambda seen: ("finished", "s/0", "succeeded") in seen)

    run(scenario, runner)


def test_a_draining_runner_takes_no_slot_and_its_returns_are_reported() -> None:
    runner = ScriptedRunner(protocol.hello("runner-1", 3), draining_streams=1)

    async def scenario(link: RunnerLink, reports: Reports) -> None:
        await reports.up.wait()
        assert link.dispatch(held("s/0"))
        await reports.until(lambda seen: ("returned", "s/0", RETURNED) in seen)
        # Still up (its stream answers, so its trials are not lost), but full.
        assert link.up and link.draining and link.free == 0
        assert link.in_flight == set()
        # The runner restarts: its new stream starts without draining.
        link.cancel("stop")
        while not (runner.streams == 2 and link.up):  # noqa: ASYNC110 - the link's own state
            await asyncio.sleep(0.02)
        assert not link.draining and link.free == 3

        assert reports.seen == [("started", "s/0"), ("returned", "s/0", RETURNED)]

    run(scenario, runner)


def test_read_event_bounds_what_a_broken_runner_could_send() -> None:
    assert protocol.read_event(runner_pb2.RunnerEvent()) is None  # an unknown kind
    huge = "{" + " " * MAX_JSON_BYTES + "}"
    event = protocol.read_event(protocol.metrics("s/0", ["{}", huge, "[]", '{"a":1}']))
    assert event == protocol.Metrics("s/0", ("{}", '{"a":1}'))
    hello = protocol.read_event(
        runner_pb2.RunnerEvent(
            hello=runner_pb2.Hello(
                protocol=9, runner="r" * 5000, slots=10**9, capabilities=["x"] * 1000
            )
        )
    )
    assert isinstance(hello, protocol.Hello)
    assert len(hello.runner) == protocol.MAX_RUNNER_NAME and hello.slots == protocol.MAX_SLOTS
    assert hello.protocol == 9 and hello.capabilities == frozenset({"x"})
    zero = protocol.read_event(runner_pb2.RunnerEvent(hello=runner_pb2.Hello(runner="r")))
    assert isinstance(zero, protocol.Hello) and zero.slots == protocol.DEFAULT_SLOTS


def test_a_late_hello_is_still_checked_and_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    # A loaded runner's Hello may come after the link went on without it.
    monkeypatch.setattr(link_module, "HELLO_SECONDS", 0.05)
    runner = ScriptedRunner(protocol.hello("runner-1", 6), hello_after=0.3, metadata_slots="2")

    async def scenario(link: RunnerLink, reports: Reports) -> None:
        await reports.up.wait()
        assert link.slots == 2 and link.capabilities == frozenset()
        while link.slots != 6:  # noqa: ASYNC110 - the link's own state
            await asyncio.sleep(0.02)
        assert link.capabilities == frozenset(protocol.CAPABILITIES) and link.up

    run(scenario, runner)


def test_a_late_hello_under_another_name_closes_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(link_module, "HELLO_SECONDS", 0.05)
    runner = ScriptedRunner(protocol.hello("someone-else", 4), hello_after=0.3, metadata_slots="2")

    async def scenario(link: RunnerLink, reports: Reports) -> None:
        await reports.up.wait()
        # Up without a Hello (as a runner older than it); then the Hello comes, and the
        # link closes that stream (and opens another) without taking its slots.
        while runner.streams < 2:  # noqa: ASYNC110 - the count is the fake runner's
            await asyncio.sleep(0.02)
        assert link.slots == 2

    run(scenario, runner)


def test_events_with_ids_no_orchestrator_makes_are_ignored() -> None:
    long_id = "s/" + "0" * protocol.MAX_EXECUTION_ID
    for event in (
        protocol.accepted(long_id, protocol.Previous.NONE),
        protocol.started(long_id),
        protocol.metrics(long_id, ["{}"]),
        protocol.finished(long_id, RESULT),
    ):
        assert protocol.read_event(event) is None
    assert protocol.read_event(protocol.started("s/0")) == protocol.Started("s/0")
    # A name is compared whole: one longer than the cap cannot match any configured.
    name = "r" * (protocol.MAX_RUNNER_NAME + 1)
    hello = protocol.read_event(protocol.hello(name, 1))
    assert isinstance(hello, protocol.Hello) and hello.runner != name


def test_the_drain_events_read_back_as_typed_values() -> None:
    hello = protocol.read_event(protocol.hello("runner-1", 2))
    assert isinstance(hello, protocol.Hello)
    assert hello.protocol == 3 and "drain" in hello.capabilities
    assert protocol.read_event(protocol.DRAINING) == protocol.Draining()
    assert protocol.read_event(protocol.returned("s/0@2", "runner draining")) == (
        protocol.Returned("s/0@2", "runner draining")
    )
    # Bounded as every other event: a reason is cut, an id no orchestrator makes dropped.
    long_reason = protocol.read_event(protocol.returned("s/0", "x" * 10_000))
    assert long_reason == protocol.Returned("s/0", "x" * protocol.MAX_RETURN_REASON)
    long_id = "s/" + "0" * protocol.MAX_EXECUTION_ID
    assert protocol.read_event(protocol.returned(long_id, "")) is None
    # The wire form survives a round trip.
    raw = protocol.returned("s/1", "handed back").SerializeToString()
    assert protocol.read_event(runner_pb2.RunnerEvent.FromString(raw)) == protocol.Returned(
        "s/1", "handed back"
    )


def test_an_event_kind_from_a_newer_runner_is_ignored() -> None:
    # What an orchestrator older than Draining and TrialReturned sees of them: an event
    # whose kind its stubs do not know (here field 15, known to none), which it skips.
    future = runner_pb2.RunnerEvent.FromString(b"\x7a\x00")
    assert future.WhichOneof("event") is None
    assert protocol.read_event(future) is None


async def serve(runner: ScriptedRunner) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    runner_pb2_grpc.add_RunnerServicer_to_server(runner, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def test_the_dispatcher_sends_a_draining_runner_nothing_and_runs_its_returns_elsewhere(
    tmp_path: Path,
) -> None:
    # runner-1 has the most free slots, so the first trials go to it; it drains and
    # hands each back. runner-2 runs everything after.
    draining = ScriptedRunner(protocol.hello("runner-1", 4), draining_streams=100)
    steady = ScriptedRunner(protocol.hello("runner-2", 1))
    trials = 4

    async def main() -> tuple[list[store.Trial], list[tuple[str, int | None, dict[str, Any]]]]:
        servers = [await serve(draining), await serve(steady)]
        settings = Settings(
            address="127.0.0.1:0",
            data_dir=tmp_path,
            api_token="api",
            runner_token="runner",
            runners=(("runner-1", servers[0][1]), ("runner-2", servers[1][1])),
            examples=(),
            example_wall_seconds=1.0,
            sync_wait_seconds=1.0,
            reconcile_seconds=1.0,
        )
        db = DbThread(store.db, settings.db_path, store.MODELS, schema_version=store.SCHEMA_VERSION)
        dispatcher = Dispatcher(settings, db, SweepNews())
        try:
            await dispatcher.start()
            async with asyncio.timeout(20):
                while not all(link.up for link in dispatcher.links):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                planned = [PlannedTrial(f"t{i}", "print(1)", {"i": i}) for i in range(trials)]
                sweep_id = await dispatcher.submit(Plan("task", {"task": "task"}, planned))
                while not await db(store.sweep_finished, sweep_id):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            found = await db(store.sweep_with_trials, sweep_id)
            assert found is not None
            events = await db(store.events_after, sweep_id, 0, 1000)
            return found[1], [(e.kind, e.trial_index, json.loads(e.data)) for e in events]
        finally:
            await dispatcher.close()
            db.close()
            for server, _ in servers:
                await server.stop(0)

    rows, events = asyncio.run(main())
    returned = [c.run_trial.trial_id for c in draining.commands if c.HasField("run_trial")]
    # Once it said it drains, it got nothing more: only what was sent before it could.
    assert 1 <= len(returned) <= 4
    assert all("@" not in execution_id for execution_id in returned)
    assert [(row.state, row.outcome) for row in rows] == [("finished", "succeeded")] * trials
    for row in rows:
        handed_back = row.id in returned
        assert (row.runner, row.attempts) == ("runner-2", 2 if handed_back else 1)
    requeued = [(index, data) for kind, index, data in events if kind == "trial_requeued"]
    assert sorted(f"{rows[0].sweep_id}/{index}" for index, _ in requeued) == sorted(returned)
    assert {json.dumps(data) for _, data in requeued} == {
        json.dumps({"runner": "runner-1", "reason": RETURNED})
    }
    sent_to_steady = [c.run_trial.trial_id for c in steady.commands if c.HasField("run_trial")]
    assert len(sent_to_steady) == trials  # each trial's one final execution
