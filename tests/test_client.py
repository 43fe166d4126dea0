"""The Python client (prism.client) against a real stack: through the gateway, and
through the orchestrator's own port across its restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from prism.client import (
    ApiError,
    AsyncClient,
    Client,
    InvalidArgument,
    NotFound,
    Objective,
    SweepSpec,
    Unauthenticated,
    Unavailable,
    choice,
    grid,
    random_search,
    uniform,
)
from prism.stack import ORCHESTRATOR
from prism.v1 import orchestrator_pb2
from tests.conftest import RunningStack, StackFactory

SCORE = """\
import json, os
p = json.loads(os.environ["PRISM_PARAMS"])
os.makedirs("/workspace/output/plots", exist_ok=True)
with open("/workspace/output/plots/curve.csv", "w") as f:
    f.write(f"x,{p['x']}\\n")
print('PRISM_METRIC {"step": 1, "loss": %s}' % (p["x"] + 1))
print(json.dumps({"loss": p["x"], "layers": p["layers"]}))
"""


def test_a_sweep_from_the_builder_watched_to_its_end(stack: RunningStack, tmp_path: Path) -> None:
    with Client(stack.gateway, stack.token) as prism:
        created = prism.create(
            SweepSpec(
                task="client",
                script=SCORE,
                parameters=random_search(4, seed=3, x=uniform(0, 1), layers=choice(1, 2)),
                objective=Objective("loss", "minimize"),
                max_parallel=2,
            ),
            request_id="client-test-1",
        )
        assert created.state == "running" and created.counts.total == 4
        events = list(prism.watch(created.id))
        done = prism.wait(created.id, timeout=120)
        # The same request id returns the same sweep, starting nothing.
        again = prism.create(SweepSpec(task="other"), request_id="client-test-1")
        logs = prism.logs(created.id, 0)
        written = prism.download(created.id, 0, tmp_path / "dest")

    kinds = [e.kind for e in events]
    assert kinds[0] == "sweep_created" and kinds[-1] == "sweep_finished"
    assert kinds.count("trial_finished") == 4 and kinds.count("metric") == 4
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    assert events[-1].final and events[-1].sweep_state == "done"
    assert {e.trial_index for e in events if e.kind == "trial_queued"} == {0, 1, 2, 3}
    metric = next(e for e in events if e.kind == "metric")
    assert set(metric.data["values"]) == {"step", "loss"}

    assert done.state == "done" and done.counts.succeeded == 4
    best = min(done.trials, key=lambda t: t.metrics["loss"])
    assert done.best_trial.index == best.index
    assert again.id == created.id
    assert '"loss"' in logs.stdout
    assert written == [tmp_path / "dest" / "plots" / "curve.csv"]
    x = done.trials[0].params["x"]
    assert written[0].read_text() == f"x,{x}\n"


def test_list_iterates_every_page(stack: RunningStack) -> None:
    with Client(stack.gateway, stack.token) as prism:
        made = {
            prism.create(SweepSpec(task=f"page {i}", examples=("runner-a",))).id for i in range(3)
        }
        listed = [s.id for s in prism.list(page_size=1)]
    assert made <= set(listed)
    assert len(listed) == len(set(listed))


def test_errors_are_typed(stack: RunningStack) -> None:
    with Client(stack.gateway, stack.token) as prism:
        with pytest.raises(InvalidArgument) as bad:
            prism.create(
                SweepSpec(task="bad", script="print(1)", parameters=grid(x=[]), max_parallel=-1)
            )
        with pytest.raises(NotFound):
            prism.get("no-such-sweep")
    fields = {v.field for v in bad.value.violations}
    assert {"maxParallel", "parameters.grid.x"} <= fields, bad.value.violations
    with Client(stack.gateway, "wrong") as prism, pytest.raises(Unauthenticated):
        prism.get("x")
    with Client("127.0.0.1:1", "t", timeout=5) as prism, pytest.raises(Unavailable):
        prism.get("x")


SLOW = """\
import json, os, time
p = json.loads(os.environ["PRISM_PARAMS"])
time.sleep(p["s"])
print(json.dumps({"s": p["s"]}))
"""


@pytest.mark.parametrize("through", ["orchestrator", "gateway"])
def test_a_watch_resumes_across_an_orchestrator_restart(
    make_stack: StackFactory, through: str
) -> None:
    # Straight, the stream fails UNAVAILABLE; through Envoy, as a reset (INTERNAL).
    stack = make_stack(runners=1, gateway=through == "gateway")
    with Client(getattr(stack, through), stack.token) as prism:
        sweep = prism.create(
            SweepSpec(task="resume", script=SLOW, parameters=grid(s=[0.5, 1, 6, 6]))
        )
        events = []
        restarted = False
        for event in prism.watch(sweep.id, reconnect_seconds=120):
            events.append(event)
            if event.kind == "trial_finished" and not restarted:
                # The connection drops under the watch; the orchestrator comes back.
                stack.stack.kill(ORCHESTRATOR)
                stack.stack.start(ORCHESTRATOR)
                restarted = True
    assert restarted
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "an event lost or repeated"
    assert events[-1].final and events[-1].sweep_state == "done"
    assert sum(e.kind == "trial_finished" for e in events) == 4


def test_the_async_client_does_the_same(stack: RunningStack) -> None:
    async def scenario() -> tuple[list[str], orchestrator_pb2.Sweep, list[str], type]:
        async with AsyncClient(stack.gateway, stack.token) as prism:
            spec = {
                "task": "async",
                "script": SCORE,
                "parameters": {"list": [{"x": 0.5, "layers": 1}]},
            }
            created = await prism.create(spec)
            async with asyncio.timeout(120):
                kinds = [event.kind async for event in prism.watch(created.id)]
                done = await prism.wait(created.id)
            listed = [sweep.id async for sweep in prism.list(page_size=2)]
            try:
                await prism.get("no-such-sweep")
            except ApiError as error:
                raised: type = type(error)
        return kinds, done, listed, raised

    kinds, done, listed, raised = asyncio.run(scenario())
    assert kinds[0] == "sweep_created" and kinds[-1] == "sweep_finished"
    assert done.state == "done" and done.trials[0].metrics["loss"] == 0.5
    assert done.id in listed
    assert raised is NotFound
