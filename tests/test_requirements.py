"""A sweep's requirements: validation, and the derived image they are installed into.

Offline: the distributions are wheels this module writes itself, served from a local
folder (pip --no-index --find-links) or from a PEP 503 index on 127.0.0.1. Every image
and container made here is removed by the fixtures.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import random
import secrets
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import docker
import docker.errors
import pytest

from sandbox import Limits, Sandbox
from sandbox.container import OWNER_LABEL
from sandbox.images import (
    HASH_LABEL,
    REQUIREMENTS_LABEL,
    REQUIREMENTS_REPOSITORY,
    SITE_DIR,
    RequirementsError,
    ensure_requirements_image,
    ensure_sandbox_image,
)
from sandbox.requirements import MAX_REQUIREMENT_CHARS, MAX_REQUIREMENTS, parse_requirements

MiB = 2**20

# --- validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["numpy"], ["numpy"]),
        (["NumPy>=1.26,<2"], ["numpy<2,>=1.26"]),
        (["  pandas  "], ["pandas"]),
        (["requests==2.*"], ["requests==2.*"]),
        (["zope.interface~=6.0"], ["zope-interface~=6.0"]),
        (["foo (>=1.0)"], ["foo>=1.0"]),
        (["Foo_Bar[Extra_One,b]>=1.0"], ["foo-bar[b,extra-one]>=1.0"]),
        (
            ["scipy; python_version >= '3.8' and os_name == 'posix'"],
            ['scipy; python_version >= "3.8" and os_name == "posix"'],
        ),
        (["b", "c", "a"], ["a", "b", "c"]),
        ([], []),
        (("tuple", "too"), ["too", "tuple"]),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_valid_requirements_are_normalised_and_sorted(
    items: list[str], expected: list[str]
) -> None:
    assert parse_requirements(items) == expected
    assert parse_requirements(expected) == expected  # normalising twice changes nothing


def test_the_limits_themselves_are_accepted() -> None:
    longest = "a" * MAX_REQUIREMENT_CHARS
    assert parse_requirements([longest]) == [longest]
    many = [f"package{i}" for i in range(MAX_REQUIREMENTS)]
    assert parse_requirements(many) == sorted(many)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["x @ file:///etc"], "requirements[0]: 'x @ file:///etc' is a direct reference"),
        (["ok", "pkg @ https://example.invalid/pkg.whl"], "requirements[1]: 'pkg @ "),
        (["-e ."], "requirements[0]: '-e .' is a pip option"),
        (["--index-url=http://127.0.0.1/"], "is a pip option"),
        (["-r/etc/passwd"], "is a pip option"),
        (["./pkg"], "requirements[0]: './pkg' is not a requirement specifier"),
        (["/etc/passwd"], "is not a requirement specifier"),
        (["../pkg"], "is not a requirement specifier"),
        (["file:///etc/passwd"], "is not a requirement specifier"),
        (["git+https://example.invalid/repo"], "is not a requirement specifier"),
        (["pkg.whl"], "requirements[0]: 'pkg.whl' looks like a file name"),
        (["pkg-1.0.tar.gz"], "looks like a file name"),
        (["pkg # comment"], "is not a requirement specifier"),
        (["pkg>=1 --hash=sha256:00"], "is not a requirement specifier"),
        (["pkg;"], "is not a requirement specifier"),
        (["${HOME}"], "is not a requirement specifier"),
        (["pkg[extra"], "is not a requirement specifier"),
        (["numpy", "NumPy>=1"], "requirements[1]: 'numpy' is listed twice (also requirements[0])"),
        (["a_b", "A.B"], "requirements[1]: 'a-b' is listed twice"),
        (["a" * (MAX_REQUIREMENT_CHARS + 1)], "requirements[0]: longer than 200 characters"),
        (["x" * 10**7], "requirements[0]: longer than 200 characters"),
        ([""], "requirements[0]: is empty"),
        (["ok", "   "], "requirements[1]: is empty"),
        (["pkg\n--index-url http://127.0.0.1/"], "only printable ASCII"),
        (["pkg\x00"], "only printable ASCII"),
        (["pkg; os_name == 'ü'"], "only printable ASCII"),
        ([f"p{i}" for i in range(MAX_REQUIREMENTS + 1)], "requirements: at most 50 items, got 51"),
        ("numpy", "requirements: must be a list of strings"),
        (b"numpy", "requirements: must be a list of strings"),
        ([1], "requirements[0]: must be a string"),
        ([None], "requirements[0]: must be a string"),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_invalid_requirements_name_the_item_and_the_rule(items: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_requirements(items)  # type: ignore[arg-type]
    assert type(caught.value) is ValueError
    assert message in str(caught.value)


def test_validation_raises_nothing_but_value_error() -> None:
    # Seeded, so a failure reproduces: strings made of the characters requirements use.
    alphabet = "abcXYZ019_.-[],;:<>=!~*@ '\"()/\\#$%&+?{}^|`\t"
    chooser = random.Random(1)
    for _ in range(3000):
        text = "".join(chooser.choices(alphabet, k=chooser.randint(0, 40)))
        try:
            result = parse_requirements([text])
        except ValueError:
            continue
        assert parse_requirements(result) == result


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
    # Nothing of the throw-away install stage is left.
    assert client.images.list(filters={"label": "prism.requirements.stage"}) == []


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
    assert "\x1b[" not in message  # the builder's colours are gone
    assert client.images.list(filters={"label": "prism.requirements.stage"}) == []


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


@pytest.fixture
def loopback_index(wheels: Wheels, tmp_path: Path) -> Iterator[str]:
    """A PEP 503 simple index of the wheels, served on 127.0.0.1."""
    for wheel in wheels.folder.iterdir():
        project = wheel.name.split("-")[0].replace("_", "-")
        page = tmp_path / "simple" / project
        page.mkdir(parents=True)
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        (tmp_path / "files").mkdir(exist_ok=True)
        (tmp_path / "files" / wheel.name).write_bytes(wheel.read_bytes())
        (page / "index.html").write_text(
            f'<a href="../../files/{wheel.name}#sha256={sha}">{wheel.name}</a>\n'
        )
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()
        serving.join(10)


def test_a_loopback_index_is_reached_through_the_host_network(
    client: docker.DockerClient,
    sandbox_image: str,
    wheels: Wheels,
    box: Sandbox,
    built: set[str],
    loopback_index: str,
) -> None:
    tag = ensure_requirements_image(
        client, ["prism-probe==1.0"], base=sandbox_image, index_url=loopback_index
    )
    built.add(tag)

    script = (
        "import os, prism_probe\nprint(prism_probe.VALUE, sorted(os.listdir('/sys/class/net')))"
    )
    execution = box.run(
        f"req-{secrets.token_hex(4)}", script, "{}", Limits(wall_seconds=30), image=tag
    )
    assert execution.outcome == "succeeded", execution
    assert execution.stdout == f"{wheels.value} ['lo']\n"
