"""Two hosts on one machine: the stack on a two-node Docker Swarm whose second node is a
second Docker engine in a network namespace this script makes, and a sweep whose trials
run on both engines. Run as root, with the main engine in no swarm:

    .venv/bin/python bench/two_hosts.py [--trials 8] [--engine-only]

(--engine-only stops once the second engine has run a container: no swarm is made, so
the main engine's swarm state is never touched.)

It probes the kernel features a swarm of several hosts needs and prints what works;
makes a network namespace with a veth pair to it (addresses in 198.18.0.0/15, the
benchmarking range, which Docker's address pools never use); starts a second dockerd in
it (its own data root, exec root, sockets, containerd, cgroup parent and host name, in
a mount namespace of its own whose /run is its own, so that /var/run/docker.sock there
is that engine's); loads the services' and the sandbox images into it; makes a swarm
with the main engine as manager (advertising the host side of the veth) and joins the
second engine as a worker; deploys compose.yaml with prism.swarm, then scales the
runners to two so that one lands on the worker; runs a sweep through the gateway and
prints the nodes, each runner replica's node, and for each trial its runner and the
engine that created its sandbox container (each engine's own events). Whatever fails is
reported as the step that failed and why. Everything it made is removed at the end,
even on failure; the main engine is left as it was found. Traffic goes only to the
addresses it made and to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prism.stack import free_ports
from prism.swarm import Deployment, SwarmError, docker, down, swarm_state, up
from sandbox.container import OWNER_LABEL, container_name

REPO = Path(__file__).resolve().parent.parent
SERVICES_IMAGE = "prism-services:latest"
SANDBOX_IMAGE = "prism-sandbox:latest"
# RFC 2544's benchmarking range: not routed, and in none of Docker's default pools
# (172.17.0.0/16 and up, 192.168.0.0/16, and Swarm's 10.0.0.0/8).
ADDRESS_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
CGROUPS = Path("/sys/fs/cgroup")
ENGINE_SECONDS = 60.0
TRIAL = """import json, os, time
p = json.loads(os.environ["PRISM_PARAMS"])
time.sleep(2)
print(json.dumps({"loss": p["i"]}))
"""


class CheckFailed(RuntimeError):
    """A step that cannot be done here; the message says what and why."""


def say(line: str = "") -> None:
    print(line, flush=True)


def run(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise CheckFailed(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.stdout}")
    return done


# --- The kernel -------------------------------------------------------------------------


def probe_kernel() -> list[tuple[str, bool, str]]:
    """What a multi-host swarm needs of the kernel, tried in a throwaway namespace."""
    found: list[tuple[str, bool, str]] = []
    name = f"prism-probe-{secrets.token_hex(3)}"

    def attempt(feature: str, *argv: str) -> bool:
        done = run(*argv, check=False)
        detail = " ".join(argv) if done.returncode == 0 else done.stderr.strip()
        found.append((feature, done.returncode == 0, detail))
        return done.returncode == 0

    if attempt("network namespaces", "ip", "netns", "add", name):
        try:
            attempt(
                "veth pairs",
                "ip", "-n", name, "link", "add", "pa", "type", "veth", "peer", "name", "pb",
            )  # fmt: skip
            attempt(
                "vxlan (overlay networks between nodes)",
                "ip", "-n", name, "link", "add", "vx", "type", "vxlan",
                "id", "4242", "dstport", "4789", "dev", "lo",
            )  # fmt: skip
            attempt("bridges", "ip", "-n", name, "link", "add", "pbr", "type", "bridge")
            attempt(
                "iptables in a namespace",
                "ip", "netns", "exec", name, "iptables", "-t", "nat", "-L", "-n",
            )  # fmt: skip
        finally:
            run("ip", "netns", "del", name, check=False)
    release = os.uname().release
    ipvs = Path("/proc/net/ip_vs").exists()
    found.append(
        (
            "IPVS (service VIPs, the routing mesh)",
            ipvs,
            "/proc/net/ip_vs present"
            if ipvs
            else f"/proc/net/ip_vs missing: not built into {release}, "
            f"and {'no' if not Path('/lib/modules', release).exists() else 'a'} "
            f"/lib/modules/{release} to load it from",
        )
    )
    overlayfs = "overlay" in Path("/proc/filesystems").read_text()
    found.append(("overlayfs (overlay2 storage)", overlayfs, "/proc/filesystems"))
    devices = (CGROUPS / "devices" / "devices.list").exists()
    found.append(("cgroup v1 devices hierarchy", devices, str(CGROUPS / "devices")))
    return found


# --- The second host ----------------------------------------------------------------------


def pick_addresses() -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Interface]:
    """A /30 in ADDRESS_RANGE that overlaps no route, address or Docker network here."""
    taken: list[ipaddress.IPv4Network] = []
    for line in run("ip", "-4", "-o", "addr").stdout.splitlines():
        taken.append(ipaddress.IPv4Interface(line.split()[3]).network)
    for route in json.loads(run("ip", "-4", "-j", "route", "show", "table", "all").stdout):
        dst = route.get("dst", "")
        if dst and dst != "default" and ":" not in dst:
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.IPv4Network(dst, strict=False))
    for subnet in docker(
        "network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
        *docker("network", "ls", "-q").split(),
    ).split():  # fmt: skip
        with contextlib.suppress(ValueError):
            taken.append(ipaddress.IPv4Network(subnet))
    first, blocks = int(ADDRESS_RANGE.network_address), ADDRESS_RANGE.num_addresses // 4
    for _ in range(100):
        base = first + 4 * random.randrange(blocks)
        net = ipaddress.IPv4Network((base, 30))
        if not any(net.overlaps(other) for other in taken):
            host, ns = list(net.hosts())
            return ipaddress.IPv4Interface(f"{host}/30"), ipaddress.IPv4Interface(f"{ns}/30")
    raise CheckFailed(f"no free /30 in {ADDRESS_RANGE}")


@dataclass
class SecondHost:
    """A network namespace joined to this host by a veth pair, with a dockerd in it."""

    tag: str
    dir: Path
    host_addr: ipaddress.IPv4Interface
    ns_addr: ipaddress.IPv4Interface
    dockerd: subprocess.Popen[bytes] | None = None

    @property
    def netns(self) -> str:
        return f"prism-h2-{self.tag}"

    @property
    def hostname(self) -> str:
        return self.netns

    @property
    def veth_host(self) -> str:
        return f"h2h-{self.tag}"

    @property
    def veth_ns(self) -> str:
        return f"h2n-{self.tag}"

    @property
    def socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.netns}"

    @property
    def log(self) -> Path:
        return self.dir / "dockerd.log"

    def docker(self, *args: str, check: bool = True) -> str:
        return docker(*args, env_extra={"DOCKER_HOST": f"unix://{self.socket}"}, check=check)

    def answers(self) -> bool:
        ping = ["docker", "-H", f"unix://{self.socket}", "info", "--format", "{{.ID}}"]
        return run(*ping, check=False).returncode == 0

    def make_namespace(self) -> None:
        run("ip", "netns", "add", self.netns)
        run("ip", "-n", self.netns, "link", "set", "lo", "up")
        run("ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns)
        run("ip", "link", "set", self.veth_ns, "netns", self.netns)
        run("ip", "addr", "add", str(self.host_addr), "dev", self.veth_host)
        run("ip", "link", "set", self.veth_host, "up")
        run("ip", "-n", self.netns, "addr", "add", str(self.ns_addr), "dev", self.veth_ns)
        run("ip", "-n", self.netns, "link", "set", self.veth_ns, "up")

    def start_engine(self) -> None:
        """dockerd in the namespace. `ip netns exec` would mount a sysfs of the namespace
        over /sys and so hide the cgroup hierarchies (dockerd: "Devices cgroup isn't
        mounted"): instead it enters the network namespace only, and a mount namespace
        of its own keeps the host's cgroup mounts under a fresh sysfs and a /run of its
        own (so its containerd, exec root and /var/run/docker.sock are its own, and a
        runner's bind mount of that socket reaches this engine, not the host's)."""
        root = self.dir / "root"
        script = self.dir / "start.sh"
        script.write_text(
            "set -e\n"
            f"hostname {self.hostname}\n"
            f"mkdir -p {self.dir}/cgroup\n"
            f"mount --rbind {CGROUPS} {self.dir}/cgroup\n"
            "mount -t sysfs sysfs /sys\n"
            f"mount --move {self.dir}/cgroup {CGROUPS}\n"
            "mount -t tmpfs -o mode=755 tmpfs /run\n"
            f"exec dockerd --data-root {root} --exec-root /run/docker"
            f" --pidfile /run/docker.pid --cgroup-parent {self.cgroup_parent}"
            f" -H unix:///var/run/docker.sock -H unix://{self.socket}\n"
        )
        with self.log.open("ab") as log:
            self.dockerd = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}",
                 "unshare", "--mount", "--uts", "--propagation", "private",
                 "sh", str(script)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + ENGINE_SECONDS
        while not self.answers():
            if self.dockerd.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-5:])
                raise CheckFailed(f"the second dockerd did not come up:\n{tail}")
            time.sleep(0.5)

    def stop_engine(self) -> None:
        if self.dockerd is None:
            return
        if self.dockerd.poll() is None:
            self.dockerd.terminate()
            try:
                self.dockerd.wait(30)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
                self.dockerd.wait(10)
        # Anything of its left in the namespace (a containerd, a shim) or in its cgroups.
        leftover = run("ip", "netns", "pids", self.netns, check=False).stdout.split()
        for hierarchy in CGROUPS.iterdir():
            parent = hierarchy / self.cgroup_parent.lstrip("/")
            for procs in parent.rglob("cgroup.procs") if parent.is_dir() else []:
                leftover += procs.read_text().split()
        for pid in set(leftover):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.5 if leftover else 0)
        # Its cgroup parent in every hierarchy, deepest first.
        for hierarchy in CGROUPS.iterdir():
            parent = hierarchy / self.cgroup_parent.lstrip("/")
            if parent.is_dir():
                for sub in sorted(parent.rglob("*"), key=lambda p: -len(p.parts)):
                    if sub.is_dir():
                        with contextlib.suppress(OSError):
                            sub.rmdir()
                with contextlib.suppress(OSError):
                    parent.rmdir()

    def remove_namespace(self) -> None:
        run("ip", "netns", "del", self.netns, check=False)
        deadline = time.monotonic() + 10
        while run("ip", "link", "show", self.veth_host, check=False).returncode == 0:
            if time.monotonic() > deadline:
                run("ip", "link", "del", self.veth_host, check=False)
                break
            time.sleep(0.2)


def load_image(host: SecondHost, image: str) -> float:
    """The main engine's image into the second engine (no registry here); seconds taken."""
    started = time.monotonic()
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    load = subprocess.run(
        ["docker", "-H", f"unix://{host.socket}", "load", "-q"],
        stdin=save.stdout, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert save.stdout is not None
    save.stdout.close()
    if save.wait() != 0 or load.returncode != 0:
        raise CheckFailed(f"loading {image} into the second engine failed: {load.stderr.strip()}")
    return time.monotonic() - started


def ensure_image(image: str) -> str:
    if docker("image", "inspect", image, check=False):
        return "present"
    module = "sandbox.services_image" if image == SERVICES_IMAGE else "sandbox.images"
    argv = [sys.executable, "-m", module]
    if subprocess.run(argv, cwd=REPO, check=False).returncode != 0:
        raise CheckFailed(f"`python -m {module}` could not build {image}")
    return "built now"


# --- The engines' evidence ------------------------------------------------------------------


@dataclass
class EventWatch:
    """Sandbox containers given to a trial on one engine, from its own event stream: a
    container is created ahead of its trial and renamed for it when it is taken."""

    engine: str
    argv: list[str]
    created: list[dict[str, str]] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*self.argv, "events", "--format", "{{json .}}",
             "--filter", "type=container", "--filter", "event=rename",
             "--filter", f"label={OWNER_LABEL}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError, KeyError):
                attributes = json.loads(line)["Actor"]["Attributes"]
                self.created.append(attributes)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        if self.thread is not None:
            self.thread.join(5)


class Api:
    def __init__(self, deployment: Deployment) -> None:
        self.base = f"http://127.0.0.1:{deployment.port}"
        self.token = deployment.api_token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.load(reply)


def wait_for(what: str, predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise CheckFailed(f"{what}: not within {timeout:g} s")


# --- The check ---------------------------------------------------------------------------------


class Steps:
    """Each step's outcome, printed as it ends; cleanups run last-made first."""

    def __init__(self) -> None:
        self.cleanups: list[tuple[str, Callable[[], object]]] = []
        self.failed: list[str] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except (CheckFailed, SwarmError, OSError, subprocess.SubprocessError) as error:
            self.failed.append(name)
            say(f"[FAILED] {name}: {error}")
            raise
        say(f"[ok] {name} ({time.monotonic() - started:.1f} s)")

    def undo(self, name: str, action: Callable[[], object]) -> None:
        self.cleanups.append((name, action))

    def clean_up(self) -> None:
        say("\ncleaning up")
        for name, action in reversed(self.cleanups):
            try:
                action()
                say(f"  [ok] {name}")
            except Exception as error:
                say(f"  [FAILED] {name}: {error}")


def check(trials: int, steps: Steps, *, engine_only: bool = False) -> None:
    say("kernel features (tried in a throwaway network namespace):")
    probes = probe_kernel()
    for feature, ok, detail in probes:
        say(f"  {'yes' if ok else 'NO ':4} {feature:40} {detail}")
    missing = {feature for feature, ok, _ in probes if not ok}
    if "network namespaces" in missing or "veth pairs" in missing:
        raise CheckFailed("a second host here needs network namespaces and veth pairs")
    if any(feature.startswith("IPVS") for feature in missing):
        say(
            "  without IPVS a service's virtual IP and the routing mesh do not work: "
            "compose.yaml uses DNS round robin and host-mode publishing, which do not need it"
        )
    if any(feature.startswith("vxlan") for feature in missing):
        say(
            "  without vxlan the stack's overlay networks cannot span two nodes: "
            "expect the overlay step to fail"
        )
    say()

    with steps.step("the main engine is in no swarm"):
        state = swarm_state()
        if state != "inactive":
            raise CheckFailed(
                f"its swarm state is {state!r}: this check makes a swarm of its own and "
                "does not disturb one that exists (leave it first, or run elsewhere)"
            )
    networks_before = set(docker("network", "ls", "--format", "{{.Name}}").split())

    tag = secrets.token_hex(3)
    with steps.step("a network namespace and a veth pair"):
        host_addr, ns_addr = pick_addresses()
        workdir = Path(tempfile.mkdtemp(prefix=f"prism-h2-{tag}-", dir="/var/tmp"))
        steps.undo(f"remove {workdir}", lambda: shutil.rmtree(workdir))
        host = SecondHost(tag, workdir, host_addr, ns_addr)
        steps.undo(f"delete namespace {host.netns} and its veth", host.remove_namespace)
        host.make_namespace()
    say(f"  namespace {host.netns}: {host.veth_host} {host_addr} <-> {host.veth_ns} {ns_addr}")

    with steps.step("a second dockerd in the namespace"):
        steps.undo("stop the second dockerd", host.stop_engine)
        host.start_engine()
        assert host.dockerd is not None
        info = json.loads(host.docker("info", "--format", "{{json .}}"))
    say(
        f"  pid {host.dockerd.pid}, name {info['Name']}, data root {info['DockerRootDir']}, "
        f"socket {host.socket}, cgroup parent {host.cgroup_parent}"
    )
    # compose.yaml gives every runner one PRISM_DOCKER_GID: the sockets' groups must agree.
    gids = (host.socket.stat().st_gid, Path("/var/run/docker.sock").stat().st_gid)
    say(f"  socket group {gids[0]} (the main engine's: {gids[1]})")
    if gids[0] != gids[1]:
        raise CheckFailed("the engines' sockets have different groups: runners need one gid")

    with steps.step("the images on both engines (no registry: docker save | docker load)"):
        for image in (SERVICES_IMAGE, SANDBOX_IMAGE):
            how = ensure_image(image)
            say(f"  {image}: {how} on the main engine, loaded in {load_image(host, image):.1f} s")

    if engine_only:
        with steps.step("a hardened container on the second engine"):
            out = host.docker(
                "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges", "--pids-limit", "64",
                "--memory", "256m", "--memory-swap", "256m", "--user", "65534",
                SANDBOX_IMAGE, "python3", "-c",
                "import os; print(os.uname().nodename, sorted(os.listdir('/sys/class/net')))",
            )  # fmt: skip
        say(f"  container {out.strip()}")
        return

    with steps.step("a swarm: the main engine as manager"):
        docker(
            "swarm", "init", "--advertise-addr", str(host_addr.ip),
            "--listen-addr", f"{host_addr.ip}:2377",
        )  # fmt: skip
        steps.undo("the main engine leaves the swarm", lambda: leave_main(networks_before))
    with steps.step("the namespace's engine joins as a worker"):
        token = docker("swarm", "join-token", "-q", "worker").strip()
        steps.undo("the worker leaves the swarm", lambda: host.docker("swarm", "leave", "--force"))
        # Drained until the stack is up, so that the gateway (published in host mode)
        # and everything but the second runner start on the manager.
        host.docker(
            "swarm", "join", "--token", token, "--advertise-addr", str(ns_addr.ip),
            "--listen-addr", f"{ns_addr.ip}:2377", "--availability", "drain",
            f"{host_addr.ip}:2377",
        )  # fmt: skip
        worker_id = host.docker("info", "--format", "{{.Swarm.NodeID}}").strip()

        def ready() -> list[dict[str, str]] | None:
            out = docker("node", "ls", "--format", "{{json .}}")
            nodes = [json.loads(line) for line in out.splitlines()]
            return nodes if [n["Status"] for n in nodes] == ["Ready"] * 2 else None

        nodes = wait_for("two nodes Ready", ready, 60)
    for node in nodes:
        addr = docker("node", "inspect", node["ID"], "--format", "{{.Status.Addr}}").strip()
        role = "manager" if node.get("ManagerStatus") else "worker"
        engine = "the namespace's engine" if node["ID"] == worker_id else "the main engine"
        say(f"  node {node['Hostname']:20} {role:8} {node['Status']} {addr:15} {engine}")

    deployment = Deployment(
        stack=f"h2{tag}",
        data_dir=workdir / "prism-data",
        port=free_ports(1)[0],
        settings={
            "PRISM_SERVICES_IMAGE": SERVICES_IMAGE,
            "PRISM_SANDBOX_IMAGE": SANDBOX_IMAGE,
            "PRISM_RUNNER_SLOTS": "2",
            "PRISM_RUNNER_DRAIN_SECONDS": "2",
        },
    )
    with steps.step(f"the stack {deployment.stack} deployed, one runner, gateway answers"):
        steps.undo(f"remove the stack {deployment.stack}", lambda: remove_stack(deployment, host))
        up(deployment, runners=1)
    runner_service = deployment.service("runner")
    with steps.step("the worker active, runners scaled to 2, one on each node"):
        docker("node", "update", "--availability", "active", worker_id)
        docker("service", "scale", "--detach", f"{runner_service}=2")

        def placed() -> dict[str, str] | None:
            running = {
                t["Name"]: t["Node"]
                for t in docker_tasks(runner_service)
                if t["CurrentState"].startswith("Running")
            }
            return running if len(set(running.values())) == 2 else None

        try:
            placement = wait_for("one runner on each node", placed, 90)
        except CheckFailed:
            # The scheduler spreads a service's tasks by default; insist if it did not.
            docker(
                "service", "update", "--detach", "--placement-pref-add", "spread=node.id",
                runner_service,
            )  # fmt: skip
            placement = wait_for("one runner on each node", placed, 120)

        def healthy() -> bool:
            statuses = host.docker(
                "ps", "--filter", f"label=com.docker.swarm.service.name={runner_service}",
                "--format", "{{.Status}}",
            )  # fmt: skip
            return "(healthy)" in statuses

        wait_for("the worker's runner healthy", healthy, 90)
    for name, node in sorted(placement.items()):
        say(f"  replica {name:24} on {node}")

    with steps.step("the orchestrator reaches both runners across the overlay"):
        reached = reach_runners(deployment)
        for line in reached:
            say(f"  {line}")
        up_now = wait_for(
            "both runners up for the orchestrator", lambda: runners_up(deployment), 60
        )
    for name in up_now:
        say(f"  prism_runner_up{{runner={name!r}}} 1 (the orchestrator's metrics)")

    watches = [
        EventWatch(docker("info", "--format", "{{.Name}}").strip(), ["docker"]),
        EventWatch(host.hostname, ["docker", "-H", f"unix://{host.socket}"]),
    ]
    api = Api(deployment)
    with steps.step(f"a sweep of {trials} trials through the gateway"):
        for watch in watches:
            watch.start()
            steps.undo(f"stop watching {watch.engine}'s events", watch.stop)
        time.sleep(1)
        spec = {
            "task": "two hosts",
            "script": TRIAL,
            "parameters": {"list": [{"i": i} for i in range(trials)]},
            "maxParallel": 64,
        }
        sweep_id = api.call("POST", "/v1/sweeps", spec)["id"]

        def ended() -> dict[str, Any] | None:
            sweep: dict[str, Any] = api.call("GET", f"/v1/sweeps/{sweep_id}")
            return sweep if sweep["state"] != "running" else None

        sweep = wait_for("the sweep's end", ended, 240)
        time.sleep(1)
        for watch in watches:
            watch.stop()
        if sweep["state"] != "done":
            raise CheckFailed(f"the sweep ended {sweep['state']}")
    report(sweep, watches, trials)


def docker_tasks(service: str) -> list[dict[str, str]]:
    out = docker(
        "service", "ps", service, "--filter", "desired-state=running", "--format", "{{json .}}"
    )
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def reach_runners(deployment: Deployment) -> list[str]:
    """From the orchestrator's container (on the manager): tasks.runner resolved on the
    stack's overlay, and a TCP connection to each runner's gRPC port."""
    container = docker(
        "ps", "-q", "--filter",
        f"label=com.docker.swarm.service.name={deployment.service('orchestrator')}",
    ).split()[0]  # fmt: skip
    code = (
        "import json, socket\n"
        "out = {}\n"
        "for ip in sorted({a[4][0] for a in socket.getaddrinfo('tasks.runner', 50061)}):\n"
        "    try:\n"
        "        socket.create_connection((ip, 50061), timeout=5).close(); out[ip] = 'connected'\n"
        "    except OSError as e:\n"
        "        out[ip] = str(e)\n"
        "print(json.dumps(out))\n"
    )
    result = json.loads(docker("exec", container, "python3", "-c", code))
    lines = [f"{ip}:50061 {state}" for ip, state in result.items()]
    if len(result) != 2 or set(result.values()) != {"connected"}:
        raise CheckFailed(
            "tasks.runner from the orchestrator: " + "; ".join(lines) + " (an overlay between "
            "nodes carries its traffic in VXLAN over UDP 4789 between the nodes' addresses)"
        )
    return lines


def runners_up(deployment: Deployment) -> list[str] | None:
    """The runners the orchestrator has connected, by name, once there are two."""
    container = docker(
        "ps", "-q", "--filter",
        f"label=com.docker.swarm.service.name={deployment.service('orchestrator')}",
    ).split()[0]  # fmt: skip
    code = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9101/metrics').read().decode())"
    body = docker("exec", container, "python3", "-c", code, check=False)
    names = sorted(
        line.split('"')[1]
        for line in body.splitlines()
        if line.startswith("prism_runner_up{") and float(line.split()[-1]) == 1
    )
    return names if len(names) == 2 else None


def report(sweep: dict[str, Any], watches: list[EventWatch], trials: int) -> None:
    """Each trial's runner (the orchestrator's record) beside the engine that ran its
    sandbox container: the container's owner label (the runner) and its name, which is
    made of the owner and the execution id (`<sweep>/<index>`, `@<attempt>` after the
    first)."""
    seen: dict[int, list[tuple[str, str]]] = {}
    for watch in watches:
        for renamed in watch.created:
            owner = renamed.get(OWNER_LABEL, "")
            executions = {
                container_name(owner, f"{sweep['id']}/{i}" + (f"@{a}" if a > 1 else "")): i
                for i in range(trials)
                for a in range(1, 6)
            }
            index = executions.get(renamed.get("name", ""))
            if index is not None:
                seen.setdefault(index, []).append((watch.engine, owner))
    say(
        "\ntrials: runner from the orchestrator; the engine (by its node's name) and the "
        "container's owner from each engine's own events"
    )
    problems: list[str] = []
    per_engine: Counter[str] = Counter()
    for trial in sweep["trials"]:
        index, runner = trial["index"], trial.get("runner", "")
        containers = seen.get(index, [])
        per_engine.update(engine for engine, _ in containers)
        where = "; ".join(f"{engine} (owner {owner})" for engine, owner in containers)
        say(
            f"  trial {index:2}  {trial['outcome']:9}  loss {trial['metrics']['loss']}  "
            f"runner {runner:34}  container on {where or 'no engine seen'}"
        )
        if trial["outcome"] != "succeeded":
            problems.append(f"trial {index} {trial['outcome']}: {trial.get('reason', '')}")
        if len(containers) != trial.get("attempts", 1):
            problems.append(f"trial {index}: {len(containers)} containers seen")
        elif containers[-1][1] != runner:
            problems.append(f"trial {index}: its container's owner is not its runner")
        elif not runner.endswith(f"-{containers[-1][0]}"):
            problems.append(f"trial {index}: its runner's node is not the engine that ran it")
    say(f"sandbox containers per engine: {dict(per_engine)}")
    if len(sweep["trials"]) != trials:
        problems.append(f"{len(sweep['trials'])} trials recorded")
    if len(per_engine) != 2:
        problems.append(f"trials ran on {sorted(per_engine)} only")
    if problems:
        raise CheckFailed("; ".join(problems))
    say("both engines ran trials, each trial on the engine of the node its runner is on")


def remove_stack(deployment: Deployment, host: SecondHost) -> None:
    down(deployment, volumes=True)
    label = f"label=com.docker.stack.namespace={deployment.stack}"
    deadline = time.monotonic() + 60
    while host.docker("ps", "-aq", "--filter", label, check=False).split():
        if time.monotonic() > deadline:
            raise CheckFailed("the worker still has the stack's containers")
        time.sleep(1)


def leave_main(networks_before: set[str]) -> None:
    docker("swarm", "leave", "--force")
    # The networks a swarm makes on each node, if the engine had none before.
    now = set(docker("network", "ls", "--format", "{{.Name}}").split())
    for name in {"ingress", "docker_gwbridge"} & now - networks_before:
        docker("network", "rm", name, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument(
        "--engine-only",
        action="store_true",
        help="stop after the second engine runs a container: no swarm, the main engine's "
        "swarm state untouched",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("two_hosts.py: run as root (it makes namespaces and starts a dockerd)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    steps = Steps()
    status = 0
    try:
        check(args.trials, steps, engine_only=args.engine_only)
    except (CheckFailed, SwarmError, OSError, subprocess.SubprocessError) as error:
        if not steps.failed:
            say(f"[FAILED] {error}")
        status = 1
    except BaseException:
        status = 1
        raise
    finally:
        steps.clean_up()
        say(f"\n{'two hosts: ok' if status == 0 else 'two hosts: FAILED'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
