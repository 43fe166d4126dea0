"""The services' Prometheus metrics, in-process: the /metrics endpoint over real HTTP on a
loopback port, the orchestrator's metrics moving as a real Dispatcher and store drive a
real RunnerLink to a scripted runner (tests/unit/test_link.py), the runner's as the real
executor runs the fake sandbox (tests/fakes.py), and every name and label checked
against Prometheus's conventions."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.parser import text_string_to_metric_families

from orchestrator_svc import store
from orchestrator_svc.config import Settings
from orchestrator_svc.dispatch import Dispatcher
from orchestrator_svc.domain import PlannedTrial
from orchestrator_svc.metrics import OrchestratorMetrics
from orchestrator_svc.news import SweepNews
from prism import metrics as prism_metrics
from prism import runner_protocol as protocol
from prism.metrics import MetricsEndpoint, parse_address
from prism.sqlite import DbThread
from prism.stack import GATEWAY, ORCHESTRATOR, Layout, StackError
from prism.trial import Outcome
from prism.v1 import runner_pb2, runner_pb2_grpc, trial_pb2
from runner_svc import store as runner_store
from runner_svc.executor import TrialExecutor
from runner_svc.metrics import RunnerMetrics
from tests.fakes import FakeImages, FakeSandbox
from tests.unit.test_link import ScriptedRunner

T = TypeVar("T")
SCENARIO_SECONDS = 20.0


def run_async(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(SCENARIO_SECONDS):
            return await scenario()

    return asyncio.run(bounded())


async def until(predicate: Callable[[], Awaitable[bool]]) -> None:
    """Poll until `predicate` holds (the scenario's own timeout bounds it)."""
    while not await predicate():  # noqa: ASYNC110 - the state polled has no event of its own
        await asyncio.sleep(0.01)


async def http_get(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a raw request to 127.0.0.1:`port`; the status, headers and body answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def scrape(port: int, accept: str = "") -> Callable[[], Awaitable[dict[str, Any]]]:
    async def get() -> dict[str, Any]:
        extra = f"Accept: {accept}\r\n" if accept else ""
        status, _, body = await http_get(
            port, f"GET /metrics HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
        )
        assert status == 200, body
        return samples(body.decode())

    return get


def samples(text: str) -> dict[str, Any]:
    """{(sample name, sorted label items): value} of an exposition."""
    found: dict[Any, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# --- the endpoint -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def every_scrape_reads_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scrapes moments apart share one read in service; the tests here look at each."""
    monkeypatch.setattr(prism_metrics, "FRESH_SECONDS", 0.0)


def test_scrapes_together_share_one_read_and_connections_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prism_metrics, "FRESH_SECONDS", 60.0)
    reads: list[int] = []
    release = asyncio.Event()

    async def before() -> None:
        reads.append(1)
        await release.wait()

    async def scenario() -> tuple[list[int], bool]:
        endpoint = MetricsEndpoint(CollectorRegistry(), before_scrape=before)
        port = await endpoint.start("127.0.0.1", 0)
        try:
            request = b"GET /metrics HTTP/1.1\r\n\r\n"
            scrapes = [asyncio.create_task(http_get(port, request)) for _ in range(5)]
            while not reads:  # noqa: ASYNC110 - the endpoint's own state
                await asyncio.sleep(0.01)
            # Idle connections fill the endpoint; one more is closed at once.
            idle = [
                await asyncio.open_connection("127.0.0.1", port)
                for _ in range(prism_metrics.MAX_CONNECTIONS)
            ]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            try:
                refused = await reader.read() == b""
            except ConnectionResetError:
                refused = True
            writer.close()
            for _, idle_writer in idle:
                idle_writer.close()
            release.set()
            statuses = [(await scrape)[0] for scrape in scrapes]
            await http_get(port, request)  # moments later: the same read serves
            return statuses, refused
        finally:
            await endpoint.close()

    statuses, refused = run_async(scenario)
    assert statuses == [200] * 5 and reads == [1]
    assert refused


def test_the_endpoint_serves_its_registry_at_metrics_alone() -> None:
    registry = CollectorRegistry()
    from prometheus_client import Counter

    counter = Counter("prism_things", "Things.", registry=registry)
    scrapes: list[int] = []

    async def before() -> None:
        scrapes.append(1)
        counter.inc()

    async def scenario() -> list[tuple[int, dict[str, str], bytes]]:
        endpoint = MetricsEndpoint(registry, before_scrape=before)
        port = await endpoint.start("127.0.0.1", 0)
        try:
            return [
                await http_get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
                await http_get(port, b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
                await http_get(
                    port,
                    b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; "
                    b"version=1.0.0\r\n\r\n",
                ),
                await http_get(port, b"HEAD /metrics HTTP/1.1\r\n\r\n"),
                await http_get(port, b"GET / HTTP/1.1\r\n\r\n"),
                await http_get(port, b"GET /metricsx HTTP/1.1\r\n\r\n"),
                await http_get(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            ]
        finally:
            await endpoint.close()

    text, query, open_metrics, head, root, other, post = run_async(scenario)
    assert text[0] == 200 and text[1]["content-type"].startswith("text/plain; version=0.0.4")
    # Refreshed before each scrape: the first shows 1, the second 2.
    assert b"prism_things_total 1.0" in text[2]
    assert query[0] == 200 and b"prism_things_total 2.0" in query[2]
    assert open_metrics[1]["content-type"].startswith("application/openmetrics-text")
    assert open_metrics[2].endswith(b"# EOF\n")
    assert head[0] == 200 and head[2] == b"" and int(head[1]["content-length"]) > 0
    assert (root[0], other[0]) == (404, 404)
    assert post[0] == 405 and post[1]["allow"] == "GET, HEAD"
    # The refused requests rendered nothing.
    assert len(scrapes) == 4


def test_a_request_that_never_ends_its_headers_is_dropped() -> None:
    async def scenario() -> bytes:
        endpoint = MetricsEndpoint(CollectorRegistry())
        port = await endpoint.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000)
            await writer.drain()
            answer = await reader.read()
            writer.close()
            return answer
        finally:
            await endpoint.close()

    assert run_async(scenario) == b""


def test_addresses() -> None:
    assert parse_address("", variable="V") is None
    assert parse_address(" 127.0.0.1:9101 ", variable="V") == ("127.0.0.1", 9101)
    assert parse_address("[::1]:0", variable="V") == ("::1", 0)
    for bad in ("9101", "host:", ":9101", "host:99999", "host:x"):
        with pytest.raises(ValueError, match="PRISM_METRICS_ADDR"):
            parse_address(bad, variable="PRISM_METRICS_ADDR")


def test_services_in_one_process_keep_registries_of_their_own() -> None:
    first, second = OrchestratorMetrics(), OrchestratorMetrics()
    runners = RunnerMetrics(), RunnerMetrics()
    first.metrics_recorded.inc(3)
    runners[0].slots.set(4)
    assert second.registry.get_sample_value("prism_trial_metrics_recorded_total") == 0
    assert runners[1].registry.get_sample_value("prism_runner_slots") == 0


def test_a_taken_port_stops_the_start_naming_it() -> None:
    from prism.server import ListenError

    async def scenario() -> None:
        endpoint = MetricsEndpoint(CollectorRegistry())
        port = await endpoint.start("127.0.0.1", 0)
        try:
            with pytest.raises(ListenError, match=f"127.0.0.1:{port}"):
                await MetricsEndpoint(CollectorRegistry()).start("127.0.0.1", port)
        finally:
            await endpoint.close()

    run_async(scenario)


# --- the orchestrator's -------------------------------------------------------------------


def orchestrator_settings(tmp_path: Path, runner_port: int) -> Settings:
    return Settings(
        address="127.0.0.1:0",
        data_dir=tmp_path,
        api_token="api",
        runner_token="runner",
        runners=(("runner-1", f"127.0.0.1:{runner_port}"),),
        examples=(("example", "print(1)"),),
        example_wall_seconds=1.0,
        sync_wait_seconds=1.0,
        reconcile_seconds=1.0,
    )


def planned(n: int) -> list[PlannedTrial]:
    return [PlannedTrial(f"t{i}", "print(1)", {"i": i}) for i in range(n)]


def test_the_orchestrators_metrics_follow_a_sweep(tmp_path: Path) -> None:
    runner = ScriptedRunner(protocol.hello("runner-1", 2), metrics=('{"step":1}', '{"step":2}'))

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        server = grpc.aio.server()
        runner_pb2_grpc.add_RunnerServicer_to_server(runner, server)
        runner_port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        db = DbThread(
            store.db, tmp_path / "o.db", store.MODELS, schema_version=store.SCHEMA_VERSION
        )
        prometheus = OrchestratorMetrics()
        dispatcher = Dispatcher(
            orchestrator_settings(tmp_path, runner_port), db, SweepNews(), prometheus
        )
        prometheus.watch(db, lambda: dispatcher.links)
        endpoint = MetricsEndpoint(prometheus.registry, before_scrape=prometheus.refresh)
        get = scrape(await endpoint.start("127.0.0.1", 0))
        try:
            await db(store.create_sweep, "s", "task", {}, planned(3))
            before = await get()
            await dispatcher.start()
            await until(lambda: db(store.sweep_finished, "s"))
            after = await get()
            # What only the runner's link knows: down once its runner is gone.
            await server.stop(0)
            await until(lambda: asyncio.sleep(0, not dispatcher.links[0].up))
            gone = await get()
            return before, after, gone
        finally:
            await endpoint.close()
            await dispatcher.close()
            await server.stop(0)
            db.close()

    before, after, gone = run_async(scenario)

    assert value(before, "prism_sweeps", state="running") == 1
    assert value(before, "prism_trials", state="pending") == 3
    assert value(before, "prism_queue_depth") == 3
    assert value(before, "prism_runner_up", runner="runner-1") == 0
    assert value(before, "prism_dispatch_latency_seconds_count") == 0

    assert value(after, "prism_sweeps", state="running") == 0
    assert value(after, "prism_sweeps", state="done") == 1
    assert value(after, "prism_trials", state="pending") == 0
    assert value(after, "prism_trials", state="finished") == 3
    assert value(after, "prism_trials_finished_total", outcome="succeeded") == 3
    assert value(after, "prism_trials_finished_total", outcome="failed") == 0
    assert value(after, "prism_queue_depth") == 0
    assert value(after, "prism_dispatch_latency_seconds_count") == 3
    assert value(after, "prism_trial_duration_seconds_count", outcome="succeeded") == 3
    assert value(after, "prism_trial_metrics_recorded_total") == 6
    assert value(after, "prism_trial_metric_batch_write_seconds_count") >= 1
    assert value(after, "prism_runner_up", runner="runner-1") == 1
    assert value(after, "prism_runner_trials_in_flight", runner="runner-1") == 0

    assert value(gone, "prism_runner_up", runner="runner-1") == 0
    # The store's counts do not depend on the process: still there.
    assert value(gone, "prism_trials_finished_total", outcome="succeeded") == 3


def test_a_store_that_fails_leaves_its_families_out(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, bool]:
        db = DbThread(
            store.db, tmp_path / "o.db", store.MODELS, schema_version=store.SCHEMA_VERSION
        )
        prometheus = OrchestratorMetrics()
        prometheus.watch(db, lambda: [])
        await prometheus.refresh()
        shown = prometheus.registry.get_sample_value("prism_queue_depth") is not None
        db.close()  # a store that answers no more
        with pytest.raises(RuntimeError):
            await db(store.counts)
        await prometheus.refresh()
        return shown, prometheus.registry.get_sample_value("prism_queue_depth") is not None

    assert run_async(scenario) == (True, False)


def test_a_trial_waits_from_its_sweeps_creation_or_its_requeue(orchestrator_db: Path) -> None:
    store.create_sweep("s", "task", {}, planned(2))
    created = store.sweep("s").created_at  # type: ignore[union-attr]
    first = store.dispatchable(2)
    assert [d.ready_since for d in first] == [created, created]
    store.assign("s/0", "r1")
    requeued_after = time.time()
    store.unassign("s/0", "r1", "stream closed before send")
    [again] = [d for d in store.dispatchable(2) if d.trial.id == "s/0"]
    assert again.ready_since >= requeued_after


def test_an_older_file_gets_the_index_the_counts_read(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    DbThread(store.db, path, store.MODELS, schema_version=store.SCHEMA_VERSION).close()
    with closing(sqlite3.connect(path)) as raw:
        raw.execute("DROP INDEX trial_state_outcome")
        raw.commit()
    DbThread(store.db, path, store.MODELS, schema_version=store.SCHEMA_VERSION).close()
    with closing(sqlite3.connect(path)) as raw:
        plan = raw.execute(
            "EXPLAIN QUERY PLAN SELECT state, outcome, COUNT(*) FROM trial GROUP BY state, outcome"
        ).fetchall()
    assert "COVERING INDEX trial_state_outcome" in str(plan)


# --- the runner's -------------------------------------------------------------------------


@pytest.fixture
def runner_db(tmp_path: Path) -> Iterator[DbThread]:
    db = DbThread(
        runner_store.db,
        tmp_path / "runner.db",
        runner_store.MODELS,
        schema_version=runner_store.SCHEMA_VERSION,
    )
    yield db
    db.close()


def run_trial(
    trial_id: str, script: str, requirements: tuple[str, ...] = ()
) -> runner_pb2.RunTrial:
    return runner_pb2.RunTrial(
        trial_id=trial_id,
        script=script,
        params_json="{}",
        limits=trial_pb2.TrialLimits(wall_seconds=30),
        requirements=requirements,
    )


async def finished(outbox: asyncio.Queue[Any]) -> None:
    while not (await outbox.get()).HasField("finished"):
        pass


def test_the_runners_metrics_follow_its_trials(runner_db: DbThread) -> None:
    metrics = RunnerMetrics()
    sandbox, images = FakeSandbox(), FakeImages()

    def sample(name: str, **labels: str) -> float:
        found = metrics.registry.get_sample_value(name, labels)
        assert found is not None, name
        return found

    async def scenario() -> list[float]:
        executor = TrialExecutor(runner_db, sandbox, images, slots=3, metrics=metrics)
        seen = [sample("prism_runner_slots")]
        try:
            blocked: asyncio.Queue[Any] = asyncio.Queue()
            await executor.submit(run_trial("s/0", "block"), blocked)
            await asyncio.to_thread(sandbox.wait_running, "s/0")
            seen.append(sample("prism_runner_trials_running"))
            sandbox.release("s/0")
            await finished(blocked)
            seen.append(sample("prism_runner_trials_running"))
            for trial_id, script, requirements in (
                ("s/1", "exit 3", ()),
                ("s/2", "exit 0", ("tabulate",)),
                ("s/3", "exit 0", ("refused",)),
            ):
                outbox: asyncio.Queue[Any] = asyncio.Queue()
                await executor.submit(run_trial(trial_id, script, requirements), outbox)
                await finished(outbox)
        finally:
            await executor.close()
        return seen

    assert run_async(scenario) == [3, 1, 0]
    assert sample("prism_runner_trials_finished_total", outcome="succeeded") == 2
    # The trial that failed, and the one whose requirements pip refused.
    assert sample("prism_runner_trials_finished_total", outcome="failed") == 2
    assert sample("prism_runner_trials_finished_total", outcome="timed_out") == 0
    assert sample("prism_runner_requirements_image_seconds_count", result="ready") == 1
    assert sample("prism_runner_requirements_image_seconds_count", result="refused") == 1
    assert sample("prism_runner_requirements_image_seconds_count", result="error") == 0


# --- names and labels ---------------------------------------------------------------------

# Families of prometheus_client's own standard collectors, kept on purpose (prism.metrics).
STANDARD_PREFIXES = ("process_", "python_")
# Every label a Prism family may have: each takes few values, none a trial or sweep chose.
LABELS = {"state", "outcome", "runner", "result"}
BASE_UNITS = ("_seconds", "_bytes")
NOT_BASE_UNITS = ("_milliseconds", "_ms", "_minutes", "_hours", "_kb", "_mb", "_mib")


# Every Prism family and its type: what the README's Metrics section lists.
CATALOG = {
    "prism_sweeps": "gauge",
    "prism_trials": "gauge",
    "prism_trials_finished": "counter",
    "prism_queue_depth": "gauge",
    "prism_dispatch_latency_seconds": "histogram",
    "prism_trial_duration_seconds": "histogram",
    "prism_trial_metrics_recorded": "counter",
    "prism_trial_metrics_dropped": "counter",
    "prism_trial_metric_batch_write_seconds": "histogram",
    "prism_runner_up": "gauge",
    "prism_runner_trials_in_flight": "gauge",
    "prism_runner_slots": "gauge",
    "prism_runner_trials_running": "gauge",
    "prism_runner_trials_finished": "counter",
    "prism_runner_container_start_seconds": "histogram",
    "prism_runner_requirements_image_seconds": "histogram",
}


@dataclass
class Link:
    name: str
    up: bool
    in_flight: set[str] = field(default_factory=set)


def families() -> list[Metric]:
    orchestrator = OrchestratorMetrics()
    orchestrator._state.counts = store.Counts(
        sweeps={"running": 1}, trials={("finished", "succeeded"): 2, ("pending", None): 1}, ready=1
    )
    orchestrator._state.runners = lambda: [Link("runner-1", True, {"s/0"}), Link("runner-2", False)]
    return [*orchestrator.registry.collect(), *RunnerMetrics().registry.collect()]


def prism_families() -> list[Metric]:
    return [f for f in families() if not f.name.startswith(STANDARD_PREFIXES)]


def test_every_family_is_named_by_prometheus_conventions() -> None:
    found = prism_families()
    assert {f.name for f in found} == set(CATALOG)
    for family in found:
        name = family.name
        assert name.startswith("prism_"), name
        assert name == name.lower() and "__" not in name, name
        assert family.documentation.strip(), f"{name} has no help"
        assert not name.endswith(NOT_BASE_UNITS), f"{name}: use base units"
        if family.type == "counter":
            # prometheus_client names a counter's family without the suffix its sample has.
            assert not name.endswith("_total"), name
            assert {s.name for s in family.samples} <= {f"{name}_total", f"{name}_created"}
        else:
            assert "_total" not in name, f"{name}: _total is for counters"
        if family.type == "histogram":
            assert name.endswith(BASE_UNITS), f"{name}: a histogram of what unit?"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= LABELS, (name, sample.labels)


def test_the_readme_lists_every_family_with_its_type_and_labels() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.partition("\n## Metrics\n")[2].partition("\n## ")[0]
    assert section, "README.md has no Metrics section"
    for family in prism_families():
        exposed = f"{family.name}_total" if family.type == "counter" else family.name
        labels = sorted({k for s in family.samples for k in s.labels} - {"le"})
        rows = [line for line in section.splitlines() if line.startswith(f"| `{exposed}`")]
        assert rows, f"README's Metrics section does not list {exposed}"
        assert f"| {CATALOG[family.name]} |" in rows[0], rows[0]
        for label in labels:
            assert f"`{label}`" in rows[0], (exposed, label)


def test_outcome_labels_are_the_outcomes_and_exist_before_any_trial() -> None:
    outcomes = {outcome.value for outcome in Outcome}
    by_name = {f.name: f for f in prism_families()}
    for name in (
        "prism_trials_finished",
        "prism_trial_duration_seconds",
        "prism_runner_trials_finished",
    ):
        shown = {s.labels["outcome"] for s in by_name[name].samples if "outcome" in s.labels}
        assert shown == outcomes, name


def test_the_standard_process_families_are_kept() -> None:
    names = {f.name for f in families()}
    assert {"process_resident_memory_bytes", "process_open_fds", "python_info"} <= names


# --- where the local stack serves them ----------------------------------------------------


def test_make_up_serves_every_services_metrics_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "PRISM_RUNNER_PORTS",
        "PRISM_ORCHESTRATOR_METRICS_PORT",
        "PRISM_GATEWAY_METRICS_PORT",
        "PRISM_RUNNER_METRICS_PORTS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PRISM_METRICS_ADDR", "0.0.0.0:1")  # inherited: never passed on
    layout = Layout.from_env()
    shown = {
        service: layout.service_env(service).get(
            "PRISM_GATEWAY_METRICS_ADDR" if service == GATEWAY else "PRISM_METRICS_ADDR"
        )
        for service in layout.services
    }
    assert shown == {
        "runner-1": "127.0.0.1:9111",
        "runner-2": "127.0.0.1:9112",
        "runner-3": "127.0.0.1:9113",
        ORCHESTRATOR: "127.0.0.1:9101",
        GATEWAY: "127.0.0.1:9102",
    }
    monkeypatch.setenv("PRISM_RUNNER_PORTS", "50061,50062,50063,50064")
    assert Layout.from_env().runner_metrics_ports == (9111, 9112, 9113, 9114)
    monkeypatch.setenv("PRISM_RUNNER_METRICS_PORTS", "9200,9201")
    with pytest.raises(StackError, match="PRISM_RUNNER_METRICS_PORTS"):
        Layout.from_env()


def test_a_layout_made_in_code_serves_no_metrics(tmp_path: Path) -> None:
    layout = Layout(data_dir=tmp_path)
    assert all(layout.metrics_address(service) is None for service in layout.services)
    assert layout.service_env(ORCHESTRATOR)["PRISM_METRICS_ADDR"] == ""
    assert layout.service_env(GATEWAY)["PRISM_GATEWAY_METRICS_ADDR"] == ""


def test_the_local_scrape_config_scrapes_make_ups_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    for name in (
        "PRISM_RUNNER_PORTS",
        "PRISM_ORCHESTRATOR_METRICS_PORT",
        "PRISM_GATEWAY_METRICS_PORT",
        "PRISM_RUNNER_METRICS_PORTS",
    ):
        monkeypatch.delenv(name, raising=False)
    layout = Layout.from_env()
    repo = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((repo / "deploy" / "prometheus-local.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {
        name: [t for group in job["static_configs"] for t in group["targets"]]
        for name, job in jobs.items()
    }
    assert targets == {
        "prism-orchestrator": [layout.metrics_address(ORCHESTRATOR)],
        "prism-runner": [layout.metrics_address(runner) for runner in layout.runners],
        "prism-gateway": [layout.metrics_address(GATEWAY)],
    }
    assert jobs["prism-gateway"]["metrics_path"] == "/stats/prometheus"
    swarm = yaml.safe_load((repo / "deploy" / "prometheus.yml").read_text())
    [runners] = [job for job in swarm["scrape_configs"] if job["job_name"] == "prism-runner"]
    assert runners["dns_sd_configs"] == [
        {"names": ["tasks.runner"], "type": "A", "port": 9111, "refresh_interval": "30s"}
    ]
