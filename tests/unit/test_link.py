"""The orchestrator's side of the runner stream, in-process: a real RunnerLink over a
real gRPC stream on a loopback port to a scripted runner, reporting to a recorder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import pytest

from orchestrator_svc import link as link_module
from orchestrator_svc import store
from orchestrator_svc.link import RunnerLink
from prism import runner_protocol as protocol
from prism.trial import MAX_JSON_BYTES, Outcome, TrialResult
from prism.v1 import runner_pb2, runner_pb2_grpc

T = TypeVar("T")
RESULT = TrialResult(outcome=Outcome.SUCCEEDED, reason="exit code 0", exit_code=0)
STOPPED = TrialResult(outcome=Outcome.CANCELLED, reason="cancelled")


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
    ) -> None:
        self.hello = hello
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
        if self.metadata_slots:
            await context.send_initial_metadata(((protocol.SLOTS_KEY, self.metadata_slots),))
        if self.hello is not None:
            await asyncio.sleep(self.hello_after)
            yield self.hello
        async for command in request_iterator:
            self.commands.append(command)
            if command.HasField("cancel_trial"):
                execution_id = command.cancel_trial.trial_id
                yield protocol.accepted(execution_id, protocol.Previous.NONE)
                yield protocol.finished(execution_id, STOPPED)
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
