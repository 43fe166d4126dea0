"""The stack on Docker Swarm, deployed from compose.yaml by prism.swarm (what `make
swarm-up`, `swarm-scale` and `swarm-down` run): a sweep through the published gateway
while the runners are scaled up and down, every trial recorded exactly once, the metrics
endpoints scraped from the stack's own network, and everything it made removed."""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from prism.stack import free_ports
from prism.swarm import Deployment, docker, down, scale, swarm_state, up
from sandbox.container import OWNER_LABEL
from tests.conftest import wait_until

# A trial takes a few seconds, so the sweep is still running while the runners change.
SLOW = """import json, os, time
p = json.loads(os.environ["PRISM_PARAMS"])
time.sleep(5)
print(json.dumps({"loss": p["i"]}))
"""
TRIALS = 24


class Api:
    def __init__(self, deployment: Deployment) -> None:
        self.base = f"http://127.0.0.1:{deployment.port}"
        self.token = deployment.api_token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.load(reply)

    def events(self, sweep_id: str) -> list[dict[str, Any]]:
        """Every event so far (the stream's blocks, read to the final one)."""
        request = urllib.request.Request(
            f"{self.base}/v1/sweeps/{sweep_id}/events",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            text = reply.read().decode()
        return [
            json.loads(line.removeprefix("data: "))
            for line in text.splitlines()
            if line.startswith("data: ")
        ]


@pytest.fixture(scope="module")
def deployment(
    services_image: str, sandbox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    was = swarm_state()
    made = Deployment(
        stack=f"pt{secrets.token_hex(3)}",
        data_dir=tmp_path_factory.mktemp("swarm"),
        port=free_ports(1)[0],
        settings={
            "PRISM_SERVICES_IMAGE": services_image,
            "PRISM_SANDBOX_IMAGE": sandbox_image,
            "PRISM_RUNNER_SLOTS": "2",
            # Shorter than a trial: a runner stopped mid-trial hands it back.
            "PRISM_RUNNER_DRAIN_SECONDS": "1",
        },
    )
    try:
        up(made, runners=2)
        yield made
    finally:
        down(made, volumes=True)
    # Nothing of it is left, and the engine is in the swarm it was in before.
    label = f"label=com.docker.stack.namespace={made.stack}"
    for kind in ("ps -a", "network ls", "volume ls"):
        assert docker(*kind.split(), "-q", "--filter", label).split() == [], kind
    owners = docker("ps", "-a", "--filter", f"label={OWNER_LABEL}", "--format", "{{.Labels}}")
    assert f"{OWNER_LABEL}={made.stack}_" not in owners, "a runner's sandbox left behind"
    assert swarm_state() == was


def metric(body: str, name: str) -> float:
    """A sample's value in a Prometheus text body."""
    [value] = [line.split()[-1] for line in body.splitlines() if line.startswith(name + " ")]
    return float(value)


def scrape(deployment: Deployment, image: str, urls: list[str]) -> dict[str, str]:
    """Each URL's body, fetched from a one-off container on the stack's internal network
    (the metrics are served there only), runner names resolved to every task."""
    code = (
        "import json, socket, sys, urllib.request\n"
        "out = {}\n"
        "for url in json.loads(sys.argv[1]):\n"
        "    if 'tasks.runner' in url:\n"
        "        ips = sorted({i[4][0] for i in socket.getaddrinfo('tasks.runner', 9111)})\n"
        "        for ip in ips:\n"
        "            u = url.replace('tasks.runner', ip)\n"
        "            out[u] = urllib.request.urlopen(u, timeout=10).read().decode()\n"
        "    else:\n"
        "        out[url] = urllib.request.urlopen(url, timeout=10).read().decode()\n"
        "print(json.dumps(out))\n"
    )
    output = docker(
        "run", "--rm", "--network", f"{deployment.stack}_internal", image,
        "python3", "-c", code, json.dumps(urls),
    )  # fmt: skip
    return dict(json.loads(output))


def finished(api: Api, sweep_id: str) -> dict[str, Any] | None:
    sweep: dict[str, Any] = api.call("GET", f"/v1/sweeps/{sweep_id}")
    return sweep if sweep["state"] != "running" else None


def test_a_sweep_survives_scaling_with_every_trial_recorded_once(
    deployment: Deployment, services_image: str
) -> None:
    api = Api(deployment)
    spec = {
        "task": "scaled",
        "script": SLOW,
        "parameters": {"list": [{"i": i} for i in range(TRIALS)]},
        "maxParallel": 64,
    }
    sweep_id = api.call("POST", "/v1/sweeps", spec)["id"]

    def runners_used() -> set[str]:
        trials = api.call("GET", f"/v1/sweeps/{sweep_id}")["trials"]
        return {t["runner"] for t in trials if t.get("runner")}

    wait_until(lambda: len(runners_used()) == 2, timeout=60)
    first = runners_used()
    # Up: the new replicas are found and given trials (the README's figure is printed
    # here; the wait is generous, since this machine may be busy).
    scale(deployment, 4)
    started = time.monotonic()
    wait_until(lambda: len(runners_used() - first) == 2, timeout=60)
    print(f"new runners had trials {time.monotonic() - started:.1f} s after scaling up")
    # Down while trials run: the stopped runners finish or hand back what they hold.
    scale(deployment, 2)
    sweep = wait_until(lambda: finished(api, sweep_id), timeout=240, what="the sweep's end")
    assert sweep["state"] == "done"
    assert [t["outcome"] for t in sweep["trials"]] == ["succeeded"] * TRIALS
    assert sorted(t["metrics"]["loss"] for t in sweep["trials"]) == list(range(TRIALS))

    events = api.events(sweep_id)
    results = Counter(e["trialIndex"] for e in events if e["kind"] == "trial_finished")
    assert results == Counter(range(TRIALS)), "one result per trial"
    # Scaled down mid-trial, the stopped runners handed their running trials back: each
    # ran again elsewhere as the trial's next execution, and still counts once.
    returned = [e for e in events if e["kind"] == "trial_requeued"]
    assert returned, "no trial was handed back on scaling down"
    for event in returned:
        assert "handed back" in event["data"]["reason"] or "draining" in event["data"]["reason"]
    again = {e["trialIndex"] for e in returned}
    attempts = {t["index"]: t["attempts"] for t in sweep["trials"]}
    assert all(attempts[i] >= 2 for i in again)
    print(
        f"{len(returned)} executions handed back on scaling down; "
        f"trials per runner: {Counter(t['runner'] for t in sweep['trials'])}"
    )

    # The metrics, from the stack's own network.
    bodies = scrape(
        deployment,
        services_image,
        [
            "http://orchestrator:9101/metrics",
            "http://tasks.runner:9111/metrics",
            "http://gateway:9102/stats/prometheus",
        ],
    )
    orchestrator = bodies.pop("http://orchestrator:9101/metrics")
    gateway = bodies.pop("http://gateway:9102/stats/prometheus")
    assert metric(orchestrator, 'prism_trials_finished_total{outcome="succeeded"}') == TRIALS
    assert metric(orchestrator, "prism_dispatch_latency_seconds_count") >= TRIALS
    assert metric(orchestrator, "prism_queue_depth") == 0
    assert len(bodies) == 2, "the runners left"
    for runner in bodies.values():
        assert metric(runner, "prism_runner_slots") == 2
    assert "envoy_http_downstream_rq_total" in gateway


def test_the_published_gateway_is_closed_without_a_token(deployment: Deployment) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{deployment.port}/v1/sweeps")
    try:
        urllib.request.urlopen(request, timeout=10)
        status = 200
    except urllib.error.HTTPError as error:
        status = error.code
    assert status == 401
