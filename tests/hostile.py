"""What the hostile end-to-end suites share: a batch of attack sweeps run at once on a
real stack (gateway, orchestrator, one runner), and the checks every attack must pass
whatever its trial did: its sweep answers on every public route and its watch ends
with a final event; the runner's stream to the orchestrator never dropped; the
services still serve; an ordinary sweep on the same runner still succeeds.

The stream check reads the orchestrator's own JSON log: a dropped stream is logged as
"runner stream closed" (or "runner silent; closing its stream", "runner link failed"),
and every (re)opened one as "runner connected", so one connection per runner over the
whole module means it never dropped. Errors the services log as unexpected ("a call
failed", "recording a result failed", ...) are failures of the trust boundary too.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prism.healthcheck import serving
from prism.stack import ORCHESTRATOR
from tests.conftest import RunningStack, start_stack, stop_stack

MiB = 2**20
# What may never reach the API in a name, a reason or a skipped-artifact note: control
# characters, and those that reorder or hide text or break a line (bidi controls,
# zero-width characters, line and paragraph separators, the byte order mark).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
STREAM_DROPS = ("runner stream closed", "runner silent; closing its stream", "runner link failed")
# What the services log when something unexpected failed (prism.logs.unexpected and
# the loops' own exception logs): none of it may be a trial's doing.
UNEXPECTED = (
    "a call failed",
    "a watch failed",
    "recording a result failed",
    "recording a fallback result failed",
    "recording metrics failed",
    "runner link failed",
    "dispatch failed; retrying",
    "marking the trials of a lost runner failed",
    "trial execution failed",
    "a command failed",
    "a metric callback failed",
    "reading the orchestrator's commands failed",
)
ORDINARY = """\
import json, time
for step in range(3):
    print("PRISM_METRIC " + json.dumps({"step": step}), flush=True)
    time.sleep(0.1)
