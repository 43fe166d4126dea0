"""The local stack: the processes `make up` starts and `make down` stops.

    python -m prism.stack up | down | logs [--follow] | demo

Each service is a real process (gateway = Envoy, orchestrator, one process per
runner) started in its own session, logging to $PRISM_DATA_DIR/logs/<name>.log,
its pid in $PRISM_DATA_DIR/run/<name>.pid. `down` signals exactly those pids,
after checking each still runs the command `up` gave it. The tests start the
same processes through `Stack`, on free ports and in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prism.environ import env
from prism.healthcheck import serving
from prism.steps import shown

GATEWAY, ORCHESTRATOR = "gateway", "orchestrator"
MODULES = {GATEWAY: "gateway", ORCHESTRATOR: "orchestrator_svc"}
RUNNER_MODULE = "runner_svc"
# How long a service may take to stop on SIGTERM before `down` kills it (a runner's
# drain comes on top).
STOP_SECONDS = 15.0


class StackError(RuntimeError):
    pass


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Where each service of one stack listens and keeps its files."""

    data_dir: Path
    host: str = "127.0.0.1"
    gateway_port: int = 8080
    orchestrator_port: int = 50051
    runner_ports: tuple[int, ...] = (50061, 50062, 50063)
    runner_prefix: str = "runner"
    image: str = "prism-sandbox:latest"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Each service's /metrics (the gateway's: Envoy's statistics) on `host`; None, or no
    # runner ports: none. `make up` has them (from_env); a Layout made in code opts in.
    orchestrator_metrics_port: int | None = None
    gateway_metrics_port: int | None = None
    runner_metrics_ports: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.runner_metrics_ports and len(self.runner_metrics_ports) != len(self.runner_ports):
            raise StackError(
                f"PRISM_RUNNER_METRICS_PORTS: {len(self.runner_metrics_ports)} ports for "
                f"{len(self.runner_ports)} runners: give one per runner, in the same order"
            )

    @classmethod
    def on_free_ports(cls, data_dir: Path, image: str, runners: int = 3, **more: Any) -> Layout:
        """A stack on loopback ports free now, its runners named for it alone (what a
        benchmark starts beside anything else running)."""
        ports = free_ports(2 + runners)
        return cls(
            data_dir=data_dir,
            gateway_port=ports[0],
            orchestrator_port=ports[1],
            runner_ports=tuple(ports[2:]),
            runner_prefix=f"bench{secrets.token_hex(3)}",
            image=image,
            **more,
        )

    @classmethod
    def from_env(cls) -> Layout:
        ports = env("PRISM_RUNNER_PORTS", "50061,50062,50063")
        runner_ports = tuple(int(p) for p in ports.split(",") if p.strip())
        # 9111, 9112, ... in the order of the runners, unless given.
        metrics = env(
            "PRISM_RUNNER_METRICS_PORTS",
            ",".join(str(9111 + i) for i in range(len(runner_ports))),
        )
        return cls(
            data_dir=Path(env("PRISM_DATA_DIR", ".prism")).resolve(),
            gateway_port=int(env("PRISM_GATEWAY_PORT", "8080")),
            orchestrator_port=int(env("PRISM_ORCHESTRATOR_PORT", "50051")),
            runner_ports=runner_ports,
            runner_prefix=env("PRISM_RUNNER_PREFIX", "runner"),
            image=env("PRISM_SANDBOX_IMAGE", "prism-sandbox:latest"),
            orchestrator_metrics_port=int(env("PRISM_ORCHESTRATOR_METRICS_PORT", "9101")),
            gateway_metrics_port=int(env("PRISM_GATEWAY_METRICS_PORT", "9102")),
            runner_metrics_ports=tuple(int(p) for p in metrics.split(",") if p.strip()),
        )

    @property
    def runners(self) -> dict[str, int]:
        return {f"{self.runner_prefix}-{i}": p for i, p in enumerate(self.runner_ports, 1)}

    @property
    def services(self) -> list[str]:
        """In start order: runners, then the orchestrator, then the gateway."""
        return [*self.runners, ORCHESTRATOR, GATEWAY]

    @property
    def api_token_file(self) -> Path:
        return self.data_dir / "api_token"

    @property
    def runner_token_file(self) -> Path:
        return self.data_dir / "runner_token"

    def address(self, service: str) -> str:
        port = {GATEWAY: self.gateway_port, ORCHESTRATOR: self.orchestrator_port}.get(service)
        return f"{self.host}:{port if port is not None else self.runners[service]}"

    def metrics_address(self, service: str) -> str | None:
        """Where the service serves its metrics (the gateway: /stats/prometheus, else
        /metrics); None when it serves none."""
        if service == GATEWAY:
            port = self.gateway_metrics_port
        elif service == ORCHESTRATOR:
            port = self.orchestrator_metrics_port
        else:
            ports = dict(zip(self.runners, self.runner_metrics_ports, strict=False))
            port = ports.get(service)
        return None if port is None else f"{self.host}:{port}"

    def stop_seconds(self, service: str) -> float:
        """How long `service` may take to stop on SIGTERM before it is killed: a runner
        first drains (PRISM_RUNNER_DRAIN_SECONDS, default 20), then stops its trials."""
        if service not in self.runners:
            return STOP_SECONDS
        given = self.extra_env.get("PRISM_RUNNER_DRAIN_SECONDS") or env(
            "PRISM_RUNNER_DRAIN_SECONDS", "20"
        )
        try:
            drain = float(given)
        except ValueError:
            drain = 0.0  # the runner refuses it and exits at once
        return STOP_SECONDS + min(max(drain, 0.0), 3600.0)

    def pid_file(self, service: str) -> Path:
        return self.data_dir / "run" / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.data_dir / "logs" / f"{service}.log"

    def command(self, service: str) -> list[str]:
        return [sys.executable, "-m", MODULES.get(service, RUNNER_MODULE)]

    def service_env(self, service: str) -> dict[str, str]:
        """This process's environment, so every PRISM_* setting passes through,
        with what the layout decides on top, and each token only where used."""
        env = dict(os.environ)
        env.update(
            PRISM_SERVICE=service,  # with PRISM_DATA_DIR, how `down` knows its own processes
            PRISM_DATA_DIR=str(self.data_dir),
            PRISM_ORCHESTRATOR_ADDR=self.address(ORCHESTRATOR),
            PYTHONUNBUFFERED="1",
        )
        for name, path in (
            ("PRISM_API_TOKEN", self.api_token_file),
            ("PRISM_RUNNER_TOKEN", self.runner_token_file),
        ):
            if not secret_set(name):
                env[f"{name}_FILE"] = str(path)
        # Set either way: an address inherited from this process would be every service's.
        metrics = self.metrics_address(service) or ""
        env["PRISM_GATEWAY_METRICS_ADDR" if service == GATEWAY else "PRISM_METRICS_ADDR"] = metrics
        if service == GATEWAY:
            env["PRISM_GATEWAY_ADDR"] = self.address(GATEWAY)
            unused = "PRISM_RUNNER_TOKEN"
        elif service == ORCHESTRATOR:
            env["PRISM_RUNNERS"] = ",".join(f"{n}={self.address(n)}" for n in self.runners)
            unused = ""
        else:
            env.update(
                PRISM_RUNNER_NAME=service,
                PRISM_RUNNER_ADDR=self.address(service),
                PRISM_SANDBOX_IMAGE=self.image,
            )
            unused = "PRISM_API_TOKEN"
        if unused:
            env.pop(unused, None)
            env.pop(f"{unused}_FILE", None)
        env.update(self.extra_env)
        return env


