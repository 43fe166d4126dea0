"""A runner that dies or hangs loses its trials after PRISM_RUNNER_LOST_SECONDS:
they are retried on another runner per the sweep's retries, or end runner_lost.
Only one result per trial is ever kept."""

from __future__ import annotations

import concurrent.futures
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import grpc
import pytest

from prism import runner_protocol as protocol
from prism.v1 import runner_pb2, runner_pb2_grpc
from tests.conftest import RunningStack, StackFactory, wait_until

SLOW = "import json, time\ntime.sleep(4)\nprint(json.dumps({'ok': 1}))"


@pytest.fixture
def pair(make_stack: StackFactory) -> RunningStack:
    return make_stack(runners=2, env={"PRISM_RUNNER_LOST_SECONDS": "3"})


def running_on(stack: RunningStack, sweep_id: str) -> str:
    def runner() -> str | None:
        [trial] = stack.http("GET", f"/v1/sweeps/{sweep_id}").body["trials"]
        return str(trial["runner"]) if trial["state"] == "running" else None

    return str(wait_until(runner, what="the trial to run"))


def only_trial(sweep: dict[str, Any]) -> dict[str, Any]:
    [trial] = sweep["trials"]
    return dict(trial)


def test_a_killed_runner_s_trial_is_retried_on_another(pair: RunningStack) -> None:
    sweep_id = pair.create({"task": "move", "script": SLOW, "retries": 1}).body["id"]
    lost = running_on(pair, sweep_id)
    pair.stack.kill(lost)
    trial = only_trial(pair.finished(sweep_id))
    assert (trial["outcome"], trial["attempts"]) == ("succeeded", 2), trial
    assert trial["runner"] != lost
    assert trial["metrics"] == {"ok": 1}
    events = pair.orchestrator_query(
        "SELECT kind, data FROM event WHERE sweep_id = ? AND kind = 'trial_retrying'", sweep_id
    )
    assert len(events) == 1 and "runner_lost" in events[0][1]


def test_without_retries_the_trial_ends_runner_lost(pair: RunningStack) -> None:
    sweep_id = pair.create({"task": "lose", "script": SLOW}).body["id"]
    lost = running_on(pair, sweep_id)
    pair.stack.kill(lost)
    sweep = pair.finished(sweep_id)
    trial = only_trial(sweep)
    assert trial["outcome"] == "runner_lost"
    assert lost in trial["reason"]
    assert sweep["state"] == "error"


def test_a_hung_runner_is_detected_and_its_late_result_ignored(pair: RunningStack) -> None:
    sweep_id = pair.create({"task": "hang", "script": SLOW, "retries": 1}).body["id"]
    hung = running_on(pair, sweep_id)
    pair.stack.signal(hung, signal.SIGSTOP)
    try:
        trial = only_trial(pair.finished(sweep_id, timeout=120))
    finally:
        pair.stack.signal(hung, signal.SIGCONT)
    assert (trial["outcome"], trial["attempts"], trial["runner"] != hung) == (
        "succeeded",
        2,
        True,
    )

    # The hung runner wakes and finishes the first execution: whatever it says
    # of it is stale, and the recorded result stays the second execution's.
    def first_finished() -> bool:
        with closing(sqlite3.connect(pair.runner_db(hung))) as db:
            rows = db.execute("SELECT state FROM trial WHERE id = ?", (f"{sweep_id}/0",))
            return rows.fetchall() == [("finished",)]

    wait_until(first_finished, what="the first execution to end on the hung runner")
    after = only_trial(pair.finished(sweep_id))
    assert (after["attempts"], after["runner"]) == (2, trial["runner"])
    finished = pair.orchestrator_query(
        "SELECT COUNT(*) FROM event WHERE sweep_id = ? AND kind = 'trial_finished'", sweep_id
    )
    assert finished == [(1,)]


def test_a_returning_runner_stops_the_execution_it_lost(pair: RunningStack) -> None:
    long = "import time\ntime.sleep(90)\nprint('{}')"
    spec = {"task": "abandon", "script": long, "retries": 1, "limits": {"wallSeconds": 120}}
    sweep_id = pair.create(spec).body["id"]
    hung = running_on(pair, sweep_id)
    pair.stack.signal(hung, signal.SIGSTOP)
    try:
        wait_until(
            lambda: only_trial(pair.http("GET", f"/v1/sweeps/{sweep_id}").body)["attempts"] == 2,
            timeout=60,
            what="the trial to be given up on and dispatched again",
        )
    finally:
        pair.stack.signal(hung, signal.SIGCONT)

    # Back, the runner is told to stop the first execution, long before its 90 s.
    def first_outcome() -> str | None:
        with closing(sqlite3.connect(pair.runner_db(hung))) as db:
            rows = db.execute(
                "SELECT outcome FROM trial WHERE id = ? AND state = 'finished'",
                (f"{sweep_id}/0",),
            ).fetchall()
        return str(rows[0][0]) if rows else None

    assert wait_until(first_outcome, timeout=30, what="the lost execution to stop") == "cancelled"
    # Its end reported, nothing is left to tell that runner.
    wait_until(
        lambda: pair.orchestrator_query("SELECT * FROM abandoned") == [],
        what="the orchestrator to hear of the end",
    )
    pair.http("POST", f"/v1/sweeps/{sweep_id}:cancel")
    assert pair.finished(sweep_id)["state"] == "cancelled"


class Refusing(runner_pb2_grpc.RunnerServicer):
    """A runner that accepts the stream, says hello, and then turns every trial away
    (and ignores being told to stop what it was given up on)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def Connect(
        self, request_iterator: Iterator[runner_pb2.RunnerCommand], context: grpc.ServicerContext
    ) -> Iterator[runner_pb2.RunnerEvent]:
        yield protocol.hello(self.name, 4)
        for command in request_iterator:
            if command.HasField("run_trial"):
                context.abort(grpc.StatusCode.UNAVAILABLE, "turning every trial away")


def test_a_runner_that_connects_but_never_answers_loses_its_trials(
    make_stack: StackFactory,
) -> None:
    # Reconnecting does not make a runner up: until it answers for the trials
    # it holds, the lease runs on, so its trials cannot be held forever.
    stack = make_stack(runners=1, env={"PRISM_RUNNER_LOST_SECONDS": "3"})
    [runner] = stack.layout.runners
    stack.stack.kill(runner)
    fake = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
    runner_pb2_grpc.add_RunnerServicer_to_server(Refusing(runner), fake)
    fake.add_insecure_port(stack.layout.address(runner))
    fake.start()
    try:
        sweep_id = stack.create(
            {"task": "refused", "script": SLOW, "parameters": {"list": [{}, {}]}}
        ).body["id"]
        sweep = stack.finished(sweep_id, timeout=60)
    finally:
        fake.stop(0)
    assert [t["outcome"] for t in sweep["trials"]] == ["runner_lost", "runner_lost"]
    assert all(runner in t["reason"] for t in sweep["trials"])
    assert sweep["state"] == "error"
