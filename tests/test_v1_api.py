"""The v1 API through the gateway: specs, parameter spaces, validation,
objectives, listing, idempotent create, logs and artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningStack, StackFactory, wait_until
from tests.test_requirements import write_wheel

# Prints its parameters back with a score, as the last stdout line.
ECHO = """\
import json, os
params = json.loads(os.environ["PRISM_PARAMS"])
score = sum(v for v in params.values() if isinstance(v, (int, float)))
print(json.dumps({"params": params, "score": score}))
"""


def trials_of(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    return list(sweep["trials"])


def test_create_returns_at_once_then_the_sweep_completes(stack: RunningStack) -> None:
    spec = {
        "task": "grid",
        "script": ECHO,
        "parameters": {"grid": {"lr": [0.1, 0.01], "layers": [1, 2, 3]}},
        "objective": {"metric": "score", "goal": "maximize"},
    }
    created = stack.create(spec)
    assert created.status == 200, created.body
    assert created.body["state"] == "running"
    assert created.body["counts"]["total"] == 6
    assert {t["state"] for t in created.body["trials"]} <= {"pending", "dispatched", "running"}
    sweep = stack.finished(created.body["id"])
    assert sweep["state"] == "done"
    trials = trials_of(sweep)
    # Every combination once, names sorted, ints kept ints.
    assert sorted((t["params"]["layers"], t["params"]["lr"]) for t in trials) == sorted(
        (layers, lr) for layers in (1, 2, 3) for lr in (0.1, 0.01)
    )
    for t in trials:
        assert t["outcome"] == "succeeded", t
        assert t["metrics"]["params"] == t["params"]
        assert isinstance(t["params"]["layers"], int)
        assert t["exitCode"] == 0 and t["durationSeconds"] > 0 and t["attempts"] == 1
    assert sweep["bestTrial"]["params"] == {"layers": 3, "lr": 0.1}
    assert sweep["counts"] == {
        "total": 6,
        "pending": 0,
        "running": 0,
        "finished": 6,
        "succeeded": 6,
        "pruned": 0,
    }
    assert sweep["spec"]["objective"] == {"metric": "score", "goal": "maximize"}


def random_params(stack: RunningStack, seed: int) -> list[dict[str, Any]]:
    spec = {
        "task": "random",
        "script": "print('{}')",
        "parameters": {
            "random": {
                "trials": 12,
                "seed": seed,
                "parameters": {
                    "lr": {"loguniform": [0.0001, 0.1]},
                    "layers": {"int": [1, 3]},
                    "dropout": {"uniform": [0, 0.5]},
                    "act": {"choice": ["relu", "tanh"]},
                },
            }
        },
    }
    created = stack.create(spec)
    assert created.status == 200, created.body
    return [t["params"] for t in created.body["trials"]]


def test_random_search_is_reproducible_and_within_its_ranges(stack: RunningStack) -> None:
    first, again, other = random_params(stack, 7), random_params(stack, 7), random_params(stack, 8)
    assert first == again
    assert first != other
    for params in first + other:
        assert 0.0001 <= params["lr"] <= 0.1
        assert params["layers"] in (1, 2, 3)
        assert 0 <= params["dropout"] <= 0.5
        assert params["act"] in ("relu", "tanh")
    # log-uniform: spread over the decades, not piled at the top
    assert min(p["lr"] for p in first + other) < 0.01


def test_an_explicit_list_and_a_minimize_objective(stack: RunningStack) -> None:
    spec = {
        "task": "list",
        "script": ECHO,
        "parameters": {"list": [{"x": 5}, {"x": -2, "y": 1}, {"x": 3}]},
        "objective": {"metric": "score"},
    }
    sweep = stack.finished(stack.create(spec).body["id"])
    assert [t["params"] for t in sweep["trials"]] == [{"x": 5}, {"x": -2, "y": 1}, {"x": 3}]
    assert sweep["bestTrial"]["index"] == 1
    assert sweep["spec"]["objective"]["goal"] == "minimize"


def test_example_runners_through_v1(stack: RunningStack) -> None:
    spec = {"task": "v1 examples", "objective": {"metric": "best_loss"}}
    sweep = stack.finished(stack.create(spec).body["id"])
    assert [t["name"] for t in sweep["trials"]] == ["runner-a", "runner-b", "runner-c"]
    assert [t["metrics"]["best_lr"] for t in sweep["trials"]] == [0.0001, 0.1, 0.1]
    assert sweep["bestTrial"]["name"] == "runner-c"  # the lowest best_loss
    only_b = stack.finished(stack.create({"task": "b", "examples": ["runner-b"]}).body["id"])
    assert [t["name"] for t in only_b["trials"]] == ["runner-b"]


def test_a_failing_script_is_failed_not_retried(stack: RunningStack) -> None:
    spec = {"task": "boom", "script": "raise SystemExit(7)", "retries": 3}
    sweep = stack.finished(stack.create(spec).body["id"])
    assert sweep["state"] == "error"
    [trial] = sweep["trials"]
    assert (trial["outcome"], trial["exitCode"], trial["attempts"]) == ("failed", 7, 1)
    assert "7" in trial["reason"]


def violations(reply: Any) -> dict[str, str]:
    assert reply.status == 400, reply.body
    [detail] = reply.body["details"]
    return {v["field"]: v["description"] for v in detail["fieldViolations"]}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"script": "print(1)"}, "task"),
        ({"task": "x" * 501}, "task"),
        ({"task": "t", "script": "def ("}, "script"),
        ({"task": "t", "script": "x" * 200_000}, "script"),
        ({"task": "t", "examples": ["runner-z"]}, "examples"),
        ({"task": "t", "examples": ["runner-a", "runner-a"]}, "examples"),
        ({"task": "t", "script": "1", "examples": ["runner-a"]}, "examples"),
        ({"task": "t", "parameters": {"grid": {"a": [1]}}}, "parameters"),
        ({"task": "t", "script": "1", "parameters": {"grid": {}}}, "parameters.grid"),
        ({"task": "t", "script": "1", "parameters": {"grid": {"a": []}}}, "parameters.grid.a"),
        ({"task": "t", "script": "1", "parameters": {"grid": {"a": 3}}}, "parameters.grid.a"),
        ({"task": "t", "script": "1", "parameters": {"grid": {"1a": [1]}}}, "parameters.grid.1a"),
        (
            {
                "task": "t",
                "script": "1",
                "parameters": {"grid": {f"p{i}": list(range(10)) for i in range(5)}},
            },
            "parameters.grid",
        ),
        (
            {
                "task": "t",
                "script": "1",
                "parameters": {"random": {"trials": 0, "parameters": {"a": {"int": [1, 2]}}}},
            },
            "parameters.random.trials",
        ),
        (
            {
                "task": "t",
                "script": "1",
                "parameters": {"random": {"trials": 2, "parameters": {"a": {"normal": [0, 1]}}}},
            },
            "parameters.random.parameters.a",
        ),
        (
            {
                "task": "t",
                "script": "1",
                "parameters": {"random": {"trials": 2, "parameters": {"a": {"uniform": [2, 1]}}}},
            },
            "parameters.random.parameters.a",
        ),
        (
            {
                "task": "t",
                "script": "1",
                "parameters": {
                    "random": {"trials": 2, "parameters": {"a": {"loguniform": [0, 1]}}}
                },
            },
            "parameters.random.parameters.a",
        ),
        (
            {
                "task": "t",
                "script": "1",
                "parameters": {"random": {"trials": 2, "parameters": {"a": {"int": [1.5, 3]}}}},
            },
            "parameters.random.parameters.a",
        ),
        (
            {
                "task": "t",
                "script": "1",
                "parameters": {"random": {"trials": 2, "parameters": {"a": {"choice": []}}}},
            },
            "parameters.random.parameters.a",
        ),
        ({"task": "t", "script": "1", "parameters": {"list": []}}, "parameters.list"),
        ({"task": "t", "script": "1", "parameters": {"list": [1, 2]}}, "parameters.list[0]"),
        ({"task": "t", "objective": {"metric": "bad name"}}, "objective.metric"),
        ({"task": "t", "objective": {"metric": "m", "goal": "up"}}, "objective.goal"),
        ({"task": "t", "objective": {"goal": "maximize"}}, "objective.metric"),
        ({"task": "t", "maxParallel": -1}, "maxParallel"),
        ({"task": "t", "maxParallel": 65}, "maxParallel"),
        ({"task": "t", "retries": 6}, "retries"),
        ({"task": "t", "limits": {"wallSeconds": 3601}}, "limits.wallSeconds"),
        ({"task": "t", "limits": {"memoryMb": 8}}, "limits.memoryMb"),
        ({"task": "t", "limits": {"cpus": 9}}, "limits.cpus"),
        ({"task": "t", "limits": {"processes": 1}}, "limits.processes"),
        ({"task": "t", "limits": {"outputKb": 20000}}, "limits.outputKb"),
        ({"task": "t", "limits": {"workspaceMb": 5000}}, "limits.workspaceMb"),
        ({"task": "t", "requirements": ["x @ file:///etc"]}, "requirements"),
        ({"task": "t", "requirements": ["-e ."]}, "requirements"),
    ],
)
def test_invalid_specs_are_400_naming_the_field(
    stack: RunningStack, spec: dict[str, Any], field: str
) -> None:
    found = violations(stack.create(spec))
    assert field in found, found


def test_every_violation_is_named_at_once(stack: RunningStack) -> None:
    found = violations(stack.create({"task": "", "retries": 9, "limits": {"cpus": 100}}))
    assert set(found) == {"task", "retries", "limits.cpus"}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b"not json",
        b'{"task": 5}',
        b'{"parameters": {"grid": 1}}',
        b'{"task": "t", "maxParallel": ' + b"1" * 5000 + b"}",
        b'{"task": "t", "limits": "\\ud800"}',
        b'{"\\ud800": 1}',
        b'{"task": "t", "maxParallel": 1, "max_parallel": 2}',
        # 2000 violations: an answer naming them all was over the trailers' cap, a 502
        json.dumps(
            {
                "task": "t",
                "script": "1",
                "parameters": {"grid": {f"1{i:064}": [1] for i in range(2000)}},
            }
        ).encode(),
    ],
)
def test_malformed_create_bodies_are_400(stack: RunningStack, body: bytes) -> None:
    reply = stack.http("POST", "/v1/sweeps", body)
    assert reply.status == 400, reply.body
    assert reply.body["message"]


def test_a_retried_create_with_a_request_id_returns_the_same_sweep(stack: RunningStack) -> None:
    spec = {"task": "once", "script": "print('{}')"}
    first = stack.create(spec, "?requestId=abc-123")
    again = stack.create(spec, "?requestId=abc-123")
    assert first.status == again.status == 200
    assert first.body["id"] == again.body["id"]
    other = stack.create(spec, "?requestId=abc-124")
    assert other.body["id"] != first.body["id"]


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"task": "t", "maxParalel": 2}, "maxParalel", 'did you mean "maxParallel"?'),
        ({"task": "t", "limit": {"memoryMb": 64}}, "limit", 'did you mean "limits"?'),
        ({"task": "t", "limits": {"memory": 64}}, "limits.memory", 'unknown field "memory"'),
        ({"task": "t", "limits": {"memoryMb": 0}}, "limits.memoryMb", "got 0"),
        ({"task": "t", "limits": {"wallSeconds": 0}}, "limits.wallSeconds", "got 0"),
        ({"task": "t", "objective": {"metric": "m", "goal": ""}}, "objective.goal", "minimize"),
    ],
)
def test_a_typo_or_an_explicit_zero_is_400_naming_it_not_the_default(
    stack: RunningStack, spec: dict[str, Any], field: str, words: str
) -> None:
    reply = stack.create(spec)
    assert reply.body["code"] == 3 and field in reply.body["message"]
    assert words in violations(reply)[field]


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml"])
def test_a_body_that_is_not_json_by_its_type_is_400(stack: RunningStack, content_type: str) -> None:
    body = json.dumps({"task": "t"}).encode()
    reply = stack.http("POST", "/v1/sweeps", body, headers={"Content-Type": content_type})
    assert "must be JSON" in violations(reply)["body"]


def test_every_answer_shows_the_limits_in_effect(stack: RunningStack) -> None:
    spec: dict[str, Any] = {"task": "effective", "script": "import time; time.sleep(60)"}
    spec["limits"] = {"memoryMb": 128, "wallSeconds": 90}
    effective = {
        "wallSeconds": 90,
        "memoryMb": 128,
        "cpus": 1,
        "processes": 64,
        "outputKb": 1024,
        "workspaceMb": 64,
    }
    created = stack.create(spec)
    assert created.status == 200, created.body
    sweep_id = created.body["id"]
    assert created.body["spec"]["limits"] == effective
    assert stack.http("GET", f"/v1/sweeps/{sweep_id}").body["spec"]["limits"] == effective
    listed = stack.http("GET", "/v1/sweeps?pageSize=100").body["sweeps"]
    assert [s["spec"]["limits"] for s in listed if s["id"] == sweep_id] == [effective]
    cancelled = stack.http("POST", f"/v1/sweeps/{sweep_id}:cancel", b"{}")
    assert cancelled.body["spec"]["limits"] == effective
    # Nothing given: every default shown, as the trial gets them.
    bare = stack.create({"task": "defaults", "script": "print('{}')"}).body["spec"]
    assert bare["limits"] == {**effective, "wallSeconds": 60, "memoryMb": 256}


def test_list_pages_through_every_sweep_newest_first(make_stack: StackFactory) -> None:
    stack = make_stack(runners=1)
    ids = [stack.create({"task": f"s{i}", "script": "print('{}')"}).body["id"] for i in range(5)]
    seen, token = [], ""
    while True:
        reply = stack.http("GET", f"/v1/sweeps?pageSize=2&pageToken={token}")
        assert reply.status == 200, reply.body
        assert len(reply.body["sweeps"]) <= 2
        assert all("trials" not in s or not s["trials"] for s in reply.body["sweeps"])
        seen += [s["id"] for s in reply.body["sweeps"]]
        token = reply.body["nextPageToken"]
        if not token:
            break
    assert seen == ids[::-1]
    assert violations(stack.http("GET", "/v1/sweeps?pageSize=101")) == {
        "pageSize": "must be 1 to 100 (0: 20)"
    }
    assert "pageToken" in violations(stack.http("GET", "/v1/sweeps?pageToken=garbage"))


def test_list_trials_pages_a_sweep_through_the_gateway(stack: RunningStack) -> None:
    sweep = stack.create(
        {
            "task": "paged",
            "script": ECHO,
            "parameters": {"grid": {"x": [3, 1, 2, 5, 4]}},
            "objective": {"metric": "score", "goal": "maximize"},
        }
    ).body
    route = f"/v1/sweeps/{sweep['id']}/trials"
    wait_until(lambda: stack.http("GET", f"/v1/sweeps/{sweep['id']}").body["state"] == "done")
    seen, token = [], ""
    while True:
        reply = stack.http("GET", f"{route}?pageSize=2&orderBy=objective&pageToken={token}")
        assert reply.status == 200, reply.body
        assert reply.body["totalSize"] == 5
        seen += [t["params"]["x"] for t in reply.body["trials"]]
        token = reply.body["nextPageToken"]
        if not token:
            break
    assert seen == [5, 4, 3, 2, 1]
    finished = stack.http("GET", f"{route}?state=finished&outcome=succeeded").body
    assert [t["index"] for t in finished["trials"]] == [0, 1, 2, 3, 4]
    assert violations(stack.http("GET", f"{route}?pageSize=1001")) == {
        "pageSize": "must be 1 to 1000 (0: 100)"
    }
    assert "pageToken" in violations(stack.http("GET", f"{route}?pageToken=garbage"))
    assert "orderBy" in violations(stack.http("GET", f"{route}?orderBy=loss"))
    assert "state" in violations(stack.http("GET", f"{route}?state=done"))
    assert stack.http("GET", route, token=None).status == 401
    assert stack.http("GET", route, token="wrong").status == 401
    assert stack.http("GET", "/v1/sweeps/no-such-sweep/trials").status == 404


def test_unknown_sweeps_and_trials_are_404(stack: RunningStack) -> None:
    assert stack.http("GET", "/v1/sweeps/nope").status == 404
    sweep_id = stack.create({"task": "t", "script": "print('{}')"}).body["id"]
    assert stack.http("GET", f"/v1/sweeps/{sweep_id}/trials/5/logs").status == 404
    assert stack.http("GET", f"/v1/sweeps/{sweep_id}/trials/5").status == 404
    assert stack.http("GET", f"/v1/sweeps/{sweep_id}/trials/0/artifacts/none.txt").status == 404


LOGS_AND_FILES = """\
import json, os, sys
import prism_trial
prism_trial.report(step=1, loss=0.7)
print("to stdout")
print("to stderr", file=sys.stderr)
os.makedirs("/workspace/output/plots", exist_ok=True)
with open("/workspace/output/model.txt", "w") as f:
    f.write("weights")