def secret_set(name: str) -> bool:
    return bool(os.environ.get(name) or os.environ.get(f"{name}_FILE"))


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free right now (the kernel picks them; a race with other programs remains)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def ensure_secret(path: Path) -> bool:
    """Create a random token file (0600) unless it exists; True if created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return True


def _ours(pid: int, service: str, data_dir: Path) -> bool:
    """True if `pid` is `service` of the stack in `data_dir`: pids are reused,
    and `down` must never signal a stranger."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        f"PRISM_SERVICE={service}".encode() in environ
        and f"PRISM_DATA_DIR={data_dir}".encode() in environ
    )


class Stack:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.api_token_set = secret_set("PRISM_API_TOKEN")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def api_token(self) -> str:
        path = os.environ.get("PRISM_API_TOKEN_FILE")
        if os.environ.get("PRISM_API_TOKEN") and not path:
            return os.environ["PRISM_API_TOKEN"].strip()
        return Path(path or self.layout.api_token_file).read_text().strip()

    def prepare(self) -> bool:
        """The data folder (owner only: it holds tokens, databases and logs) and
        the token files not given by the environment; True if an API token was
        generated now."""
        self.layout.data_dir.mkdir(parents=True, exist_ok=True)
        self.layout.data_dir.chmod(0o700)
        if not secret_set("PRISM_RUNNER_TOKEN"):
            ensure_secret(self.layout.runner_token_file)
        return False if self.api_token_set else ensure_secret(self.layout.api_token_file)

    def pid(self, service: str) -> int | None:
        try:
            pid = int(self.layout.pid_file(service).read_text())
        except (OSError, ValueError):
            return None
        return pid if _ours(pid, service, self.layout.data_dir) else None

    def start(self, service: str) -> int:
        if (pid := self.pid(service)) is not None:
            return pid
        for path in (self.layout.pid_file(service), self.layout.log_file(service)):
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.layout.log_file(service), "ab") as log:
            proc = subprocess.Popen(
                self.layout.command(service),
                env=self.layout.service_env(service),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[service] = proc
        self.layout.pid_file(service).write_text(f"{proc.pid}\n")
        return proc.pid

    def _exited(self, service: str) -> bool:
        proc = self.procs.get(service)
        return proc is not None and proc.poll() is not None

    def wait_ready(self, service: str, timeout: float = 60.0) -> None:
        """Poll the service's health until it serves; fail early if it exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._exited(service):
                raise StackError(f"{service} exited; its log says:\n{self.tail(service)}")
            if self._healthy(service):
                return
            time.sleep(0.05)
        raise StackError(f"{service} not ready after {timeout:.0f} s; log:\n{self.tail(service)}")

    def _healthy(self, service: str) -> bool:
        if service == GATEWAY:
            url = f"http://{self.layout.address(GATEWAY)}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=1) as reply:
                    return bool(reply.status == 200)
            except (urllib.error.URLError, OSError):
                return False
        return serving(self.layout.address(service))

    def up(self) -> None:
        self.prepare()
        for service in self.layout.runners:
            self.start(service)
        for service in self.layout.runners:
            self.wait_ready(service)
        for service in (ORCHESTRATOR, GATEWAY):
            self.start(service)
            self.wait_ready(service)

    def signal(self, service: str, sig: int) -> None:
        pid = self.pid(service)
        if pid is not None:
            os.kill(pid, sig)

    def stop(self, service: str, timeout: float | None = None) -> None:
        pid = self.pid(service)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + (
                self.layout.stop_seconds(service) if timeout is None else timeout
            )
            while _ours(pid, service, self.layout.data_dir) and time.monotonic() < deadline:
                if (proc := self.procs.get(service)) is not None:
                    proc.poll()
                time.sleep(0.05)
            if _ours(pid, service, self.layout.data_dir):
                os.kill(pid, signal.SIGKILL)
        if (proc := self.procs.pop(service, None)) is not None:
            proc.wait()
        self.layout.pid_file(service).unlink(missing_ok=True)

    def kill(self, service: str) -> None:
        """SIGKILL, as a crash would; the pid file goes too."""
        self.signal(service, signal.SIGKILL)
        if (proc := self.procs.pop(service, None)) is not None:
            proc.wait()
        self.layout.pid_file(service).unlink(missing_ok=True)

    def down(self) -> None:
        for service in reversed(self.layout.services):
            self.stop(service)

    def tail(self, service: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.layout.log_file(service).read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"


# A result's output is shown on one line, this long at most.
_OUTPUT_CHARS = 100
_COMMAND_COLUMN = 48


def _demo(stack: Stack) -> None:
    """Run the default sweep through the gateway; print its results, then what to try
    next. The first line is the outcome in a few words (`make demo`'s step line)."""
    url = f"http://{stack.layout.address(GATEWAY)}/"
    body = json.dumps({"task": "tune the learning rate"}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {stack.api_token()}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=320) as reply:
        answer = json.load(reply)
    results = answer["results"]
    done = sum(result["status"] == "done" for result in results)
    print(f"{done} of {len(results)} runners done")
    print()
    print(f"sweep {answer['sweepId']} (POST {url} {body.decode()}):")
    for result in results:
        print(f"  {result['runner']:10} {result['status']:6} {_one_line(result['output'])}")
    print()
    print("Next:")
    commands = _next_commands(stack, answer["sweepId"])
    # The comments line up, but not behind a command as long as the curl one.
    width = min(max(len(command) for command, _ in commands), _COMMAND_COLUMN)
    for command, what in commands:
        print(f"  {command:{width}}  # {what}")


def _one_line(output: str) -> str:
    line = " ".join(output.split())
    return line if len(line) <= _OUTPUT_CHARS else line[: _OUTPUT_CHARS - 1] + "…"


def _next_commands(stack: Stack, sweep_id: str) -> list[tuple[str, str]]:
    gateway = stack.layout.address(GATEWAY)
    commands = []
    if sys.prefix != sys.base_prefix:  # the `prism` command is in this virtualenv
        commands.append(
            (f". {shown(Path(sys.prefix) / 'bin' / 'activate')}", "`prism` on the PATH")
        )
    commands += [
        ("prism sweeps", "the sweeps so far"),
        (f"prism show {sweep_id}", "this sweep, trial by trial"),
        (f'curl -H "Authorization: Bearer {_token_hint(stack)}" http://{gateway}/', "the API"),
        ("make logs", "the services' logs"),
        ("make test", "the whole test suite"),
        ("make down", "stop what `make demo` started"),
    ]
    commands.append((f"http://{gateway}/ui/", "the dashboard, in a browser"))
    return commands


def _token_hint(stack: Stack) -> str:
    """How a shell reads the API token: from its file, or the variable it came in."""
    path = os.environ.get("PRISM_API_TOKEN_FILE") or (
        None if stack.api_token_set else stack.layout.api_token_file
    )
    return f"$(cat {shown(Path(path))})" if path else "$PRISM_API_TOKEN"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m prism.stack", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["up", "down", "logs", "demo"])
    parser.add_argument("--follow", action="store_true", help="with logs: keep following")
    args = parser.parse_args()
    try:
        stack = Stack(Layout.from_env())
        layout = stack.layout
        if args.command == "up":
            already = all(stack.pid(service) is not None for service in layout.services)
            created = stack.prepare()
            stack.up()
            print(
                f"{'already up:' if already else 'started'} gateway "
                f"http://{layout.address(GATEWAY)}, orchestrator, {len(layout.runners)} runners"
            )
            if created:
                print(f"generated an API token in {layout.api_token_file} (mode 0600)")
            print(
                f"gateway http://{layout.address(GATEWAY)} (HTTP/JSON and gRPC), "
                f"orchestrator {layout.address(ORCHESTRATOR)}, runners "
                + ", ".join(layout.address(r) for r in layout.runners)
            )
            print(
                f'try: curl -H "Authorization: Bearer {_token_hint(stack)}" '
                f"http://{layout.address(GATEWAY)}/"
            )
            print(f"dashboard: http://{layout.address(GATEWAY)}/ui/ (paste the token)")
            scraped = [
                f"http://{address}{'/stats/prometheus' if service == GATEWAY else '/metrics'}"
                for service in (ORCHESTRATOR, GATEWAY, *layout.runners)
                if (address := layout.metrics_address(service)) is not None
            ]
            if scraped:
                print(f"metrics (Prometheus): {', '.join(scraped)}")
            print(f"logs in {shown(layout.data_dir / 'logs')}; stop with `make down`")
        elif args.command == "down":
            stack.down()
            print("prism is down")
        elif args.command == "logs":
            files = [
                str(layout.log_file(s)) for s in layout.services if layout.log_file(s).exists()
            ]
            if files:
                os.execvp("tail", ["tail", "-n", "50", *(["-F"] if args.follow else []), *files])
            print(f"no logs in {layout.data_dir / 'logs'}")
        else:
            _demo(stack)
    except StackError as error:
        sys.exit(f"prism: {error}")


if __name__ == "__main__":
    main()
