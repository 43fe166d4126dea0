"""One trial's result that cannot be recorded ends that trial alone: the stream it came
on, its runner and every other sweep go on. Through a real stack: the stores refuse
a result the way a store may refuse anything (a full disk, a constraint, a bug), here
by a trigger the test adds to the real database files."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

from prism.stack import ORCHESTRATOR
from tests.conftest import RunningStack, StackFactory
from tests.test_watch import sse, until_final

WRITES = """
import json, os
name = json.loads(os.environ["PRISM_PARAMS"])["name"]
open(f"/workspace/output/{name}", "w").write("bytes")
print(json.dumps({"wrote": name}))
"""


def refuse(database: Path, table: str, name: str) -> None:
    with closing(sqlite3.connect(database)) as db:
        db.execute(
            f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
            f"WHEN NEW.name = '{name}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        db.commit()


def log_lines(stack: RunningStack, service: str, message: str) -> list[dict[str, object]]:
    lines = stack.layout.log_file(service).read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in entries if e.get("message") == message]


def test_a_result_a_store_refuses_ends_only_its_trial(make_stack: StackFactory) -> None:
    stack = make_stack(runners=1)
    [runner] = stack.layout.runners
    refuse(stack.layout.data_dir / "orchestrator.db", "artifact", "refused-by-orchestrator")
    refuse(stack.runner_db(runner), "artifact", "refused-by-runner")
    names = ["refused-by-orchestrator", "refused-by-runner", "fine"]
    poisoned = stack.create(
        {
            "task": "poison",
            "script": WRITES,
            "parameters": {"list": [{"name": name} for name in names]},
        }
    )
    other = stack.create(
        {
            "task": "bystander",
            "script": "print('{\"ok\": 1}')",
            "parameters": {"grid": {"i": [1, 2]}},
        }
    )
    assert poisoned.status == other.status == 200

    done = stack.finished(poisoned.body["id"])
    bystander = stack.finished(other.body["id"])

    trials = {t["params"]["name"]: t for t in done["trials"]}
    for name, who in (("refused-by-orchestrator", "orchestrator"), ("refused-by-runner", "runner")):
        assert trials[name]["outcome"] == "sandbox_error", trials[name]
        assert trials[name]["reason"].startswith(f"the {who} could not record the trial's result")
        assert "error id" in trials[name]["reason"]
    assert (trials["fine"]["outcome"], trials["fine"]["metrics"]) == (
        "succeeded",
        {"wrote": "fine"},
    )
    assert done["state"] == "done"
    assert bystander["state"] == "done"
    assert [t["outcome"] for t in bystander["trials"]] == ["succeeded", "succeeded"]
    # The runner's stream never dropped: one connection, no close.
    assert len(log_lines(stack, ORCHESTRATOR, "runner connected")) == 1
    assert log_lines(stack, ORCHESTRATOR, "runner stream closed") == []
    # Each refusal is one bounded log line with its error id.
    for service, count in ((ORCHESTRATOR, 1), (runner, 1)):
        failures = log_lines(stack, service, "recording a result failed")
        assert len(failures) == count, failures
        assert all(len(json.dumps(f)) < 2000 and f["error_id"] for f in failures)
    # And the sweep stays readable, its stream ending with its final event.
    assert until_final(sse(stack, poisoned.body["id"]))[-1]["sweepState"] == "done"


def test_a_damaged_store_answers_with_an_error_id_and_one_bounded_log_line(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(runners=1)
    sweep_id = stack.create({"task": "to be damaged", "script": "print(1)"}).body["id"]
    stack.finished(sweep_id)
    # What no version of Prism writes, only a bug or a damaged file: a spec that is not
    # JSON, and a table gone.
    with closing(sqlite3.connect(stack.layout.data_dir / "orchestrator.db")) as db:
        db.execute("UPDATE sweep SET spec_json = ? WHERE id = ?", ("{" + "x" * 10_000, sweep_id))
        db.execute("ALTER TABLE artifact RENAME TO artifact_gone")
        db.execute("ALTER TABLE event RENAME TO event_gone")
        db.commit()

    # What can still be shown is shown: the lists, and the sweep's own row.
    listed = stack.http("GET", "/v1/sweeps")
    assert listed.status == 200
    assert listed.body["sweeps"][0]["spec"]["task"] == "to be damaged"
    assert stack.http("GET", f"/sweeps/{sweep_id}").status == 200
    # What cannot is an error with an id, and no more.
    reply = stack.http("GET", f"/v1/sweeps/{sweep_id}/trials/0/artifacts")
    assert reply.status == 500
    message = reply.body["message"]
    error_id = message.removeprefix("internal error (error id ").partition(")")[0]
    assert message == f"internal error (error id {error_id}); the service's log has the details"
    assert "Error" not in json.dumps(reply.body)  # no class names
    logged = [
        e for e in log_lines(stack, ORCHESTRATOR, "a call failed") if e["error_id"] == error_id
    ]
    assert len(logged) == 1
    assert len(json.dumps(logged[0])) < 2000
    # A watch that fails still ends with a final event, which says so.
    [final] = list(sse(stack, sweep_id))
    assert (final["kind"], final["final"], final["sweepState"]) == ("error", True, "")
    assert final["data"]["message"].startswith("internal error (error id ")
