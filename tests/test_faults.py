"""Fault injection: SIGKILL of the orchestrator and of runners at seeded random
instants while sweeps run, each restarted at once. Afterwards every sweep is
complete, every trial's result is recorded exactly once, and no execution a
runner had finished ran again.

Bounded: PRISM_FAULT_SECONDS of faults (default 45), then the sweeps settle.
Prints one line of counts. The same checks run longer with bench/soak.py."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import json_format

from prism.stack import ORCHESTRATOR
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.conftest import RunningStack, StackFactory, wait_until

WORK = """\
import json, os, time
p = json.loads(os.environ["PRISM_PARAMS"])
time.sleep(p["s"])
print(json.dumps({"i": p["i"]}))
"""


@dataclass
class Counts:
    sweeps: int = 0
    trials: int = 0
    kills: dict[str, int] = field(default_factory=lambda: {"orchestrator": 0, "runner": 0})
    reexecuted: int = 0
    lost: int = 0
    # Trials whose every retry met an infrastructure failure: recorded, not lost.
    exhausted: int = 0

    def line(self) -> str:
        return (
            f"fault injection: sweeps={self.sweeps} trials={self.trials} "
            f"kills={sum(self.kills.values())} (orchestrator={self.kills['orchestrator']}, "
            f"runner={self.kills['runner']}) reexecuted_finished={self.reexecuted} "
            f"lost_results={self.lost} retries_exhausted={self.exhausted}"
        )


def call(stack: RunningStack, method: str, request: object, timeout: float = 5) -> object | None:
    """One API call; None while the orchestrator is down or recovering."""
    try:
        with stack.channel() as channel:
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            return getattr(stub, method)(request, metadata=stack.metadata(), timeout=timeout)
    except grpc.RpcError as error:
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return None
        raise


def create(stack: RunningStack, rng: random.Random, number: int) -> str:
    params = [{"i": i, "s": rng.uniform(0.1, 1.5)} for i in range(rng.randint(2, 6))]
    spec = json_format.ParseDict(
        {"task": f"faults {number}", "script": WORK, "retries": 5, "parameters": {"list": params}},
        orchestrator_pb2.SweepSpec(),
    )
    request = orchestrator_pb2.CreateSweepRequest(sweep=spec, request_id=f"faults-{number}")
    # Retried with the same request id while the orchestrator is away: a
    # retried create never makes a second sweep.
    reply = wait_until(lambda: call(stack, "CreateSweep", request), what="a create to land")
    return str(reply.id)  # type: ignore[attr-defined]


def run_faults(stack: RunningStack, seconds: float, seed: int) -> Counts:
    rng = random.Random(seed)
    counts = Counts()
    sweeps: list[str] = []
    services = [ORCHESTRATOR, *stack.layout.runners]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sweeps.append(create(stack, rng, len(sweeps)))
        time.sleep(rng.uniform(0.0, 1.0))
        if rng.random() < 0.6:
            victim = rng.choice(services)
            stack.stack.kill(victim)
            counts.kills["orchestrator" if victim == ORCHESTRATOR else "runner"] += 1
            time.sleep(rng.uniform(0.0, 0.5))
            stack.stack.start(victim)
            stack.stack.wait_ready(victim)
    for sweep_id in sweeps:
        settle(stack, sweep_id)
    counts.sweeps = len(sweeps)
    check(stack, sweeps, counts)
    return counts


def settle(stack: RunningStack, sweep_id: str, timeout: float = 180) -> None:
    def complete() -> bool:
        sweep = call(stack, "GetSweep", orchestrator_pb2.GetSweepRequest(sweep_id=sweep_id))
        return sweep is not None and bool(sweep.finish_time.seconds)  # type: ignore[attr-defined]

    try:
        wait_until(complete, timeout, f"sweep {sweep_id} to complete")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{diagnose(stack, sweep_id)}") from None


def diagnose(stack: RunningStack, sweep_id: str) -> str:
    """What a stuck sweep's trials look like on every side, and the logs about it."""
    lines = ["orchestrator trials (position, state, attempts, runner, outcome, not_before):"]
    lines += map(
        str,
        stack.orchestrator_query(
            "SELECT position, state, attempts, runner, outcome, not_before - strftime('%s') "
            "FROM trial WHERE sweep_id = ? ORDER BY position",
            sweep_id,
        ),
    )
    lines.append("events:")
    lines += map(
        str,
        stack.orchestrator_query(
            "SELECT seq, kind, trial_index, data FROM event WHERE sweep_id = ? ORDER BY seq",
            sweep_id,
        ),
    )
    for runner in stack.layout.runners:
        with closing(sqlite3.connect(stack.runner_db(runner))) as db:
            rows = db.execute(
                "SELECT id, state, outcome FROM trial WHERE id LIKE ?", (f"{sweep_id}%",)
            ).fetchall()
        lines.append(f"{runner}: {rows}")
    for service in stack.layout.services:
        path = stack.layout.log_file(service)
        if path.exists():
            about = [line for line in path.read_text().splitlines() if sweep_id in line]
            lines.append(f"{service} log ({len(about)} lines about it):")
            lines += about[-20:]
    return "\n".join(lines)


