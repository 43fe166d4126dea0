"""Every service's metrics scraped over HTTP from a real stack, as Prometheus would: a small
sweep is counted by the orchestrator and the runners, and the gateway's metrics listener
serves Envoy's statistics and no other part of its admin API."""

from __future__ import annotations

import http.client
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prism.stack import GATEWAY, ORCHESTRATOR
from tests.conftest import RunningStack

TRIALS = 4
SCRIPT = (
    "import json, os\n"
    "p = json.loads(os.environ['PRISM_PARAMS'])\n"
    "print('PRISM_METRIC ' + json.dumps({'step': 0, 'x': p['x']}))\n"
    "print(json.dumps({'x': p['x']}))\n"
)


def scrape(address: str, path: str = "/metrics") -> dict[tuple[str, tuple[Any, ...]], float]:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[Any, ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def runners_total(stack: RunningStack, name: str, **labels: str) -> float:
    total = 0.0
    for runner in stack.layout.runners:
        address = stack.layout.metrics_address(runner)
        assert address is not None
        total += value(scrape(address), name, **labels)
    return total


def test_a_sweep_is_counted_by_every_service(stack: RunningStack) -> None:
    orchestrator = stack.layout.metrics_address(ORCHESTRATOR)
    assert orchestrator is not None
    before = scrape(orchestrator)
    ran_before = runners_total(stack, "prism_runner_trials_finished_total", outcome="succeeded")
    starts_before = runners_total(stack, "prism_runner_container_start_seconds_count")

    reply = stack.create(
        {
            "task": "metrics",
            "script": SCRIPT,
            "parameters": {"grid": {"x": list(range(TRIALS))}},
        }
    )
    assert reply.status == 200, reply.body
    sweep = stack.finished(reply.body["id"])
    assert sweep["state"] == "done"

    after = scrape(orchestrator)
    succeeded = "prism_trials_finished_total"
    assert value(after, succeeded, outcome="succeeded") - value(
        before, succeeded, outcome="succeeded"
    ) == pytest.approx(TRIALS)
    assert (
        value(after, "prism_sweeps", state="done")
        >= value(before, "prism_sweeps", state="done") + 1
    )
    for name in (
        "prism_dispatch_latency_seconds_count",
        "prism_trial_metrics_recorded_total",
    ):
        assert value(after, name) - value(before, name) >= TRIALS, name
    assert value(after, "prism_trial_duration_seconds_count", outcome="succeeded") - value(
        before, "prism_trial_duration_seconds_count", outcome="succeeded"
    ) == pytest.approx(TRIALS)
    for runner in stack.layout.runners:
        assert value(after, "prism_runner_up", runner=runner) == 1
    assert value(after, "process_resident_memory_bytes") > 0

    assert runners_total(
        stack, "prism_runner_trials_finished_total", outcome="succeeded"
    ) - ran_before == pytest.approx(TRIALS)
    assert (
        runners_total(stack, "prism_runner_container_start_seconds_count") - starts_before >= TRIALS
    )
    assert runners_total(stack, "prism_runner_slots") == 4 * len(stack.layout.runners)


def request(address: str, method: str, path: str) -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def test_the_gateway_metrics_listener_serves_envoys_stats_alone(stack: RunningStack) -> None:
    address = stack.layout.metrics_address(GATEWAY)
    assert address is not None
    stats = scrape(address, "/stats/prometheus")
    # Envoy's own statistics, the public listener's requests among them.
    assert any(
        name == "envoy_http_downstream_rq_total"
        and ("envoy_http_conn_manager_prefix", "public") in labels
        for name, labels in stats
    )
    assert value(stats, "envoy_server_live") == 1
    # Nothing else of the admin API is reachable from it, whatever the method.
    for method, path in (
        ("POST", "/quitquitquit"),
        ("GET", "/quitquitquit"),
        ("GET", "/config_dump"),
        ("POST", "/logging?level=trace"),
        ("POST", "/healthcheck/fail"),
        ("POST", "/drain_listeners"),
        ("GET", "/stats"),
        ("GET", "/"),
        ("GET", "/stats/prometheus?filter=.*"),
        ("GET", "/stats/prometheus/../config_dump"),
        ("POST", "/stats/prometheus"),
        ("HEAD", "/stats/prometheus"),
    ):
        status, body = request(address, method, path)
        assert status == 404, (method, path, status, body[:200])
    # Envoy is still up and serving after all that.
    assert stack.http("GET", "/healthz", token=None).status == 200
    assert value(scrape(address, "/stats/prometheus"), "envoy_server_live") == 1


def test_the_public_listener_serves_no_stats(stack: RunningStack) -> None:
    for token in ("default", None):
        reply = stack.http("GET", "/stats/prometheus", token=token)
        assert reply.status in (401, 404), reply.status
