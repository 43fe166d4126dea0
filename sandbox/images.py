"""The sandbox image, the base it is built on, and the images derived from it for a
sweep's ``requirements``: each built at most once per content.

The base is ``python:3.11-slim`` where a registry answers. Without one (as on the
project's machines) it is ``prism-base:bookworm-pip``, made offline with debootstrap
and ``docker import``. ``PRISM_SANDBOX_BASE`` names another base instead. Either way
the base has pip, which a derived image needs.

A derived image (``prism-sandbox-req:<hash>``) adds the requirements, installed by
pip into /opt/prism/site (on PYTHONPATH), to the sandbox image. Its build is the only
time anything of a sweep's touches a network; the trials in it run without one, like
every trial.
"""

import contextlib
import hashlib
import io
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.parse
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests

from sandbox.engine import EngineError, apt_install
from sandbox.requirements import parse_requirements

SLIM_BASE = "python:3.11-slim"
# A new tag whenever what debootstrap puts in changes, so machines with an older
# base build this one instead of using that.
LOCAL_BASE = "prism-base:bookworm-pip"
_LOCAL_BASE_PACKAGES = ("python3", "python3-pip")
SANDBOX_TAG = "prism-sandbox:latest"
HASH_LABEL = "prism.sandbox.hash"
REQUIREMENTS_REPOSITORY = "prism-sandbox-req"
REQUIREMENTS_LABEL = "prism.requirements.hash"
# Marks the throw-away install stage of one derived build, removed after it.
_STAGE_LABEL = "prism.requirements.stage"
SITE_DIR = "/opt/prism/site"
_LINKS_DIR = "/opt/prism/links"
# Only in the install stage: the final image does not keep it.
_CERT_FILE = "/opt/prism/ca.pem"

# A build that prints nothing for this long is taken as hung.
BUILD_READ_TIMEOUT_SECONDS = 900
# What a derived build may use: package builds run code from the index.
BUILD_MEMORY_BYTES = 4 * 2**30
# Lines of pip's output kept for the error message of a failed install.
_PIP_TAIL_LINES = 20
# The builder colours a step's stderr.
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
# pip's output when it could not reach the index: the machine's fault, not the sweep's.
_NETWORK_TROUBLE = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "ProxyError",
    "SSLError",
)

# A pull goes through the SDK without any read timeout, so an unreachable registry
# that drops packets instead of refusing would block forever: give up after this.
PULL_TIMEOUT_SECONDS = 60.0

_CONTEXT_FILES = ("Dockerfile", "bootstrap.py", "prism_trial.py")
_HERE = Path(__file__).resolve().parent


class ImageError(RuntimeError):
    """An image could not be made; the message says what to do about it.

    ImageError                 the engine, the base or the index failed: infrastructure
    └── RequirementsError      pip refused the requirements: the sweep's own error
    """


class RequirementsError(ImageError):
    """The requirements cannot be installed (unknown package, no matching version,
    a failing package build); the message ends with pip's own explanation."""


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

    if _reuse(client, HASH_LABEL, content, tag):
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


