"""Fixtures that start real stacks: real processes on free loopback ports,
the real Docker engine, the real Envoy. Nothing of ours is mocked.

Every stack gets its own folder and its own runner names, so the containers
it may leave behind carry labels no other stack uses, and the finalizers
remove exactly those.

Two tiers: `tests/unit` is the fast one (in-process, no engine, no Envoy, no
services; `make test-fast`), and every test outside it is marked `slow`, so
`pytest -m "not slow"` selects the same tests as `pytest tests/unit`. Nothing
here needs an engine until a fixture asks for one."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import docker
import grpc
import pytest

from prism.stack import GATEWAY, ORCHESTRATOR, Layout, Stack, free_ports
from sandbox import Sandbox
from sandbox.container import OWNER_LABEL
from sandbox.engine import ensure_engine, stop_engine
from sandbox.images import ensure_sandbox_image
from sandbox.services_image import ensure_services_image

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "orchestrator_svc" / "examples"
# The fast tier.
UNIT = REPO / "tests" / "unit"
# This checkout's own tag: test runs of two checkouts that share one engine never
# swap each other's sandbox image under a running test.
SANDBOX_TAG = f"prism-sandbox:test-{hashlib.sha256(str(REPO).encode()).hexdigest()[:8]}"
SERVICES_TAG = f"prism-services:test-{hashlib.sha256(str(REPO).encode()).hexdigest()[:8]}"


T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not item.path.resolve().is_relative_to(UNIT):
            item.add_marker(pytest.mark.slow)


def wait_until(
    predicate: Callable[[], T | None], timeout: float = 60, what: str = "condition"
) -> T:
    """Poll `predicate` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: Any


