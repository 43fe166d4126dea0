"""A sweep's requirements: the derived image they are installed into (their validation,
in-process: `tests/unit/test_requirements_validation.py`).

Offline: the distributions are wheels and source distributions this module writes
itself, served from a local folder (pip --no-index --find-links) or from a PEP 503
index on 127.0.0.1. Every image and container made here is removed by the fixtures.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import http.server
import io
import json
import secrets
import socket
import struct
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from sandbox import Limits, Sandbox
from sandbox.container import OWNER_LABEL
from sandbox.images import (
    HASH_LABEL,
    REQUIREMENTS_LABEL,
    REQUIREMENTS_REPOSITORY,
    SITE_DIR,
    ImageError,
    RequirementsError,
    ensure_requirements_image,
    ensure_sandbox_image,
)
from tests.conftest import wait_until

MiB = 2**20
STAGE_LABEL = "prism.requirements.stage"

# --- derived images -----------------------------------------------------------------


def write_wheel(
    folder: Path, name: str, version: str, files: dict[str, str], *, requires: tuple[str, ...] = ()
) -> Path:
    """A pure-Python wheel, written the way the wheel format says, with fixed timestamps."""
    dist = f"{name.replace('-', '_')}-{version}"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    contents = {
        **files,
        f"{dist}.dist-info/METADATA": metadata,
        f"{dist}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: prism-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in contents.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={encoded},{len(text.encode())}\n")
    contents[f"{dist}.dist-info/RECORD"] = "".join(record) + f"{dist}.dist-info/RECORD,,\n"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in contents.items():
            archive.writestr(zipfile.ZipInfo(path, (2024, 1, 1, 0, 0, 0)), text)
    return wheel


class Wheels:
    """Two wheels, one depending on the other; `value` is unique to this test run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.value = secrets.token_hex(8)
        folder.mkdir()
        write_wheel(
            folder, "prism-probe", "1.0", {"prism_probe/__init__.py": f"VALUE = {self.value!r}\n"}
        )
        write_wheel(
            folder,
            "prism-probe-app",
            "2.1",
            {"prism_probe_app/__init__.py": "from prism_probe import VALUE\nAPP = 'app'\n"},
            requires=("prism-probe>=1",),
        )


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    with closing(docker.from_env()) as client:
        yield client


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    return Wheels(tmp_path_factory.mktemp("requirements") / "wheels")


@pytest.fixture(scope="module")
def built(client: docker.DockerClient, sandbox_image: str) -> Iterator[set[str]]:
    """Tags this module made; their images are removed at its end."""
    tags: set[str] = set()
    yield tags
    for tag in tags:
        try:
            client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass


@pytest.fixture(scope="module")
def box(client: docker.DockerClient, sandbox_image: str) -> Iterator[Sandbox]:
    """A sandbox of the plain image; trials name the derived image they run in."""
    owner = f"test-req-{secrets.token_hex(4)}"
    yield Sandbox(client, image=sandbox_image, owner=owner)
    for container in client.api.containers(all=True, filters={"label": f"{OWNER_LABEL}={owner}"}):
        client.api.remove_container(container["Id"], force=True)