def ensure_requirements_image(
    client: docker.DockerClient,
    requirements: Sequence[str],
    *,
    base: str = SANDBOX_TAG,
    find_links: Path | None = None,
    index_url: str | None = None,
    no_index: bool = False,
    cert: Path | None = None,
) -> str:
    """Return the tag of ``base`` plus ``requirements``, building it unless an image
    for the same requirements, base image and pip options exists. Blocking: a build
    takes as long as pip does.

    ``find_links`` is a folder of distributions copied into the build; ``index_url``
    replaces pip's index (one on loopback is reached through the host's network);
    ``no_index`` keeps pip off every index, and the build off every network;
    ``cert`` is a CA bundle pip trusts (an intercepting proxy's, say).
    Raises RequirementsError when pip refuses the requirements, ImageError otherwise.
    """
    try:
        normalised = parse_requirements(requirements)
    except ValueError as error:
        raise RequirementsError(str(error)) from None
    if not normalised:
        return base
    network_mode = _build_network(index_url, no_index)
    try:
        base_id = client.images.get(base).id
    except docker.errors.ImageNotFound:
        raise ImageError(f"no image {base!r} to add the requirements to") from None
    except (docker.errors.DockerException, requests.RequestException) as error:
        raise ImageError(f"docker engine: {error}") from None
    links = _links(find_links)
    try:
        ca = cert.read_bytes() if cert is not None else None
    except OSError as error:
        raise ImageError(f"cert {str(cert)!r}: {error}") from None
    pip_options = _pip_options(index_url, no_index=no_index, find_links=bool(links))
    if ca is not None:
        pip_options += ["--cert", _CERT_FILE]
    dockerfile = _requirements_dockerfile(
        normalised, pip_options, with_links=bool(links), with_cert=ca is not None
    )

    digest = hashlib.sha256()
    cert_part = hashlib.sha256(ca).hexdigest() if ca is not None else ""
    for part in (dockerfile, base_id, cert_part, *(f"{name}\0{sha}" for name, sha, _ in links)):
        digest.update(part.encode())
        digest.update(b"\0")
    content = digest.hexdigest()
    tag = f"{REQUIREMENTS_REPOSITORY}:{content[:12]}"

    with _build_lock(content):
        try:
            if _reuse(client, REQUIREMENTS_LABEL, content, tag):
                return tag
            _log(f"building {tag}: {', '.join(normalised)}")
            _build_requirements_image(
                client, tag, content, base, dockerfile, links, network_mode, ca
            )
        except (docker.errors.DockerException, requests.RequestException) as error:
            raise ImageError(f"building {tag}: docker engine: {error}") from None
    return tag


def _reuse(client: docker.DockerClient, label: str, content: str, tag: str) -> bool:
    """True if an image of this content exists (labelled with its hash); it
    gets `tag` if it lost it."""
    built = client.images.list(filters={"label": f"{label}={content}"})
    if built and tag not in built[0].tags:
        built[0].tag(tag)
    return bool(built)


