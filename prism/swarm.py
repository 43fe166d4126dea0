"""The stack on Docker Swarm: `make swarm-up`, `swarm-scale`, `swarm-down`.

    python -m prism.swarm up [--stack prism] [--port 8080] [--runners 3]
    python -m prism.swarm scale N
    python -m prism.swarm down [--volumes]

`up` deploys compose.yaml with `docker stack deploy` on the engine's swarm, making a
single-node swarm first when the engine is in none (and noting that it did, so that
`down` leaves it again), with the tokens in $PRISM_DATA_DIR (made when missing, as
`make up` makes them), and waits until the gateway answers the API. The images must be
on the node: `make swarm-up` builds them first. There is no registry here, so images
are never resolved against one (`--resolve-image never`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prism.environ import env
from prism.stack import ensure_secret

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "compose.yaml"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus.yml"
SERVICES_IMAGE = "prism-services:latest"
# The label `make services-image` puts on the image: a hash of what it was built from.
HASH_LABEL = "prism.services.hash"
DOCKER_SOCKET = Path("/var/run/docker.sock")
READY_SECONDS = 180.0
GONE_SECONDS = 120.0


class SwarmError(RuntimeError):
    pass


def docker(*args: str, env_extra: dict[str, str] | None = None, check: bool = True) -> str:
    """A docker CLI command's stdout; SwarmError with its stderr when it fails."""
    done = subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env_extra or {})},
        check=False,
    )
    if check and done.returncode != 0:
        raise SwarmError(f"docker {' '.join(args[:3])}: {done.stderr.strip() or done.stdout}")
    return done.stdout


@dataclass(frozen=True)
class Deployment:
    stack: str
    data_dir: Path
    port: int
    # More of compose.yaml's variables (PRISM_RUNNER_SLOTS, PRISM_SERVICES_IMAGE, ...).
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def created_marker(self) -> Path:
        return self.data_dir / "swarm" / "created-by-prism"

    @property
    def image_record(self) -> Path:
        """The image tag `up` made for the stack, which `down` removes."""
        return self.data_dir / "swarm" / f"{self.stack}.image"

    @property
    def api_token(self) -> str:
        return (self.data_dir / "api_token").read_text().strip()

    def service(self, name: str) -> str:
        return f"{self.stack}_{name}"

    def environment(self, runners: int) -> dict[str, str]:
        environment = {
            "PRISM_DOCKER_GID": str(DOCKER_SOCKET.stat().st_gid),
            "PRISM_DATA_DIR": str(self.data_dir),
            "PRISM_GATEWAY_PORT": str(self.port),
            "PRISM_RUNNER_REPLICAS": str(runners),
            "PRISM_PROMETHEUS_CONFIG": content_name(PROMETHEUS_CONFIG),
            **self.settings,
        }
        environment["PRISM_SERVICES_IMAGE"] = versioned(
            environment.get("PRISM_SERVICES_IMAGE", SERVICES_IMAGE)
        )
        return environment


def content_name(path: Path) -> str:
    """A name that changes with the file: Swarm's configs cannot change in place."""
    return f"prism_prometheus_{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def versioned(image: str) -> str:
    """The image under a tag of its content (the hash `make services-image` labels it
    with): a service's spec changes when the image does, so Swarm rolls the new one out
    (with no registry, a tag that stays the same would never be looked at again)."""
    labels = docker("image", "inspect", "--format", "{{json .Config.Labels}}", image)
    digest = (json.loads(labels) or {}).get(HASH_LABEL)
    if not digest:
        return image
    tagged = f"{image.rpartition(':')[0] or image}:h-{digest[:12]}"
    docker("tag", image, tagged)
    return tagged


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()


def cluster_id() -> str:
    return docker("info", "--format", "{{.Swarm.Cluster.ID}}").strip()


def ensure_swarm(deployment: Deployment) -> bool:
    """A swarm to deploy on; True if this made it (noted with the swarm's id, so that
    `down` leaves that swarm only, and only when nothing else runs on it)."""
    if swarm_state() == "active":
        return False
    docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    deployment.created_marker.parent.mkdir(parents=True, exist_ok=True)
    deployment.created_marker.write_text(cluster_id() + "\n")
    return True


