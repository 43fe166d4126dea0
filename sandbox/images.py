"""The sandbox image, the base it is built on, and the images derived from it for a
sweep's ``requirements``: each built at most once per content.

The base is ``python:3.11-slim`` where a registry answers. Without one (as on the
project's machines) it is ``prism-base:bookworm-pip``, made offline with debootstrap
and ``docker import``. ``PRISM_SANDBOX_BASE`` names another base instead. Either way
the base has pip, which a derived image needs.

A derived image (``prism-sandbox-req:<hash>``) adds the requirements, installed by
pip into /opt/prism/site (on PYTHONPATH), to the sandbox image. A package's build code
(setup.py, a build backend) is the sweep's to choose and would run with the network of
whatever builds it, so nothing is built from source: the host's pip downloads wheels
only, which runs none of a package's code, and the image build installs them with no
network. The trials in it run without one too, like every trial.
"""

import argparse
import contextlib
import hashlib
import importlib.util
import io
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests
from packaging.utils import canonicalize_name

from prism import logs
from prism.requirements import parse_requirements
from sandbox.engine import EngineError, apt_install

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
# Only in the install stage: the final image does not keep them.
_WHEELS_DIR = "/opt/prism/wheels"

# A requirements download that takes longer is abandoned.
DOWNLOAD_TIMEOUT_SECONDS = 900
# A build that prints nothing for this long is taken as hung.
BUILD_READ_TIMEOUT_SECONDS = 900
# What a derived build's pip may use to unpack large wheels.
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

log = logs.get("sandbox.images")


class ImageError(RuntimeError):
    """An image could not be made; the message says what to do about it.

    ImageError                 the engine, the base or the index failed: infrastructure
    └── RequirementsError      pip refused the requirements: the sweep's own error
    """