def _build_network(index_url: str | None, no_index: bool) -> str:
    """Networking for the build's pip step: none without an index, the host's for an
    index on loopback (the bridge cannot reach the host's loopback), else the default."""
    if no_index:
        return "none"
    if index_url is None:
        return "default"
    url = urllib.parse.urlsplit(index_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ImageError(f"index_url must be an http or https URL, got {index_url!r}")
    if url.hostname == "localhost":
        return "host"
    try:
        loopback = ipaddress.ip_address(url.hostname).is_loopback
    except ValueError:
        loopback = False
    return "host" if loopback else "default"


def _links(find_links: Path | None) -> list[tuple[str, str, Path]]:
    """(name, sha256, path) of the distributions in the find_links folder, by name."""
    if find_links is None:
        return []
    if not find_links.is_dir():
        raise ImageError(f"find_links {str(find_links)!r} is not a folder")
    links = []
    try:
        for path in sorted(find_links.iterdir()):
            if path.is_file():
                links.append((path.name, hashlib.sha256(path.read_bytes()).hexdigest(), path))
    except OSError as error:
        raise ImageError(f"find_links {str(find_links)!r}: {error}") from None
    return links


def _pip_options(index_url: str | None, *, no_index: bool, find_links: bool) -> list[str]:
    options = []
    if no_index:
        options.append("--no-index")
    elif index_url is not None:
        options += ["--index-url", index_url]
    if find_links:
        options += ["--find-links", _LINKS_DIR]
    return options


def _requirements_dockerfile(
    requirements: list[str], pip_options: list[str], *, with_links: bool, with_cert: bool
) -> str:
    # Two stages: pip, and whatever package builds it runs, work as nobody in a stage
    # that is thrown away; the image gets only the installed files, owned by root.
    # The command is in exec form (JSON), so no shell ever sees a requirement.
    pip = [
        "python3", "-m", "pip", "install", "--target", "/tmp/site",
        "--no-warn-script-location", *pip_options, "--", *requirements,
    ]  # fmt: skip
    lines = [
        "ARG BASE",
        "FROM ${BASE} AS install",
        "ARG STAGE",
        f'LABEL {HASH_LABEL}="" {_STAGE_LABEL}="${{STAGE}}"',
        "USER 65534:65534",
        "ENV HOME=/tmp PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 "
        "PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off",
    ]
    if with_links:
        lines.append(f"COPY links {_LINKS_DIR}")
    if with_cert:
        lines.append(f"COPY ca.pem {_CERT_FILE}")
    lines += [
        f"RUN {json.dumps(pip)}",
        "FROM ${BASE}",
        # The sandbox image's own label would make ensure_sandbox_image take this one.
        f'LABEL {HASH_LABEL}=""',
        # Without --chown the files would keep the install stage's owner, nobody.
        f"COPY --from=install --chown=0:0 /tmp/site {SITE_DIR}",
        f"ENV PYTHONPATH={SITE_DIR}",
    ]
    return "\n".join(lines) + "\n"


def _build_requirements_image(
    client: docker.DockerClient,
    tag: str,
    content: str,
    base: str,
    dockerfile: str,
    links: list[tuple[str, str, Path]],
    network_mode: str,
    ca: bytes | None,
) -> None:
    stage = secrets.token_hex(8)
    output: deque[str] = deque(maxlen=200)
    error: dict[str, Any] | None = None
    # On disk, not in memory: a folder of wheels can be large.
    with tempfile.TemporaryFile() as context:
        with tarfile.open(fileobj=context, mode="w") as tar:
            _add_file(tar, "Dockerfile", dockerfile.encode())
            for name, _, path in links:
                _add_file(tar, f"links/{name}", path.read_bytes())
            if ca is not None:
                _add_file(tar, "ca.pem", ca)
        context.seek(0)
        try:
            for chunk in client.api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                buildargs={"BASE": base, "STAGE": stage},
                labels={REQUIREMENTS_LABEL: content},
                network_mode=network_mode,
                container_limits={"memory": BUILD_MEMORY_BYTES, "memswap": BUILD_MEMORY_BYTES},
                nocache=True,
                rm=True,
                forcerm=True,
                decode=True,
                timeout=BUILD_READ_TIMEOUT_SECONDS,
            ):
                if "stream" in chunk:
                    output.extend(str(chunk["stream"]).splitlines())
                if "error" in chunk:
                    error = chunk
        finally:
            _remove_stage(client, stage)
    if error is not None:
        message = str(error.get("error", "")).strip()
        if "returned a non-zero code" not in message:
            raise ImageError(f"building {tag}: {message}")
        tail = _pip_tail(output)
        if any(marker in tail for marker in _NETWORK_TROUBLE):
            raise ImageError(f"building {tag}: pip could not reach the index:\n{tail}")
        raise RequirementsError(f"pip could not install the requirements:\n{tail}")
    if not client.images.list(filters={"label": f"{REQUIREMENTS_LABEL}={content}"}):
        raise ImageError(f"building {tag} ended without an image")


def _remove_stage(client: docker.DockerClient, stage: str) -> None:
    # Removing the stage's last image removes its untagged parents with it.
    for image in client.images.list(filters={"label": f"{_STAGE_LABEL}={stage}"}):
        with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
            client.images.remove(image.id)


def _pip_tail(output: deque[str]) -> str:
    """pip's last lines: from the RUN step on, without the builder's own lines."""
    lines = list(output)
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Step ") and " : RUN " in lines[index]:
            lines = lines[index + 1 :]
            break
    kept = [
        _COLOUR.sub("", line).rstrip()
        for line in lines
        if line.strip() and not line.startswith((" ---> ", "Removing intermediate"))
    ]
    kept = [line for line in kept if line]
    return "\n".join(kept[-_PIP_TAIL_LINES:])


_locks_guard = threading.Lock()
_build_locks: dict[str, threading.Lock] = {}


def _build_lock(content: str) -> threading.Lock:
    # One per distinct image, so concurrent trials wanting the same set wait for a
    # single build while different sets build side by side.
    with _locks_guard:
        return _build_locks.setdefault(content, threading.Lock())


def build_local_base(client: docker.DockerClient, name: str) -> None:
    """Make a Debian bookworm image with python3 and pip from the Debian archive, no
    registry."""
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
        include = ",".join(_LOCAL_BASE_PACKAGES)
        _run(["debootstrap", "--variant=minbase", f"--include={include}", "bookworm", root])
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
            _add_file(tar, name, data)
    buffer.seek(0)
    return buffer


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


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
