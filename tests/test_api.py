"""The Prism-compatible HTTP API through the gateway, every route and status code."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import RunningStack, StackFactory, wait_until

BEST_LR = {"runner-a": 0.0001, "runner-b": 0.1, "runner-c": 0.1}


def assert_error(reply, status: int, mentions: str = "") -> None:  # type: ignore[no-untyped-def]
    assert reply.status == status, reply.body
    assert reply.headers.get("content-type", "").startswith("application/json")
    assert isinstance(reply.body, dict) and reply.body.get("message"), reply.body
    assert mentions.lower() in reply.body["message"].lower()


def test_landing_document(stack: RunningStack) -> None:
    reply = stack.http("GET", "/")
    assert reply.status == 200
    assert reply.body["name"] == "prism"
    assert reply.body["description"]
    usage = reply.body["usage"]
    assert "POST /" in usage["start"] and "/sweeps/" in usage["poll"]
    assert "prism.v1.Orchestrator" in usage["api"]


def test_post_runs_the_default_sweep_synchronously(stack: RunningStack) -> None:
    reply = stack.post_task("find the best learning rate")
    assert reply.status == 200, reply.body
    uuid.UUID(reply.body["sweepId"])
    results = reply.body["results"]
    assert [r["runner"] for r in results] == list(BEST_LR)
    for result in results:
        assert result["status"] == "done"
        output = json.loads(result["output"])
        assert output["task"] == "find the best learning rate"
        assert output["best_lr"] == BEST_LR[result["runner"]]
        assert round(output["best_loss"], 6) == output["best_loss"]


def test_get_sweep_shows_the_finished_snapshot(stack: RunningStack) -> None:
    posted = stack.post_task("snapshot me")
    reply = stack.http("GET", f"/sweeps/{posted.body['sweepId']}")
    assert reply.status == 200
    assert reply.body == {
        "task": "snapshot me",
        "completed": posted.body["results"],
        "pending": [],
        "status": "done",
    }


# A well-formed id no sweep has (fixed: both test workers must collect the same tests).
@pytest.mark.parametrize(
    "sweep_id", ["0b6b3f52-9d8e-4c1a-a7f3-5e2d7c9b1a04", "not-a-uuid", "x" * 300]
)
def test_unknown_sweep_is_404(stack: RunningStack, sweep_id: str) -> None:
    assert_error(stack.http("GET", f"/sweeps/{sweep_id}"), 404, "no sweep")


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (b"", "task"),
        (b"not json", ""),
        (b"{", ""),
        (b"null", ""),
        (b"[]", ""),
        (b'["task"]', ""),
        (b'"task"', ""),
        (b"42", ""),
        (b"{}", "task"),
        (b'{"other": "x"}', "task"),
        (b'{"task": null}', "task"),
        (b'{"task": 5}', ""),
        (b'{"task": true}', ""),
        (b'{"task": ["a"]}', ""),
        (b'{"task": {"a": 1}}', ""),
        (b'{"task": ""}', "task"),
        (b'{"task": "   "}', "task"),
        (b'{"task": "\\u0000\\u0007\\n\\t\\u001b"}', "task"),
        (json.dumps({"task": "x" * 501}).encode(), "500"),
    ],
)
def test_invalid_bodies_are_400_json(stack: RunningStack, body: bytes, mentions: str) -> None:
    assert_error(stack.http("POST", "/", body), 400, mentions)


def test_exactly_500_characters_is_accepted_and_control_characters_stripped(
    stack: RunningStack,
) -> None:
    task = "y" * 250 + "\u0001\u0002\n" + "z" * 250  # 500 once stripped
    reply = stack.post_task(task)
    assert reply.status == 200, reply.body
    stripped = "y" * 250 + "z" * 250
    assert {json.loads(r["output"])["task"] for r in reply.body["results"]} == {stripped}
    assert stack.http("GET", f"/sweeps/{reply.body['sweepId']}").body["task"] == stripped


@pytest.mark.parametrize("token", [None, "wrong", ""])
@pytest.mark.parametrize(("method", "path"), [("GET", "/"), ("POST", "/"), ("GET", "/sweeps/x")])
def test_missing_or_wrong_token_is_401(
    stack: RunningStack, token: str | None, method: str, path: str
) -> None:
    body = b'{"task": "t"}' if method == "POST" else None
    reply = stack.http(method, path, body, token=token)
    assert_error(reply, 401)
    assert reply.headers.get("www-authenticate", "").startswith("Bearer")


def test_healthz_needs_no_token(stack: RunningStack) -> None:
    reply = stack.http("GET", "/healthz", token=None)
    assert reply.status == 200
    assert reply.body == {"status": "ok"}


def test_unknown_route_is_404_json(stack: RunningStack) -> None:
    assert_error(stack.http("GET", "/no/such/route"), 404)


FAILING = "import sys\nprint('half way', flush=True)\nraise RuntimeError('the runner broke')\n"
SILENT_FAIL = "import sys\nsys.exit(3)\n"


def test_a_failing_runner_is_an_error_result_not_a_500(make_stack: StackFactory) -> None:
    stack = make_stack(
        examples={"runner-x": FAILING},
        env={"PRISM_EXAMPLE_RUNNERS": "runner-a,runner-x,runner-c"},
    )
    reply = stack.post_task("partly broken")
    assert reply.status == 200, reply.body
    a, x, c = reply.body["results"]
    assert (a["status"], x["status"], c["status"]) == ("done", "error", "done")
    assert x["runner"] == "runner-x"
    assert x["output"].startswith("failed:")
    assert "RuntimeError: the runner broke" in x["output"]
    snapshot = stack.http("GET", f"/sweeps/{reply.body['sweepId']}").body
    assert snapshot["status"] == "done"
    assert snapshot["pending"] == []


def test_a_sweep_where_nothing_succeeds_ends_error(make_stack: StackFactory) -> None:
    stack = make_stack(
        examples={"bad-1": FAILING, "bad-2": SILENT_FAIL},
        env={"PRISM_EXAMPLE_RUNNERS": "bad-1,bad-2"},
    )
    reply = stack.post_task("all broken")
    assert reply.status == 200, reply.body
    assert [r["status"] for r in reply.body["results"]] == ["error", "error"]
    assert (
        "exit" in reply.body["results"][1]["output"] and "3" in reply.body["results"][1]["output"]
    )
    assert stack.http("GET", f"/sweeps/{reply.body['sweepId']}").body["status"] == "error"


def test_a_fourth_example_runner_fans_out_to_four(make_stack: StackFactory) -> None:
    four = (
        "import json, os\n"
        "task = json.loads(os.environ['PRISM_PARAMS'])['task']\n"
        "print(json.dumps({'task': task, 'best_lr': 0.5}))\n"
    )
    stack = make_stack(
        examples={"runner-d": four},
        env={"PRISM_EXAMPLE_RUNNERS": "runner-a,runner-b,runner-c,runner-d"},
    )
    reply = stack.post_task("four ways")
    assert reply.status == 200, reply.body
    assert [r["runner"] for r in reply.body["results"]] == [*BEST_LR, "runner-d"]
    assert json.loads(reply.body["results"][3]["output"])["best_lr"] == 0.5


def test_the_bearer_scheme_is_case_insensitive_end_to_end(stack: RunningStack) -> None:
    reply = stack.http("GET", "/", token=None, headers={"Authorization": f"bearer  {stack.token}"})
    assert reply.status == 200, reply.body
    assert reply.body["name"] == "prism"


def test_a_running_sweep_shows_its_pending_runners(make_stack: StackFactory) -> None:
    slow = "import time\ntime.sleep(30)\nprint('{}')\n"
    stack = make_stack(
        examples={"slow": slow},
        env={"PRISM_EXAMPLE_RUNNERS": "runner-a,slow", "PRISM_SYNC_WAIT_SECONDS": "3"},
    )
    reply = stack.post_task("half done")
    assert_error(reply, 504, "still running")
    [(sweep_id,)] = stack.orchestrator_query("SELECT id FROM sweep")
    assert sweep_id in reply.body["message"]
    # runner-a takes well under a second alone, longer on a loaded machine;
    # slow sleeps for 30 s.
    snapshot = wait_until(
        lambda: (body := stack.http("GET", f"/sweeps/{sweep_id}").body)["completed"] and body,
        timeout=25,
        what="runner-a to complete",
    )
    assert snapshot["status"] == "running"
    assert snapshot["pending"] == ["slow"]
    assert [r["runner"] for r in snapshot["completed"]] == ["runner-a"]


def test_every_state_change_is_an_event_in_sequence(stack: RunningStack) -> None:
    sweep_id = stack.post_task("audit me").body["sweepId"]
    events = stack.orchestrator_query(
        "SELECT seq, kind, trial_index FROM event WHERE sweep_id = ? ORDER BY seq", sweep_id
    )
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    kinds = [kind for _, kind, _ in events]
    assert kinds[0] == "sweep_created" and kinds[-1] == "sweep_finished"
    for trial in range(3):
        lifecycle = [kind for _, kind, index in events if index == trial]
        assert lifecycle == ["trial_queued", "trial_dispatched", "trial_started", "trial_finished"]