print(json.dumps({"ok": True}))
"""


@dataclass(frozen=True)
class Attack:
    """One sweep of the batch: a script, run once, or once per parameter set."""

    script: str
    limits: Mapping[str, float] = field(default_factory=dict)
    params: tuple[Mapping[str, Any], ...] = ()
    # More fields of the sweep spec (retries, say).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def spec(self, name: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"task": f"hostile {name}", "script": self.script, **self.extra}
        if self.limits:
            spec["limits"] = dict(self.limits)
        if self.params:
            spec["parameters"] = {"list": [dict(p) for p in self.params]}
        return spec


@dataclass
class Batch:
    """The attack sweeps of one module, finished, and the bystander sweep that ran
    beside them on the same runner."""

    stack: RunningStack
    sweeps: dict[str, dict[str, Any]]
    bystander: dict[str, Any]
    bystander_seconds: float

    @property
    def runner(self) -> str:
        return next(iter(self.stack.layout.runners))

    def trial(self, name: str, index: int = 0) -> dict[str, Any]:
        return dict(self.sweeps[name]["trials"][index])

    def base(self, name: str, index: int = 0) -> str:
        return f"/v1/sweeps/{self.sweeps[name]['id']}/trials/{index}"

    def logs(self, name: str, index: int = 0) -> dict[str, Any]:
        reply = self.stack.http("GET", f"{self.base(name, index)}/logs")
        assert reply.status == 200, reply.body
        return dict(reply.body)

    def artifacts(self, name: str, index: int = 0) -> dict[str, Any]:
        reply = self.stack.http("GET", f"{self.base(name, index)}/artifacts")
        assert reply.status == 200, reply.body
        return dict(reply.body)

    def download(self, name: str, artifact: str, index: int = 0) -> tuple[int, bytes]:
        return get(self.stack, f"{self.base(name, index)}/artifacts/{quoted(artifact)}")


def run_batch(
    root: Path,
    image: str,
    attacks: Mapping[str, Attack],
    *,
    slots: int = 12,
    timeout: float = 240,
) -> tuple[RunningStack, Batch]:
    """Start a stack (one runner with `slots`), create every attack's sweep at once and
    then an ordinary sweep, and wait for all of them to finish. The caller stops the
    stack (`stop_stack`) whatever happens."""
    stack = start_stack(root, image, runners=1, env={"PRISM_RUNNER_SLOTS": str(slots)})
    try:
        ids = {name: create(stack, attack.spec(name)) for name, attack in attacks.items()}
        began = time.monotonic()
        bystander_id = create(stack, {"task": "bystander", "script": ORDINARY})
        bystander = stack.finished(bystander_id, timeout=timeout)
        bystander_seconds = time.monotonic() - began
        print(f"bystander sweep beside the attacks: {bystander_seconds:.1f} s")
        sweeps = {name: stack.finished(i, timeout=timeout) for name, i in ids.items()}
        for name, sweep in sweeps.items():
            for trial in sweep["trials"]:
                print(
                    f"{name:28} {trial['outcome']:13} {trial.get('durationSeconds', 0):6.2f} s  "
                    f"{trial['reason'][:100]!r}"
                )
    except BaseException:
        stop_stack(stack)
        raise
    return stack, Batch(stack, sweeps, bystander, bystander_seconds)


def create(stack: RunningStack, spec: Mapping[str, Any]) -> str:
    reply = stack.create(spec)
    assert reply.status == 200, reply.body
    return str(reply.body["id"])


def quoted(name: str) -> str:
    """An artifact name in a URL path the way RFC 3986 clients write it."""
    return urllib.parse.quote(name, safe="/")


def get(stack: RunningStack, path: str) -> tuple[int, bytes]:
    """GET `path` through the gateway exactly as given (no re-quoting); status and body."""
    connection = http.client.HTTPConnection(stack.gateway, timeout=120)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {stack.token}"})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def watch(stack: RunningStack, sweep_id: str, after: int = 0) -> list[dict[str, Any]]:
    """The sweep's events over HTTP (server-sent events) up to the final one; raises if
    the stream ends without it."""
    request = urllib.request.Request(
        f"http://{stack.gateway}/v1/sweeps/{sweep_id}/events?afterSeq={after}",
        headers={"Authorization": f"Bearer {stack.token}"},
    )
    events: list[dict[str, Any]] = []
    with urllib.request.urlopen(request, timeout=180) as reply:
        assert reply.status == 200
        for raw in reply:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            events.append(json.loads(line.removeprefix("data:")))
            if events[-1]["final"]:
                return events
    raise AssertionError(f"the watch of {sweep_id} ended without a final event: {events[-3:]}")


def metric_values(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"]["values"] for e in events if e["kind"] == "metric"]


def assert_readable(
    stack: RunningStack, sweep: Mapping[str, Any], *, downloads: bool = True
) -> list[dict[str, Any]]:
    """Every public route answers for this finished sweep, without a control character
    in what a trial could name, and (with `downloads`) every listed artifact downloads
    whole; returns its events (the watch, to its final event)."""
    sweep_id = sweep["id"]
    reply = stack.http("GET", f"/v1/sweeps/{sweep_id}")
    assert reply.status == 200, reply.body
    assert reply.body["state"] in ("done", "error"), reply.body["state"]
    trials = reply.body["trials"]
    assert [t["state"] for t in trials] == ["finished"] * len(trials)
    status = stack.http("GET", f"/sweeps/{sweep_id}")
    assert status.status == 200, status.body
    assert status.body["status"] == reply.body["state"]
    listed = stack.http("GET", "/v1/sweeps?pageSize=100")
    assert listed.status == 200, listed.body
    assert sweep_id in {s["id"] for s in listed.body["sweeps"]}
    for trial in trials:
        assert trial["outcome"], trial
        assert not CONTROL.search(trial["reason"]), trial["reason"]
        base = f"/v1/sweeps/{sweep_id}/trials/{trial['index']}"
        logs = stack.http("GET", f"{base}/logs")
        assert logs.status == 200, logs.body
        artifacts = stack.http("GET", f"{base}/artifacts")
        assert artifacts.status == 200, artifacts.body
        for note in artifacts.body["skipped"]:
            assert not CONTROL.search(note), note
        for artifact in artifacts.body["artifacts"]:
            assert not CONTROL.search(artifact["name"]), artifact
            if not downloads:
                continue
            code, data = get(stack, f"{base}/artifacts/{quoted(artifact['name'])}")
            assert (code, len(data)) == (200, int(artifact["sizeBytes"])), artifact["name"]
    events = watch(stack, sweep_id)
    real = [e for e in events if e["kind"] not in ("heartbeat", "end")]
    assert [e["seq"] for e in real] == list(range(1, len(real) + 1))
    assert (real[-1]["kind"], real[-1]["sweepState"]) == ("sweep_finished", reply.body["state"])
    return events


def log_entries(stack: RunningStack, service: str) -> list[dict[str, Any]]:
    """The service's JSON log lines (anything else in the file, such as a library's
    own text on stderr, is left out)."""
    entries = []
    for line in stack.layout.log_file(service).read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def unexpected_errors(stack: RunningStack, service: str) -> list[dict[str, Any]]:
    return [e for e in log_entries(stack, service) if e.get("message") in UNEXPECTED]


def assert_survived(batch: Batch, *, unexpected: bool = True) -> None:
    """The runner's stream never dropped, (with `unexpected`) nothing failed
    unexpectedly, every service serves, and an ordinary sweep on the same runner
    succeeds now."""
    stack, runner = batch.stack, batch.runner
    orchestrator = log_entries(stack, ORCHESTRATOR)
    drops = [e for e in orchestrator if e.get("message") in STREAM_DROPS]
    assert drops == []
    connects = [
        e for e in orchestrator if e.get("message") == "runner connected" and e["runner"] == runner
    ]
    assert len(connects) == 1, connects
    for service in (ORCHESTRATOR, runner) if unexpected else ():
        assert unexpected_errors(stack, service) == []
    assert serving(stack.layout.address(ORCHESTRATOR))
    assert serving(stack.layout.address(runner))
    assert get(stack, "/healthz")[0] == 200

    assert [t["runner"] for t in batch.bystander["trials"]] == [runner]
    assert [t["outcome"] for t in batch.bystander["trials"]] == ["succeeded"]
    after = stack.finished(create(stack, {"task": "after the attacks", "script": ORDINARY}))
    [trial] = after["trials"]
    assert (trial["outcome"], trial["runner"], trial["metrics"]) == (
        "succeeded",
        runner,
        {"ok": True},
    )
    assert metric_values(watch(stack, after["id"])) == [{"step": s} for s in range(3)]


def module_batch(
    root: Path, image: str, attacks: Mapping[str, Attack], **kwargs: Any
) -> Iterator[Batch]:
    """A module fixture's body: the batch, and its stack stopped afterwards."""
    stack, batch = run_batch(root, image, attacks, **kwargs)
    try:
        yield batch
    finally:
        stop_stack(stack)