def up(deployment: Deployment, runners: int) -> None:
    deployment.data_dir.mkdir(parents=True, exist_ok=True)
    deployment.data_dir.chmod(0o700)
    for name in ("api_token", "runner_token"):
        ensure_secret(deployment.data_dir / name)
        # Swarm reads the files when deploying, as this user; the services get them as
        # secrets owned by their own uid.
        os.chmod(deployment.data_dir / name, stat.S_IRUSR | stat.S_IWUSR)
    made = ensure_swarm(deployment)
    environment = deployment.environment(runners)
    deployment.image_record.parent.mkdir(parents=True, exist_ok=True)
    deployment.image_record.write_text(environment["PRISM_SERVICES_IMAGE"] + "\n")
    docker(
        "stack", "deploy", "--resolve-image", "never", "--prune",
        "-c", str(COMPOSE_FILE), deployment.stack,
        env_extra=environment,
    )  # fmt: skip
    wait_ready(deployment)
    swarm = "a single-node swarm made now" if made else "the engine's swarm"
    print(
        f"prism is up on {swarm}: gateway http://127.0.0.1:{deployment.port}, "
        f"{runners} runners (stack {deployment.stack})"
    )


def wait_ready(deployment: Deployment) -> None:
    """Until the gateway answers the API with the token (the orchestrator has
    recovered and serves); SwarmError naming the services' states if it never does."""
    url = f"http://127.0.0.1:{deployment.port}/v1/sweeps?pageSize=1"
    deadline = time.monotonic() + READY_SECONDS
    last = ""
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {deployment.api_token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                if reply.status == 200:
                    return
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
        except OSError as error:
            last = str(error)
        time.sleep(1)
    states = docker(
        "stack", "ps", deployment.stack, "--format", "{{.Name}} {{.CurrentState}} {{.Error}}",
        check=False,
    )  # fmt: skip
    raise SwarmError(f"the gateway did not answer in {READY_SECONDS:g} s ({last}):\n{states}")


def scale(deployment: Deployment, runners: int) -> None:
    docker("service", "scale", "--detach", f"{deployment.service('runner')}={runners}")
    print(f"runners: {runners}")


def tasks(deployment: Deployment, service: str) -> list[dict[str, str]]:
    """The service's tasks that should be running, as `docker service ps` reports them."""
    out = docker(
        "service", "ps", deployment.service(service), "--filter", "desired-state=running",
        "--format", "{{json .}}",
    )  # fmt: skip
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def down(deployment: Deployment, *, volumes: bool) -> None:
    docker("stack", "rm", deployment.stack, check=False)
    deadline = time.monotonic() + GONE_SECONDS
    label = f"com.docker.stack.namespace={deployment.stack}"
    while time.monotonic() < deadline:
        left = docker("ps", "-aq", "--filter", f"label={label}", check=False).split()
        left += docker("network", "ls", "-q", "--filter", f"label={label}", check=False).split()
        if not left:
            break
        time.sleep(1)
    else:
        print(f"prism.swarm: stack {deployment.stack}: not all gone after {GONE_SECONDS:g} s")
    if volumes:
        for volume in docker("volume", "ls", "-q", "--filter", f"label={label}").split():
            docker("volume", "rm", volume, check=False)
    if deployment.image_record.exists():
        image = deployment.image_record.read_text().strip()
        # The tag up made (the image stays under its other tags), unless another stack's
        # services still run from it.
        others = docker("service", "ls", "--format", "{{.Image}}", check=False).split()
        if ":h-" in image and image not in others:
            docker("image", "rm", image, check=False)
        deployment.image_record.unlink()
    print(f"stack {deployment.stack} removed")
    if not deployment.created_marker.exists():
        return
    made = deployment.created_marker.read_text().strip()
    if swarm_state() != "active" or cluster_id() != made:
        deployment.created_marker.unlink()  # that swarm is gone already
    elif docker("service", "ls", "-q").split():
        print("the swarm swarm-up made is kept: other services run on it")
    else:
        docker("swarm", "leave", "--force")
        deployment.created_marker.unlink()
        print("and the swarm swarm-up had made")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m prism.swarm", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--stack", default="prism")
    parser.add_argument("--port", type=int, default=int(env("PRISM_GATEWAY_PORT", "8080")))
    commands = parser.add_subparsers(dest="command", required=True)
    up_ = commands.add_parser("up")
    up_.add_argument("--runners", type=int, default=3)
    scale_ = commands.add_parser("scale")
    scale_.add_argument("runners", type=int)
    down_ = commands.add_parser("down")
    down_.add_argument("--volumes", action="store_true", help="remove the stack's volumes too")
    args = parser.parse_args(argv)
    deployment = Deployment(args.stack, Path(env("PRISM_DATA_DIR", ".prism")).resolve(), args.port)
    try:
        if args.command == "up":
            up(deployment, args.runners)
        elif args.command == "scale":
            scale(deployment, args.runners)
        else:
            down(deployment, volumes=args.volumes)
    except (SwarmError, OSError) as error:
        sys.exit(f"prism.swarm: {error}")


if __name__ == "__main__":
    main()