with open("/workspace/output/plots/loss.csv", "w") as f:
    f.write("step,loss\\n1,0.5\\n")
with open("/workspace/result.json", "w") as f:
    json.dump({"loss": 0.5}, f)
"""


def test_logs_and_artifacts_per_trial(stack: RunningStack) -> None:
    sweep = stack.finished(stack.create({"task": "files", "script": LOGS_AND_FILES}).body["id"])
    [trial] = sweep["trials"]
    assert trial["outcome"] == "succeeded", trial
    assert trial["metrics"] == {"loss": 0.5}
    assert trial["peakMemoryBytes"] and int(trial["peakMemoryBytes"]) > 0
    base = f"/v1/sweeps/{sweep['id']}/trials/0"
    assert stack.http("GET", base).body == {**trial, "abridged": False}
    logs = stack.http("GET", f"{base}/logs").body
    assert logs["stdout"] == 'PRISM_METRIC {"step":1,"loss":0.7}\nto stdout\n'
    assert logs["stderr"] == "to stderr\n"
    metrics = stack.orchestrator_query(
        "SELECT data FROM event WHERE sweep_id = ? AND kind = 'metric'", sweep["id"]
    )
    assert [json.loads(data) for (data,) in metrics] == [{"values": {"step": 1, "loss": 0.7}}]
    assert logs["truncated"] is False
    listed = stack.http("GET", f"{base}/artifacts").body
    assert {a["name"]: int(a["sizeBytes"]) for a in listed["artifacts"]} == {
        "model.txt": 7,
        "plots/loss.csv": 16,
    }
    assert {a["name"] for a in trial["artifacts"]} == {"model.txt", "plots/loss.csv"}
    raw = stack.raw("GET", f"{base}/artifacts/plots/loss.csv")
    assert raw == (200, "application/octet-stream", b"step,loss\n1,0.5\n")


def test_limits_reach_the_sandbox(stack: RunningStack) -> None:
    spec = {
        "task": "limits",
        "script": "import time\ntime.sleep(30)",
        "limits": {"wallSeconds": 1},
    }
    sweep = stack.finished(stack.create(spec).body["id"])
    [trial] = sweep["trials"]
    assert trial["outcome"] == "timed_out"
    assert trial["durationSeconds"] < 10


CLOCK = """\
import json, time
start = time.time()
time.sleep(1.0)
print(json.dumps({"start": start, "end": time.time()}))
"""


def most_at_once(trials: list[dict[str, Any]]) -> int:
    spans = [(t["metrics"]["start"], t["metrics"]["end"]) for t in trials]
    return max(sum(1 for s, e in spans if s <= moment < e) for moment, _ in spans)


def test_max_parallel_holds(stack: RunningStack) -> None:
    spec = {
        "task": "two at a time",
        "script": CLOCK,
        "maxParallel": 2,
        "parameters": {"list": [{"i": i} for i in range(6)]},
    }
    sweep = stack.finished(stack.create(spec).body["id"])
    assert all(t["outcome"] == "succeeded" for t in sweep["trials"])
    assert most_at_once(sweep["trials"]) == 2


def test_runner_slots_hold(make_stack: StackFactory) -> None:
    stack = make_stack(runners=2, env={"PRISM_RUNNER_SLOTS": "1"})
    spec = {
        "task": "one per runner",
        "script": CLOCK,
        "parameters": {"list": [{"i": i} for i in range(4)]},
    }
    sweep = stack.finished(stack.create(spec).body["id"])
    assert all(t["outcome"] == "succeeded" for t in sweep["trials"])
    assert most_at_once(sweep["trials"]) == 2
    for runner in stack.layout.runners:
        mine = [t for t in sweep["trials"] if t["runner"] == runner]
        assert mine and most_at_once(mine) == 1


def test_infrastructure_failures_are_retried(make_stack: StackFactory) -> None:
    stack = make_stack(runners=1)
    [runner] = stack.layout.runners
    spec = {
        "task": "survive a runner",
        "script": "import time\ntime.sleep(3)\nprint('{\"ok\": 1}')",
        "retries": 1,
    }
    sweep_id = stack.create(spec).body["id"]
    wait_until(lambda: stack.executions(), what="the trial to start")
    # The runner dies mid-trial; restarted, it reports the trial as a
    # sandbox_error, which the sweep's retry turns into a second execution.
    stack.stack.kill(runner)
    stack.stack.start(runner)
    stack.stack.wait_ready(runner)
    sweep = stack.finished(sweep_id)
    [trial] = sweep["trials"]
    assert (trial["outcome"], trial["attempts"]) == ("succeeded", 2), trial
    assert trial["metrics"] == {"ok": 1}
    assert stack.executions() == {f"{sweep_id}/0": 1, f"{sweep_id}/0@2": 1}


def test_requirements_through_the_api(make_stack: StackFactory, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(
        wheels, "prism-api-probe", "2.5", {"prism_api_probe.py": "VALUE = 'from a wheel'\n"}
    )
    stack = make_stack(
        runners=1, env={"PRISM_PIP_FIND_LINKS": str(wheels), "PRISM_PIP_NO_INDEX": "1"}
    )
    script = (
        "import json, os, prism_api_probe\n"
        "print(json.dumps({'value': prism_api_probe.VALUE, 'net': os.listdir('/sys/class/net')}))"
    )
    spec = {"task": "deps", "script": script, "requirements": ["Prism_API_Probe==2.5"]}
    sweep = stack.finished(stack.create(spec).body["id"], timeout=300)
    [trial] = sweep["trials"]
    assert trial["outcome"] == "succeeded", trial
    assert trial["metrics"] == {"value": "from a wheel", "net": ["lo"]}
    assert sweep["spec"]["requirements"] == ["prism-api-probe==2.5"]

    missing = {
        "task": "no such",
        "script": "print(1)",
        "requirements": ["prism-absent"],
        "retries": 2,
    }
    sweep = stack.finished(stack.create(missing).body["id"], timeout=300)
    [trial] = sweep["trials"]
    assert (trial["outcome"], trial["attempts"]) == ("failed", 1), trial
    assert "prism-absent" in trial["reason"]


def test_the_largest_artifact_downloads_whole(stack: RunningStack) -> None:
    script = (
        "import os\n"
        "with open('/workspace/output/big.bin', 'wb') as f:\n"
        "    f.write(bytes(range(256)) * (4 * 2**20 // 256))\n"
    )
    sweep = stack.finished(stack.create({"task": "big", "script": script}).body["id"])
    [trial] = sweep["trials"]
    assert trial["outcome"] == "succeeded", trial
    status, kind, data = stack.raw("GET", f"/v1/sweeps/{sweep['id']}/trials/0/artifacts/big.bin")
    assert (status, kind, len(data)) == (200, "application/octet-stream", 4 * 2**20)
    assert data == bytes(range(256)) * (4 * 2**20 // 256)
