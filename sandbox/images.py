"""The sandbox image and the base it is built on, each built at most once per content.

The base is ``python:3.11-slim`` where a registry answers. Without one (as on the
project's machines) it is ``prism-base:bookworm``, made offline with debootstrap and
``docker import``. ``PRISM_SANDBOX_BASE`` names another base instead.
"""

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import docker
import docker.errors
import requests

from sandbox.engine import EngineError, apt_install

SLIM_BASE = "python:3.11-slim"
LOCAL_BASE = "prism-base:bookworm"
SANDBOX_TAG = "prism-sandbox:latest"
HASH_LABEL = "prism.sandbox.hash"

# A pull goes through the SDK without any read timeout, so an unreachable registry
# that drops packets instead of refusing would block forever: give up after this.
PULL_TIMEOUT_SECONDS = 60.0

_CONTEXT_FILES = ("Dockerfile", "bootstrap.py")
_HERE = Path(__file__).resolve().parent


class ImageError(RuntimeError):
    """An image could not be made; the message says what to do about it."""


def ensure_base_image(client: docker.DockerClient) -> str:
    """Return the name of a local image with python3 to build the sandbox on."""
    wanted = os.environ.get("PRISM_SANDBOX_BASE")
    if wanted and wanted != LOCAL_BASE:
        if _exists(client, wanted) or _pull(client, wanted):
            return wanted
        raise ImageError(
            f"base image {wanted!r} (from PRISM_SANDBOX_BASE) is neither local nor pullable"
        )
    if not wanted and (_exists(client, SLIM_BASE) or _pull(client, SLIM_BASE)):
        return SLIM_BASE
    if not _exists(client, LOCAL_BASE):
        build_local_base(client, LOCAL_BASE)
    return LOCAL_BASE


def ensure_sandbox_image(client: docker.DockerClient, tag: str = SANDBOX_TAG) -> str:
    """Build the sandbox image unless one with the same content exists; tag it; return tag."""
    base = ensure_base_image(client)
    files = {name: (_HERE / name).read_bytes() for name in _CONTEXT_FILES}
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    digest.update(client.images.get(base).id.encode())
    content = digest.hexdigest()

    built = client.images.list(filters={"label": f"{HASH_LABEL}={content}"})
    if built:
        if tag not in built[0].tags:
            built[0].tag(tag)
        return tag
    _log(f"building {tag} on {base}")
    client.images.build(
        fileobj=_context_tar(files),
        custom_context=True,
        tag=tag,
        buildargs={"BASE": base},
        labels={HASH_LABEL: content},
        network_mode="none",
        rm=True,
        forcerm=True,
    )
    return tag


def build_local_base(client: docker.DockerClient, name: str) -> None:
    """Make a Debian bookworm image with python3 from the Debian archive, no registry."""
    if os.geteuid() != 0:
        raise ImageError(
            f"no base image: {SLIM_BASE} cannot be pulled and building {name} with "
            "debootstrap needs root; run `python -m sandbox.images` as root once, or set "
            "PRISM_SANDBOX_BASE to a local image that has python3"
        )
    if shutil.which("debootstrap") is None:
        _log("installing debootstrap with apt-get")
        try:
            apt_install("debootstrap")
        except EngineError as error:
            raise ImageError(str(error)) from None
    repository, _, tag = name.partition(":")
    with tempfile.TemporaryDirectory(prefix="prism-base-", dir="/var/tmp") as root:
        _log(f"building {name} with debootstrap (about a minute)")
        # No mirror argument: debootstrap's default is the one the machines reach.
        _run(["debootstrap", "--variant=minbase", "--include=python3", "bookworm", root])
        with subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE) as tar:
            assert tar.stdout is not None  # stdout=PIPE
            client.api.import_image_from_stream(
                _chunks(tar.stdout), repository=repository, tag=tag or None
            )
        if tar.returncode != 0 or not _exists(client, name):
            raise ImageError(f"importing the debootstrap tree as {name} failed")


def _exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def _pull(client: docker.DockerClient, name: str) -> bool:
    pulled: list[bool] = []

    def attempt() -> None:
        try:
            client.images.pull(name)
        except (docker.errors.DockerException, requests.RequestException):
            pulled.append(False)
        else:
            pulled.append(True)

    # A daemon thread, because a hung pull cannot be interrupted: it is abandoned.
    thread = threading.Thread(target=attempt, name=f"pull {name}", daemon=True)
    thread.start()
    thread.join(PULL_TIMEOUT_SECONDS)
    return pulled == [True]


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    # A generator makes the SDK send the tar in chunks instead of holding 260 MB in memory.
    while chunk := stream.read(2**20):
        yield chunk


def _context_tar(files: dict[str, bytes]) -> io.BytesIO:
    # Only these files, so nothing else in the package (caches, sources) reaches the build.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _run(argv: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(argv, env=env, stdout=sys.stderr, check=False)
    if result.returncode != 0:
        raise ImageError(f"`{' '.join(argv)}` failed with code {result.returncode}")


def _log(message: str) -> None:
    print(f"sandbox.images: {message}", file=sys.stderr, flush=True)


def main() -> int:
    try:
        with contextlib.closing(docker.from_env()) as client:
            print(ensure_sandbox_image(client))
    except (ImageError, docker.errors.DockerException) as error:
        print(f"sandbox.images: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