def check(stack: RunningStack, sweeps: list[str], counts: Counts) -> None:
    executions: dict[str, int] = {}
    finished_on_runner: dict[str, str] = {}
    for runner in stack.layout.runners:
        with closing(sqlite3.connect(stack.runner_db(runner))) as db:
            for trial_id, n in db.execute("SELECT trial_id, COUNT(*) FROM execution GROUP BY 1"):
                executions[trial_id] = executions.get(trial_id, 0) + n
            for trial_id, outcome in db.execute(
                "SELECT id, outcome FROM trial WHERE state = 'finished'"
            ):
                finished_on_runner[trial_id] = outcome
    # A runner never starts an execution id twice.
    counts.reexecuted += sum(n - 1 for n in executions.values() if n > 1)
    for sweep_id in sweeps:
        sweep = call(stack, "GetSweep", orchestrator_pb2.GetSweepRequest(sweep_id=sweep_id))
        assert sweep is not None
        for trial in sweep.trials:  # type: ignore[attr-defined]
            counts.trials += 1
            trial_id = f"{sweep_id}/{trial.index}"
            if trial.state == "finished" and trial.outcome == "sandbox_error":
                counts.exhausted += 1
                continue
            if trial.state != "finished" or trial.outcome != "succeeded":
                counts.lost += 1
                continue
            if dict(trial.metrics) != {"i": float(trial.index)}:
                counts.lost += 1
            # An execution finished (with the trial's own outcome) on a runner
            # was never followed by another one.
            for attempt in range(1, trial.attempts):
                earlier = trial_id if attempt == 1 else f"{trial_id}@{attempt}"
                if finished_on_runner.get(earlier) == "succeeded":
                    counts.reexecuted += 1
        recorded = stack.orchestrator_query(
            "SELECT trial_index, COUNT(*) FROM event WHERE sweep_id = ? "
            "AND kind = 'trial_finished' GROUP BY 1",
            sweep_id,
        )
        counts.lost += sum(1 for _, n in recorded if n != 1)


def test_sigkill_anywhere_loses_nothing_and_reruns_nothing(
    make_stack: StackFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = make_stack(gateway=False, env={"PRISM_RECONCILE_SECONDS": "5"})
    seed = int(os.environ.get("PRISM_FAULT_SEED", "20261129"))
    counts = run_faults(stack, float(os.environ.get("PRISM_FAULT_SECONDS", "45")), seed)
    with capsys.disabled():  # the counts belong in CI's output
        print(f"\n{counts.line()} seed={seed}")
    assert counts.sweeps > 0 and sum(counts.kills.values()) > 0
    assert (counts.reexecuted, counts.lost) == (0, 0), counts.line()