class RequirementsError(ImageError):
    """The requirements cannot be installed (unknown package, no matching version, no
    wheel for the sandbox); the message ends with pip's own explanation."""


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
    log.info("building the sandbox image", image=tag, base=base)
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
    for the same requirements, base image and pip sources exists. Blocking: a build
    takes as long as pip does.

    This process's pip resolves the requirements and downloads them, dependencies
    included, as wheels for the base image's python3; the image build then installs
    those files with no network at all. pip's sources are only these: ``find_links``,
    a folder of distributions; ``index_url``, an index in place of pip's default;
    ``no_index``, no index at all; ``cert``, a CA bundle pip trusts (an intercepting
    proxy's, say). This host's own pip configuration is ignored.
    Raises RequirementsError when pip refuses the requirements, ImageError otherwise.
    """
    try:
        normalised = parse_requirements(requirements)
    except ValueError as error:
        raise RequirementsError(str(error)) from None
    if not normalised:
        return base
    index = _index_options(index_url, no_index=no_index)
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
    dockerfile = _requirements_dockerfile(normalised)

    digest = hashlib.sha256()
    cert_part = hashlib.sha256(ca).hexdigest() if ca is not None else ""
    for part in (
        dockerfile,
        base_id,
        *index,
        cert_part,
        *(f"{name}\0{sha}" for name, sha in links),
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    content = digest.hexdigest()
    tag = f"{REQUIREMENTS_REPOSITORY}:{content[:12]}"
    sources = [*index, *(["--find-links", str(find_links)] if find_links is not None else [])]
    if cert is not None:
        sources += ["--cert", str(cert)]

    with _build_lock(content):
        try:
            if _reuse(client, REQUIREMENTS_LABEL, content, tag):
                return tag
            log.info("building a requirements image", image=tag, requirements=normalised)
            target = _target(client, base_id)
            with tempfile.TemporaryDirectory(prefix="prism-wheels-") as folder:
                wheels = _download(normalised, target, sources, Path(folder))
                _build_requirements_image(client, tag, content, base, dockerfile, wheels)
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


def _index_options(index_url: str | None, *, no_index: bool) -> list[str]:
    if no_index:
        return ["--no-index"]
    if index_url is None:
        return []
    url = urllib.parse.urlsplit(index_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ImageError(f"index_url must be an http or https URL, got {index_url!r}")
    return ["--index-url", index_url]


def _links(find_links: Path | None) -> list[tuple[str, str]]:
    """(name, sha256) of the distributions in the find_links folder, by name."""
    if find_links is None:
        return []
    if not find_links.is_dir():
        raise ImageError(f"find_links {str(find_links)!r} is not a folder")
    links = []
    try:
        for path in sorted(find_links.iterdir()):
            if path.is_file():
                with path.open("rb") as file:
                    links.append((path.name, hashlib.file_digest(file, "sha256").hexdigest()))
    except OSError as error:
        raise ImageError(f"find_links {str(find_links)!r}: {error}") from None
    return links


@dataclass(frozen=True)
class _Target:
    """An image's python3 as pip's target options name it: what wheels it installs."""

    python_version: str  # "3.11"
    implementation: str  # "cp"
    abis: tuple[str, ...]
    platforms: tuple[str, ...]  # the most specific first

    def pip_options(self) -> list[str]:
        options = ["--python-version", self.python_version, "--implementation", self.implementation]
        options += [f"--abi={abi}" for abi in self.abis]
        options += [f"--platform={platform}" for platform in self.platforms]
        return options

    def __str__(self) -> str:
        platform = self.platforms[0] if self.platforms else "any platform"
        return f"{self.implementation}{self.python_version.replace('.', '')}, {platform}"


# Run by the base image's python3: its version and the wheel tags its own pip
# installs, so that the wheels downloaded here are the ones its offline install takes.
_PROBE = """\
import json, sys
from pip._vendor.packaging import tags
print(json.dumps({
    "version": "%d.%d" % sys.version_info[:2],
    "implementation": tags.interpreter_name(),
    "tags": [str(tag) for tag in tags.sys_tags()],
}))
"""
_PROBE_TIMEOUT_SECONDS = 60
_PROBE_MEMORY_BYTES = 256 * 2**20
# By image id, which names its content. A probe raced by another is merely repeated.
_targets: dict[str, _Target] = {}


def _target(client: docker.DockerClient, image_id: str) -> _Target:
    """What the image's python3 installs, asked of it once in a network-less container."""
    if image_id in _targets:
        return _targets[image_id]
    container = client.containers.create(
        image_id,
        entrypoint=["python3", "-c", _PROBE],
        user="65534:65534",
        environment={"PYTHONDONTWRITEBYTECODE": "1"},
        network_mode="none",
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=16,
        mem_limit=_PROBE_MEMORY_BYTES,
        memswap_limit=_PROBE_MEMORY_BYTES,
    )
    try:
        container.start()
        status = container.wait(timeout=_PROBE_TIMEOUT_SECONDS)
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
        stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    if status.get("StatusCode") != 0:
        raise ImageError(
            f"image {image_id}: python3 cannot tell which wheels its pip installs:\n"
            + _last_lines(stderr.splitlines())
        )
    try:
        answer = json.loads(stdout)
        tags = [str(tag).split("-") for tag in answer["tags"]]
        if any(len(parts) != 3 for parts in tags):
            raise ValueError("a tag without exactly three parts")
        target = _Target(
            python_version=str(answer["version"]),
            implementation=str(answer["implementation"]),
            abis=tuple(dict.fromkeys(abi for _, abi, _ in tags)),
            platforms=tuple(dict.fromkeys(platform for *_, platform in tags if platform != "any")),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ImageError(f"image {image_id}: unexpected answer about its wheels: {error}") from None
    _targets[image_id] = target
    return target


# pip's log line for a file it passed over under --only-binary, because it is not a
# wheel: the project it was looking for, and the file's URL. In a find-links folder
# every file is looked at for every project.
_SOURCE_SKIPPED = re.compile(r"Skipping link: No sources permitted for ([A-Za-z0-9._-]+): (\S+)")
# pip's last word on a requirement it found nothing to download for.
_NOT_FOUND = re.compile(r"No matching distribution found for ([A-Za-z0-9._-]+)")


def _download(requirements: list[str], target: _Target, sources: list[str], folder: Path) -> Path:
    """Download the requirements and their dependencies as wheels for `target` into
    a new folder in `folder`; return that."""
    if importlib.util.find_spec("pip") is None:
        raise ImageError(f"pip is not installed for {sys.executable}, which downloads requirements")
    wheels, log = folder / "wheels", folder / "pip.log"
    # Made here: pip makes it only when it downloads something, and a requirement
    # whose marker excludes the sandbox's Python is not downloaded.
    wheels.mkdir()
    argv = [
        sys.executable, "-m", "pip", "download",
        # Nothing of this host's pip settings (its indexes, find-links, constraints)
        # counts, only the runner's own: --isolated ignores PIP_* variables, and
        # PIP_CONFIG_FILE set to the null device every configuration file.
        "--isolated", "--disable-pip-version-check", "--no-input", "--no-cache-dir",
        "--progress-bar", "off",
        # pip builds a source distribution by running the package's own code
        # (setup.py, a build backend), with this host's network and files: wheels only.
        "--only-binary=:all:",
        *target.pip_options(), *sources,
        "--dest", str(wheels),
        # A debug log: the only place pip says it skipped a source distribution.
        "--log", str(log),
        "--", *requirements,
    ]  # fmt: skip
    try:
        finished = subprocess.run(
            argv,
            env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=DOWNLOAD_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ImageError(
            f"pip took longer than {DOWNLOAD_TIMEOUT_SECONDS} s to download the requirements"
        ) from None
    except OSError as error:
        raise ImageError(f"running pip: {error}") from None
    if finished.returncode == 0:
        return wheels
    output = finished.stdout.decode(errors="replace")
    tail = _last_lines(output.splitlines())
    if any(marker in output for marker in _NETWORK_TROUBLE):
        raise ImageError(f"pip could not reach the index:\n{tail}")
    sources_only = _sources_only(output, log)
    if sources_only:
        raise RequirementsError(
            f"{', '.join(sources_only)}: no matching wheel for the sandbox ({target}); "
            "source distributions are never built, because building one runs the package's "
            f"own code. pip said:\n{tail}"
        )
    raise RequirementsError(f"pip could not download the requirements as wheels:\n{tail}")


def _sources_only(output: str, log: Path) -> list[str]:
    """The requirements pip found no wheel for but a source distribution of; empty
    when pip does not say so."""
    missing = {canonicalize_name(name) for name in _NOT_FOUND.findall(output)}
    skipped = set()
    try:
        with log.open(errors="replace") as lines:
            for line in lines:
                match = _SOURCE_SKIPPED.search(line)
                if match and _is_file_of(canonicalize_name(match[1]), match[2]):
                    skipped.add(canonicalize_name(match[1]))
    except OSError:
        return []
    return sorted(missing & skipped)


def _is_file_of(project: str, url: str) -> bool:
    """Whether the distribution at `url` is one of `project`'s: its file is named
    ``<name>-<version>.<extension>``, and an older one's name may have dashes too."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    return any(
        canonicalize_name(name[:end]) == project
        for end, character in enumerate(name)
        if character == "-"
    )


def _requirements_dockerfile(requirements: list[str]) -> str:
    # Two stages: pip works as nobody in a stage that is thrown away; the image gets
    # only the installed files, owned by root. There is nothing to install but the
    # wheels downloaded on the host, and the build has no network.
    # The command is in exec form (JSON), so no shell ever sees a requirement.
    pip = [
        "python3", "-m", "pip", "install", "--target", "/tmp/site", "--no-index",
        "--find-links", _WHEELS_DIR, "--only-binary=:all:", "--no-warn-script-location",
        "--", *requirements,
    ]  # fmt: skip
    lines = [
        "ARG BASE",
        "FROM ${BASE} AS install",
        "ARG STAGE",
        f'LABEL {HASH_LABEL}="" {_STAGE_LABEL}="${{STAGE}}"',
        "USER 65534:65534",
        "ENV HOME=/tmp PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 "
        "PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off",
        f"COPY wheels {_WHEELS_DIR}",
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
    wheels: Path,
) -> None:
    # Names the build it belongs to (`docker images` shows whose it is), and this
    # attempt: a runner removes only its own stage.
    stage = f"{content[:12]}-{secrets.token_hex(4)}"
    output: deque[str] = deque(maxlen=200)
    error: dict[str, Any] | None = None
    # On disk, not in memory: wheels can be large.
    with tempfile.TemporaryFile() as context:
        with tarfile.open(fileobj=context, mode="w") as tar:
            _add_file(tar, "Dockerfile", dockerfile.encode())
            folder = tarfile.TarInfo("wheels")
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
            for path in sorted(wheels.iterdir()):
                info = tarfile.TarInfo(f"wheels/{path.name}")
                info.size = path.stat().st_size
                info.mode = 0o644
                with path.open("rb") as wheel:
                    tar.addfile(info, wheel)
        context.seek(0)
        try:
            for chunk in client.api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                buildargs={"BASE": base, "STAGE": stage},
                labels={REQUIREMENTS_LABEL: content},
                network_mode="none",
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
        raise RequirementsError(f"pip could not install the requirements:\n{_pip_tail(output)}")
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
    return _last_lines(
        line for line in lines if not line.startswith((" ---> ", "Removing intermediate"))
    )


def _last_lines(lines: Iterable[str]) -> str:
    kept = [_COLOUR.sub("", line).rstrip() for line in lines]
    return "\n".join([line for line in kept if line][-_PIP_TAIL_LINES:])


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
        log.info("installing debootstrap with apt-get")
        try:
            apt_install("debootstrap")
        except EngineError as error:
            raise ImageError(str(error)) from None
    repository, _, tag = name.partition(":")
    with tempfile.TemporaryDirectory(prefix="prism-base-", dir="/var/tmp") as root:
        log.info("building a base image with debootstrap (about a minute)", image=name)
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


def made(client: docker.DockerClient, ensure: Callable[[docker.DockerClient], str]) -> str:
    """Run ``ensure`` and say what it left: ``made <image>``, or ``already built:
    <image>`` when that image was there before (how `make demo` tells a step that
    had nothing to do)."""
    before = {image.id for image in client.images.list()}
    name = ensure(client)
    if client.images.get(name).id in before:
        return f"already built: {name}"
    return f"made {name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.images",
        description="Make the sandbox image, or only its base, unless it exists.",
    )
    parser.add_argument("image", nargs="?", choices=("sandbox", "base"), default="sandbox")
    args = parser.parse_args(argv)
    try:
        # Progress as log lines on stderr: stdout has only what was made.
        logs.configure("sandbox.images", stream=sys.stderr)
    except ValueError as error:
        print(f"sandbox.images: {error}", file=sys.stderr)
        return 2
    ensure = ensure_base_image if args.image == "base" else ensure_sandbox_image
    try:
        with contextlib.closing(docker.from_env()) as client:
            print(made(client, ensure))
    except (ImageError, docker.errors.DockerException) as error:
        print(f"sandbox.images: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