@dataclass
class RunningStack:
    stack: Stack
    token: str

    @property
    def layout(self) -> Layout:
        return self.stack.layout

    @property
    def gateway(self) -> str:
        return self.layout.address(GATEWAY)

    @property
    def orchestrator(self) -> str:
        return self.layout.address(ORCHESTRATOR)

    @property
    def runner_token(self) -> str:
        return self.layout.runner_token_file.read_text().strip()

    def http(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        token: str | None = "default",
        headers: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> Reply:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        request = urllib.request.Request(
            f"http://{self.gateway}{path}", data=body, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                status, reply_headers, raw = reply.status, reply.headers, reply.read()
        except urllib.error.HTTPError as error:
            status, reply_headers, raw = error.code, error.headers, error.read()
            error.close()
        headers_lower = {k.lower(): v for k, v in reply_headers.items()}
        return Reply(status, headers_lower, json.loads(raw) if raw else None)

    def raw(self, method: str, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body bytes, for non-JSON replies."""
        request = urllib.request.Request(
            f"http://{self.gateway}{path}",
            method=method,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.headers.get("content-type", ""), reply.read()

    def post_task(self, task: Any, **kwargs: Any) -> Reply:
        return self.http("POST", "/", json.dumps({"task": task}).encode(), **kwargs)

    def create(self, spec: Mapping[str, Any], query: str = "") -> Reply:
        """POST /v1/sweeps with a spec."""
        return self.http("POST", f"/v1/sweeps{query}", json.dumps(spec).encode())

    def finished(self, sweep_id: str, timeout: float = 120) -> dict[str, Any]:
        """GET /v1/sweeps/{id} until the sweep is no longer running."""

        def done() -> dict[str, Any] | None:
            reply = self.http("GET", f"/v1/sweeps/{sweep_id}")
            assert reply.status == 200, reply.body
            return dict(reply.body) if reply.body["state"] != "running" else None

        return wait_until(done, timeout, f"sweep {sweep_id} to finish")

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    def channel(self, service: str = ORCHESTRATOR) -> grpc.Channel:
        return grpc.insecure_channel(self.layout.address(service))

    def runner_db(self, runner: str) -> Path:
        return self.layout.data_dir / "runners" / f"{runner}.db"

    def executions(self) -> dict[str, int]:
        """trial id -> containers started for it, over every runner's own database."""
        counts: dict[str, int] = {}
        for runner in self.layout.runners:
            path = self.runner_db(runner)
            if not path.exists():
                continue
            with closing(sqlite3.connect(path)) as db:
                for trial_id, n in db.execute(
                    "SELECT trial_id, COUNT(*) FROM execution GROUP BY trial_id"
                ):
                    counts[trial_id] = counts.get(trial_id, 0) + n
        return counts

    def orchestrator_query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.layout.data_dir / "orchestrator.db")) as db:
            return db.execute(sql, args).fetchall()


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    # The run folder of `make test`, which stops an engine started there.
    ensure_engine(REPO / ".prism" / "test-run")
    with closing(docker.from_env()) as client:
        return ensure_sandbox_image(client, SANDBOX_TAG)


@pytest.fixture(scope="session")
def services_image(sandbox_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The services' image as `make services-image` builds it (by the path this machine
    allows), under this checkout's own tag: kept after the run, so an unchanged checkout
    only finds it next time (by its content's hash)."""
    lines: list[str] = []
    started = time.monotonic()
    with closing(docker.from_env()) as client:
        tag = ensure_services_image(
            client, SERVICES_TAG, wheels=tmp_path_factory.mktemp("wheels"), announce=lines.append
        )
    print(f"\n{lines[0]}\n{tag} ready in {time.monotonic() - started:.0f} s")
    return tag


@pytest.fixture(scope="module")
def docker_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[docker.DockerClient]:
    """A client of an engine: this module's own when none answers, stopped after it."""
    run_dir = tmp_path_factory.mktemp("engine")
    started = ensure_engine(run_dir)
    with closing(docker.from_env(max_pool_size=32)) as client:
        yield client
    if started is not None:
        stop_engine(run_dir)


@pytest.fixture(scope="module")
def owner(docker_client: docker.DockerClient) -> Iterator[str]:
    """An owner label of this module's own; its containers are removed at its end."""
    owner = f"test-{secrets.token_hex(4)}"
    yield owner
    for container in ours(docker_client, owner):
        docker_client.api.remove_container(container["Id"], force=True)


@pytest.fixture(scope="module")
def box(docker_client: docker.DockerClient, owner: str, sandbox_image: str) -> Sandbox:
    """A sandbox driven straight, no runner: its containers carry `owner`."""
    return Sandbox(docker_client, image=sandbox_image, owner=owner)


@pytest.fixture
def nothing_left_behind(docker_client: docker.DockerClient, owner: str) -> Iterator[None]:
    """Use with pytest.mark.usefixtures: the test leaves no container of `owner`."""
    yield
    assert ours(docker_client, owner) == []


def ours(client: docker.DockerClient, owner: str) -> list[dict[str, Any]]:
    return client.api.containers(all=True, filters={"label": f"{OWNER_LABEL}={owner}"})  # type: ignore[no-any-return]


def examples_dir(root: Path, scripts: Mapping[str, str]) -> Path:
    """A folder of example runners: the real ones plus `scripts` (name -> source)."""
    root.mkdir(parents=True, exist_ok=True)
    for path in EXAMPLES.glob("*.py"):
        (root / path.name).write_text(path.read_text())
    for name, source in scripts.items():
        (root / f"{name}.py").write_text(source)
    return root


def start_stack(
    root: Path,
    image: str,
    *,
    runners: int = 3,
    env: Mapping[str, str] | None = None,
    gateway: bool = True,
) -> RunningStack:
    ports = free_ports(2 * (2 + runners))
    layout = Layout(
        data_dir=root,
        gateway_port=ports[0],
        orchestrator_port=ports[1],
        runner_ports=tuple(ports[2 : 2 + runners]),
        runner_prefix=f"t{secrets.token_hex(4)}",
        image=image,
        # Every service serves its metrics, as under `make up`, on ports of its own.
        gateway_metrics_port=ports[2 + runners],
        orchestrator_metrics_port=ports[3 + runners],
        runner_metrics_ports=tuple(ports[4 + runners :]),
        # A runner stopped with trials running drains before it exits: short here, so
        # that a test's stack stops soon after it ends, whatever it left running.
        extra_env={"PRISM_RUNNER_DRAIN_SECONDS": "2", **(env or {})},
    )
    stack = Stack(layout)
    stack.prepare()
    try:
        for runner in layout.runners:
            stack.start(runner)
        for runner in layout.runners:
            stack.wait_ready(runner)
        stack.start(ORCHESTRATOR)
        stack.wait_ready(ORCHESTRATOR)
        if gateway:
            stack.start(GATEWAY)
            stack.wait_ready(GATEWAY)
    except BaseException:
        stack.down()  # what did start must not outlive a stack that failed to
        raise
    return RunningStack(stack, stack.api_token())


def stop_stack(running: RunningStack) -> None:
    running.stack.down()
    with closing(docker.from_env()) as client:
        for runner in running.layout.runners:
            for container in client.containers.list(
                all=True, filters={"label": f"{OWNER_LABEL}={runner}"}
            ):
                container.remove(force=True)


StackFactory = Callable[..., RunningStack]


@pytest.fixture
def make_stack(tmp_path: Path, sandbox_image: str) -> Iterator[StackFactory]:
    """Start stacks private to one test; `examples` adds example runner scripts."""
    started: list[RunningStack] = []

    def make(
        *,
        examples: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> RunningStack:
        root = tmp_path / f"stack{len(started)}"
        all_env = dict(env or {})
        if examples:
            all_env["PRISM_EXAMPLES_DIR"] = str(examples_dir(root / "examples", examples))
        running = start_stack(root / "data", sandbox_image, env=all_env, **kwargs)
        started.append(running)
        return running

    yield make
    for running in started:
        stop_stack(running)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[RunningStack]:
    """One default stack shared by the tests that only read from it or add sweeps."""
    running = start_stack(tmp_path_factory.mktemp("stack"), sandbox_image)
    yield running
    stop_stack(running)
