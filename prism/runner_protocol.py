"""The runner stream's contract, both ends of it: what the orchestrator sends down
(commands), what the runner sends up (events) and how a trial's result maps onto
them. prism/v1/runner.proto is the wire; this module is the only code that builds
or reads its messages, so a new message is added here, in the proto, and in the
one place on each side that acts on it.

Every id on the stream is an execution id: "<sweep id>/<index>" for a trial's first
execution, "<sweep id>/<index>@<k>" for its k-th.

What the orchestrator reads from a runner is checked here into typed values: the
runner is a separate service, and a broken one must not put more into the store
than the rules allow.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prism.trial import MAX_JSON_BYTES, TrialResult
from prism.v1 import runner_pb2, trial_pb2

# A trial's result carries captured output and artifacts, well over gRPC's 4 MiB
# default message size.
MAX_RESULT_MESSAGE_BYTES = 64 * 2**20
# Initial metadata of the stream saying how many trials the runner executes at once,
# for orchestrators older than the Hello message.
SLOTS_KEY = "prism-slots"
# 1: no Hello; 2: Hello first; 3: Draining and TrialReturned.
PROTOCOL_VERSION = 3
# What this runner supports beyond version 1's messages. "drain": it may say it is
# stopping (Draining) and hand executions back (TrialReturned).
CAPABILITIES = ("metric_batches", "drain")
# A runner that says nothing of its slots gets this many trials at once.
DEFAULT_SLOTS = 4
MAX_SLOTS = 1024
# The longest execution id either side takes (the orchestrator's are far shorter).
MAX_EXECUTION_ID = 200
# What is kept of a Hello's name (compared whole with the configured one, so a longer
# name is refused) and of each capability.
MAX_RUNNER_NAME = 1024
MAX_CAPABILITY = 100
MAX_CAPABILITIES = 32
# What is kept of a TrialReturned's reason.
MAX_RETURN_REASON = 500


class Previous(enum.Enum):
    """What a runner knew of an execution when it was sent (TrialAccepted.previous)."""

    NONE = runner_pb2.TrialAccepted.PREVIOUS_NONE
    RUNNING = runner_pb2.TrialAccepted.PREVIOUS_RUNNING
    FINISHED = runner_pb2.TrialAccepted.PREVIOUS_FINISHED


# Commands (orchestrator -> runner).


def run_trial(
    execution_id: str,
    *,
    script: str,
    params_json: str,
    limits: Mapping[str, Any],
    requirements: Iterable[str] = (),
) -> runner_pb2.RunnerCommand:
    return runner_pb2.RunnerCommand(
        run_trial=runner_pb2.RunTrial(
            trial_id=execution_id,
            script=script,
            params_json=params_json,
            limits=trial_pb2.TrialLimits(**limits),
            requirements=list(requirements),
        )
    )


def cancel_trial(execution_id: str) -> runner_pb2.RunnerCommand:
    return runner_pb2.RunnerCommand(cancel_trial=runner_pb2.CancelTrial(trial_id=execution_id))


def limits_of(run: runner_pb2.RunTrial) -> dict[str, Any]:
    """A RunTrial's limits that are set (zero keeps the sandbox's default)."""
    given: dict[str, Any] = {
        "wall_seconds": run.limits.wall_seconds,
        "memory_bytes": run.limits.memory_bytes,
        "cpus": run.limits.cpus,
        "processes": run.limits.processes,
        "output_bytes": run.limits.output_bytes,
        "workspace_bytes": run.limits.workspace_bytes,
    }
    return {name: value for name, value in given.items() if value}


# Events (runner -> orchestrator), as the runner makes them.


def hello(runner: str, slots: int) -> runner_pb2.RunnerEvent:
    return runner_pb2.RunnerEvent(
        hello=runner_pb2.Hello(
            protocol=PROTOCOL_VERSION, runner=runner, slots=slots, capabilities=CAPABILITIES
        )
    )


def accepted(execution_id: str, previous: Previous) -> runner_pb2.RunnerEvent:
    return runner_pb2.RunnerEvent(
        accepted=runner_pb2.TrialAccepted(trial_id=execution_id, previous=previous.value)
    )


def started(execution_id: str) -> runner_pb2.RunnerEvent:
    return runner_pb2.RunnerEvent(started=runner_pb2.TrialStarted(trial_id=execution_id))


def metrics(execution_id: str, values_json: list[str]) -> runner_pb2.RunnerEvent:
    return runner_pb2.RunnerEvent(
        metric=runner_pb2.TrialMetric(trial_id=execution_id, values_json=values_json)
    )


def finished(execution_id: str, result: TrialResult) -> runner_pb2.RunnerEvent:
    return runner_pb2.RunnerEvent(
        finished=runner_pb2.TrialFinished(trial_id=execution_id, result=result.to_proto())
    )


def returned(execution_id: str, reason: str) -> runner_pb2.RunnerEvent:
    return runner_pb2.RunnerEvent(
        returned=runner_pb2.TrialReturned(trial_id=execution_id, reason=reason)
    )


HEARTBEAT = runner_pb2.RunnerEvent(heartbeat=runner_pb2.Heartbeat())
DRAINING = runner_pb2.RunnerEvent(draining=runner_pb2.Draining())


# Events as the orchestrator reads them.


@dataclass(frozen=True)
class Hello:
    runner: str
    slots: int
    protocol: int
    capabilities: frozenset[str]


@dataclass(frozen=True)
class Accepted:
    execution_id: str


@dataclass(frozen=True)
class Started:
    execution_id: str


@dataclass(frozen=True)
class Metrics:
    execution_id: str
    # Each a metric's values, a JSON object as compact text within the rules of
    # prism.trial (the runner checked them; this only bounds their size and shape).
    values_json: tuple[str, ...]


@dataclass(frozen=True)
class Finished:
    execution_id: str
    result: TrialResult


@dataclass(frozen=True)
class Returned:
    """The runner gave the execution back unfinished: it will report no result for it."""

    execution_id: str
    reason: str


@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class Draining:
    """The runner takes no new trial from now on (it is stopping)."""


Event = Hello | Accepted | Started | Metrics | Finished | Returned | Heartbeat | Draining


def read_event(event: runner_pb2.RunnerEvent) -> Event | None:
    """The event as a typed value; None for one to ignore: a kind this version does not
    know (a newer runner's), or an execution id no orchestrator makes."""
    kind = event.WhichOneof("event")
    if kind == "hello":
        return Hello(
            runner=event.hello.runner[:MAX_RUNNER_NAME],
            slots=_slots(event.hello.slots),
            protocol=event.hello.protocol,
            capabilities=frozenset(
                name[:MAX_CAPABILITY] for name in event.hello.capabilities[:MAX_CAPABILITIES]
            ),
        )
    if kind == "heartbeat":
        return Heartbeat()
    if kind == "draining":
        return Draining()
    if kind not in ("accepted", "started", "metric", "finished", "returned"):
        return None
    execution_id = getattr(event, kind).trial_id
    if len(execution_id) > MAX_EXECUTION_ID:
        return None
    if kind == "accepted":
        return Accepted(execution_id)
    if kind == "started":
        return Started(execution_id)
    if kind == "metric":
        return Metrics(
            execution_id,
            tuple(text for text in event.metric.values_json if _looks_like_an_object(text)),
        )
    if kind == "returned":
        return Returned(execution_id, event.returned.reason[:MAX_RETURN_REASON])
    return Finished(execution_id, TrialResult.from_proto(event.finished.result))


def slots_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> int:
    """The slot count of a runner older than Hello, from the stream's initial metadata."""
    value = dict(metadata or ()).get(SLOTS_KEY, "")
    return _slots(int(value) if isinstance(value, str) and value.isdigit() else 0)


def _slots(value: int) -> int:
    return min(value, MAX_SLOTS) if value > 0 else DEFAULT_SLOTS


def _looks_like_an_object(text: str) -> bool:
    # Stored inside {"values": ...}: what cannot be an object, or is longer than any
    # metric may be (only a broken runner sends one), is not spliced in.
    return len(text) <= MAX_JSON_BYTES and text.startswith("{") and text.endswith("}")