@pytest.fixture(scope="module")
def probe_image(
    client: docker.DockerClient, sandbox_image: str, wheels: Wheels, built: set[str]
) -> tuple[str, float]:
    """The derived image with both wheels, built by two callers at once; and how long
    that took."""
    tags: list[str] = []

    def ensure() -> None:
        tags.append(
            ensure_requirements_image(
                client,
                ["prism-probe-app"],
                base=sandbox_image,
                find_links=wheels.folder,
                no_index=True,
            )
        )

    began = time.monotonic()
    callers = [threading.Thread(target=ensure) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(300)
    seconds = time.monotonic() - began
    built.update(tags)
    assert len(tags) == 2 and tags[0] == tags[1], tags
    return tags[0], seconds


def images_labelled(client: docker.DockerClient, tag: str) -> list[str]:
    content = client.images.get(tag).labels[REQUIREMENTS_LABEL]
    return [
        image.id
        for image in client.images.list(filters={"label": f"{REQUIREMENTS_LABEL}={content}"})
    ]


def test_derived_image_is_built_once_and_then_reused(
    client: docker.DockerClient, sandbox_image: str, wheels: Wheels, probe_image: tuple[str, float]
) -> None:
    tag, build_seconds = probe_image
    assert tag.startswith(f"{REQUIREMENTS_REPOSITORY}:")
    first = client.images.get(tag)
    assert images_labelled(client, tag) == [first.id]  # the two callers made one image
    print(f"build (two concurrent callers): {build_seconds:.2f} s")

    began = time.monotonic()
    # The same set, written differently: the same image.
    again = ensure_requirements_image(
        client, ["Prism_Probe_App "], base=sandbox_image, find_links=wheels.folder, no_index=True
    )
    reuse_seconds = time.monotonic() - began
    print(f"reuse: {reuse_seconds * 1000:.0f} ms")

    assert again == tag
    assert client.images.get(tag).id == first.id
    assert client.images.get(tag).attrs["Created"] == first.attrs["Created"]
    # Nothing of the throw-away install stage is left. Its label starts with the
    # build's content hash: other checkouts' builds on this engine have their own.
    content = first.labels[REQUIREMENTS_LABEL]
    stages = client.images.list(filters={"label": STAGE_LABEL})
    assert [image for image in stages if image.labels[STAGE_LABEL].startswith(content[:12])] == []


def test_a_ca_bundle_is_part_of_the_build_and_of_its_hash(
    client: docker.DockerClient,
    sandbox_image: str,
    wheels: Wheels,
    probe_image: tuple[str, float],
    built: set[str],
    tmp_path: Path,
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot used offline\n-----END CERTIFICATE-----\n")
    ensure = functools.partial(
        ensure_requirements_image,
        client,
        ["prism-probe-app"],
        base=sandbox_image,
        find_links=wheels.folder,
        no_index=True,
        cert=ca,
    )
    tag = ensure()
    built.add(tag)
    assert tag != probe_image[0]
    ca.write_text("another bundle\n")
    other = ensure()
    built.add(other)
    assert other not in (tag, probe_image[0])


def test_derived_image_does_not_pass_for_the_sandbox_image(
    client: docker.DockerClient, sandbox_image: str, probe_image: tuple[str, float]
) -> None:
    # It would inherit the sandbox image's content label unless it overrode it; then
    # ensure_sandbox_image could find it and tag it as the sandbox image.
    derived = client.images.get(probe_image[0])
    assert derived.labels[HASH_LABEL] == ""
    assert ensure_sandbox_image(client, sandbox_image) == sandbox_image
    plain = client.images.get(sandbox_image)
    assert plain.id != derived.id
    assert plain.labels[HASH_LABEL] and REQUIREMENTS_LABEL not in plain.labels


def test_a_trial_in_the_derived_image_imports_the_packages_without_network(
    box: Sandbox, wheels: Wheels, probe_image: tuple[str, float]
) -> None:
    script = f"""
import json, os, socket
import prism_probe, prism_probe_app
try:
    socket.getaddrinfo("example.com", 443)
    lookup = "resolved"
except socket.gaierror:
    lookup = "failed"
try:
    open(os.path.join(os.path.dirname(prism_probe.__file__), "planted.py"), "w")
    write = "written"
except OSError as error:
    write = error.errno
print(json.dumps({{
    "value": prism_probe_app.VALUE,
    "app": prism_probe_app.APP,
    "file": prism_probe.__file__,
    "owner": os.stat(prism_probe.__file__).st_uid,
    "site_on_path": {SITE_DIR!r} in __import__("sys").path,
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "lookup": lookup,
    "write": write,
    "uid": os.getuid(),
}}))
"""
    execution = box.run(
        f"req-{secrets.token_hex(4)}", script, "{}", Limits(wall_seconds=30), image=probe_image[0]
    )

    assert execution.outcome == "succeeded", execution
    assert json.loads(execution.stdout) == {
        "value": wheels.value,
        "app": "app",
        "file": f"{SITE_DIR}/prism_probe/__init__.py",
        "owner": 0,  # installed as nobody, but handed over to root
        "site_on_path": True,
        "interfaces": ["lo"],
        "lookup": "failed",
        "write": 30,  # EROFS
        "uid": 65534,
    }


@pytest.mark.parametrize(
    ("requirement", "named"),
    [("prism-no-such-package", "prism-no-such-package"), ("prism-probe>=2", "prism-probe")],
)
def test_pip_refusing_the_requirements_is_a_requirements_error(
    client: docker.DockerClient, sandbox_image: str, wheels: Wheels, requirement: str, named: str
) -> None:
    with pytest.raises(RequirementsError) as caught:
        ensure_requirements_image(
            client, [requirement], base=sandbox_image, find_links=wheels.folder, no_index=True
        )
    message = str(caught.value)
    assert f"No matching distribution found for {named}" in message
    assert "\x1b[" not in message  # no terminal colours


def test_invalid_requirements_never_reach_a_build(client: docker.DockerClient) -> None:
    with pytest.raises(RequirementsError, match=r"requirements\[0\]: .* is a direct reference"):
        ensure_requirements_image(client, ["x @ file:///etc/shadow"], no_index=True)


def test_no_requirements_is_the_base_image(client: docker.DockerClient) -> None:
    assert ensure_requirements_image(client, [], base="prism-sandbox:anything") == (
        "prism-sandbox:anything"
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_index(distributions: Path, root: Path) -> Iterator[str]:
    """A PEP 503 simple index of the files in `distributions`, served on 127.0.0.1."""
    (root / "files").mkdir(parents=True)
    for path in distributions.iterdir():
        project = path.name.split("-")[0].replace("_", "-")
        page = root / "simple" / project
        page.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        (root / "files" / path.name).write_bytes(path.read_bytes())
        with (page / "index.html").open("a") as index:
            index.write(f'<a href="../../files/{path.name}#sha256={sha}">{path.name}</a>\n')
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()
        serving.join(10)


@pytest.fixture
def loopback_index(wheels: Wheels, tmp_path: Path) -> Iterator[str]:
    with serve_index(wheels.folder, tmp_path / "index") as url:
        yield url


class EngineEvents:
    """What the engine reports of containers made and networks joined while this is
    open: its own record, nothing of ours in between."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.events: list[dict[str, Any]] = []
        self._stream = client.events(
            decode=True,
            filters={"type": ["container", "network"], "event": ["create", "connect"]},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Closing the stream ends the iteration with a read error.
        with contextlib.suppress(OSError, AttributeError, requests.RequestException):
            for event in self._stream:
                self.events.append(event)

    def close(self) -> None:
        self._stream.close()
        self._reader.join(10)

    def networks_joined(self, stage_prefix: str) -> dict[str, list[str]]:
        """For each container of a requirements build's install stage whose stage label
        starts with `stage_prefix`: the networks it joined."""
        stage = {
            event["id"]
            for event in list(self.events)
            if event["Type"] == "container"
            and event["Actor"]["Attributes"].get(STAGE_LABEL, "").startswith(stage_prefix)
        }
        joined: dict[str, list[str]] = {}
        for event in list(self.events):
            attributes = event["Actor"]["Attributes"]
            if event["Type"] == "network" and attributes.get("container") in stage:
                joined.setdefault(attributes["container"], []).append(attributes["name"])
        return joined


def test_a_build_reaches_no_network_and_its_dependencies_are_resolved_on_the_host(
    client: docker.DockerClient,
    sandbox_image: str,
    wheels: Wheels,
    box: Sandbox,
    built: set[str],
    loopback_index: str,
) -> None:
    # An index on the host's loopback: the place a build with the host's network (as
    # this one once had) could reach, and so could every other service there.
    events = EngineEvents(client)
    try:
        tag = ensure_requirements_image(
            client, ["prism-probe-app"], base=sandbox_image, index_url=loopback_index
        )
        built.add(tag)
        prefix = client.images.get(tag).labels[REQUIREMENTS_LABEL][:12]
        # The install stage's pip step is the one container of the build that runs.
        joined = wait_until(lambda: events.networks_joined(prefix), 10, "the build's pip step")
    finally:
        events.close()
    assert list(joined.values()) == [["none"]]

    # Only prism-probe-app was asked for; prism-probe came as its dependency, which the
    # build, without a network, could only install from what the host downloaded.
    script = "import prism_probe, prism_probe_app\nprint(prism_probe_app.VALUE, prism_probe.VALUE)"
    execution = box.run(
        f"req-{secrets.token_hex(4)}", script, "{}", Limits(wall_seconds=30), image=tag
    )
    assert execution.outcome == "succeeded", execution
    assert execution.stdout == f"{wheels.value} {wheels.value}\n"


def test_this_hosts_own_pip_settings_are_not_used(
    client: docker.DockerClient,
    sandbox_image: str,
    built: set[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The host's pip could install this one, from its environment or its configuration
    # file; the runner's pip, given neither, must not.
    folder = tmp_path / "host-wheels"
    folder.mkdir()
    write_wheel(folder, "prism-host-only", "1.0", {"prism_host_only.py": ""})
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nfind-links = {folder}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    empty = tmp_path / "runner-wheels"
    empty.mkdir()
    error = refused(
        built,
        lambda: ensure_requirements_image(
            client, ["prism-host-only"], base=sandbox_image, find_links=empty, no_index=True
        ),
    )
    assert "No matching distribution found for prism-host-only" in str(error)


def test_an_unreachable_index_is_the_machines_fault_not_the_sweeps(
    client: docker.DockerClient, sandbox_image: str
) -> None:
    with socket.socket() as closed:  # bound and never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/simple/"
        with pytest.raises(ImageError) as caught:
            ensure_requirements_image(client, ["prism-probe"], base=sandbox_image, index_url=url)
    assert type(caught.value) is ImageError
    assert "pip could not reach the index" in str(caught.value)
    assert "Connection refused" in str(caught.value)


_SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address


def host_addresses() -> set[str]:
    """This host's IPv4 addresses, one per interface (the docker bridge's gateway
    among them), read from the kernel: nothing is sent anywhere."""
    addresses = {"127.0.0.1"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except OSError:  # an interface without an IPv4 address
                continue
            addresses.add(socket.inet_ntoa(answer[20:24]))
    return addresses


class Listeners:
    """A TCP listener on each of the host's addresses. Never accepted while the test
    runs: the kernel completes a connection into the backlog, where `connected`
    finds it afterwards."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        for address in sorted(host_addresses()):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind((address, 0))
            listener.listen(8)
            listener.setblocking(False)
            self.sockets.append(listener)
        self.targets: list[tuple[str, int]] = [listener.getsockname() for listener in self.sockets]

    def connected(self) -> list[str]:
        seen = []
        for listener in self.sockets:
            try:
                connection, peer = listener.accept()
            except BlockingIOError:
                continue
            connection.close()
            seen.append(f"{listener.getsockname()} from {peer}")
        return seen

    def close(self) -> None:
        for listener in self.sockets:
            listener.close()


def write_sdist(folder: Path, name: str, version: str, setup_py: str) -> Path:
    """A source distribution: only building it (running setup.py) runs `setup_py`."""
    base = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{base}.tar.gz"
    files = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        "setup.py": setup_py,
    }
    with tarfile.open(path, "w:gz") as archive:
        for member, text in files.items():
            info = tarfile.TarInfo(f"{base}/{member}")
            info.size = len(text.encode())
            archive.addfile(info, io.BytesIO(text.encode()))
    return path


def refused(built: set[str], ensure: Callable[[], str]) -> RequirementsError:
    """The error of a build that must be refused; an image made anyway is removed."""
    try:
        tag = ensure()
    except RequirementsError as error:
        return error
    built.add(tag)
    pytest.fail(f"built {tag}")


@pytest.mark.parametrize("source", ["loopback index", "find-links folder"])
def test_a_requirement_without_a_wheel_is_refused_before_its_code_can_run(
    client: docker.DockerClient, sandbox_image: str, built: set[str], tmp_path: Path, source: str
) -> None:
    listeners = Listeners()
    # What a hostile package build would do: reach the host's own services.
    setup_py = f"""
import socket
for target in {listeners.targets!r}:
    try:
        socket.create_connection(target, timeout=2).close()
    except OSError:
        pass
from setuptools import setup
setup(name="prism-sdist-probe", version="1.0")
"""
    folder = tmp_path / "dists"
    folder.mkdir()
    write_sdist(folder, "prism-sdist-probe", "1.0", setup_py)
    ensure = functools.partial(ensure_requirements_image, client, ["prism-sdist-probe"])
    try:
        if source == "loopback index":
            with serve_index(folder, tmp_path / "index") as url:
                error = refused(built, lambda: ensure(base=sandbox_image, index_url=url))
        else:
            error = refused(
                built, lambda: ensure(base=sandbox_image, find_links=folder, no_index=True)
            )
        connected = listeners.connected()
    finally:
        listeners.close()

    message = str(error)
    assert message.startswith("prism-sdist-probe: no matching wheel for the sandbox"), message
    assert "source distributions are never built, because building one runs the package's own" in (
        message
    )
    assert "No matching distribution found for prism-sdist-probe" in message  # pip's own words
    assert len(listeners.targets) >= 2  # loopback and at least the docker bridge
    assert connected == []


def test_a_missing_package_is_not_taken_for_another_ones_source_distribution(
    client: docker.DockerClient, sandbox_image: str, built: set[str], tmp_path: Path
) -> None:
    # pip looks at every file of a find-links folder for every package it wants.
    write_sdist(tmp_path, "prism-sdist-probe", "1.0", "raise SystemExit(1)\n")
    error = refused(
        built,
        lambda: ensure_requirements_image(
            client,
            ["prism-no-such-package"],
            base=sandbox_image,
            find_links=tmp_path,
            no_index=True,
        ),
    )
    message = str(error)
    assert message.startswith("pip could not download the requirements as wheels:\n"), message
    assert "No matching distribution found for prism-no-such-package" in message
