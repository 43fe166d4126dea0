"""Orchestrator settings, read from the environment in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prism.environ import env, read_secret
from prism.metrics import parse_address
from prism.trial import MAX_SCRIPT_BYTES

DEFAULT_RUNNERS = "runner-1=127.0.0.1:50061,runner-2=127.0.0.1:50062,runner-3=127.0.0.1:50063"
EXAMPLES_DIR = Path(__file__).parent / "examples"


class ConfigError(ValueError):
    pass


def parse_runners(spec: str) -> tuple[tuple[str, str], ...]:
    """ "name=host:port,..." -> ((name, address), ...)."""
    runners = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, address = item.partition("=")
        if not sep or not name or ":" not in address:
            raise ConfigError(f"PRISM_RUNNERS: {item!r} is not name=host:port")
        runners.append((name.strip(), address.strip()))
    if not runners:
        raise ConfigError("PRISM_RUNNERS: at least one runner is needed")
    if len({name for name, _ in runners}) != len(runners):
        raise ConfigError("PRISM_RUNNERS: runner names must be unique")
    return tuple(runners)


def parse_discovery(spec: str) -> tuple[str, int]:
    """ "host:port" -> (host, port): the DNS name whose addresses are the runners."""
    host, sep, port = spec.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"PRISM_RUNNERS_DNS: {spec!r} is not host:port, e.g. tasks.runner:50061")
    try:
        host.encode("idna")  # what resolving it will do: labels of 1 to 63 characters
    except UnicodeError:
        raise ConfigError(f"PRISM_RUNNERS_DNS: {host!r} is not a host name") from None
    return host, int(port)


@dataclass(frozen=True, kw_only=True)
class Settings:
    address: str
    data_dir: Path
    api_token: str | None
    runner_token: str | None
    # The runners by name and address, fixed (PRISM_RUNNERS); or none, and found instead
    # at every address of a DNS name (PRISM_RUNNERS_DNS), each named by its Hello.
    runners: tuple[tuple[str, str], ...]
    discover: tuple[str, int] | None = None
    # How often that name is resolved again.
    discovery_seconds: float = 2.0
    # The default sweep: one trial per example runner, in this order, with
    # its script (read once, at start).
    examples: tuple[tuple[str, str], ...]
    example_wall_seconds: float
    # How long POST / waits for its sweep before answering DEADLINE_EXCEEDED;
    # below the gateway's route timeout for it (300 s), so the client gets the id.
    sync_wait_seconds: float
    # How long a restart waits for runners to report before serving anyway.
    reconcile_seconds: float
    # How long a runner may stay unreachable before its trials count as
    # runner_lost (and are retried elsewhere, per their sweep's retries).
    runner_lost_seconds: float = 30.0
    # A stream with no message (runners send a heartbeat every 2 s) for this
    # long is taken for a hung runner and closed.
    runner_silence_seconds: float = 10.0
    # Where GET /metrics is served (PRISM_METRICS_ADDR); None: nowhere.
    metrics_address: tuple[str, int] | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "orchestrator.db"

    @classmethod
    def from_env(cls) -> Settings:
        names = [
            n.strip() for n in env("PRISM_EXAMPLE_RUNNERS", "runner-a,runner-b,runner-c").split(",")
        ]
        dns = env("PRISM_RUNNERS_DNS", "")
        if dns and env("PRISM_RUNNERS", ""):
            raise ConfigError("set PRISM_RUNNERS or PRISM_RUNNERS_DNS, not both")
        return cls(
            address=env("PRISM_ORCHESTRATOR_ADDR", "127.0.0.1:50051"),
            data_dir=Path(env("PRISM_DATA_DIR", ".prism")),
            api_token=read_secret("PRISM_API_TOKEN"),
            runner_token=read_secret("PRISM_RUNNER_TOKEN"),
            runners=() if dns else parse_runners(env("PRISM_RUNNERS", DEFAULT_RUNNERS)),
            discover=parse_discovery(dns) if dns else None,
            discovery_seconds=_seconds("PRISM_DISCOVERY_SECONDS", "2"),
            examples=load_examples(
                [n for n in names if n], Path(env("PRISM_EXAMPLES_DIR", str(EXAMPLES_DIR)))
            ),
            example_wall_seconds=float(env("PRISM_EXAMPLE_WALL_SECONDS", "60")),
            sync_wait_seconds=float(env("PRISM_SYNC_WAIT_SECONDS", "290")),
            reconcile_seconds=float(env("PRISM_RECONCILE_SECONDS", "10")),
            runner_lost_seconds=float(env("PRISM_RUNNER_LOST_SECONDS", "30")),
            runner_silence_seconds=float(env("PRISM_RUNNER_SILENCE_SECONDS", "10")),
            metrics_address=parse_address(
                env("PRISM_METRICS_ADDR", ""), variable="PRISM_METRICS_ADDR"
            ),
        )


def _seconds(name: str, default: str) -> float:
    value = float(env(name, default))
    if not 0.1 <= value <= 3600:
        raise ConfigError(f"{name}: expected 0.1 to 3600 seconds, got {value:g}")
    return value


def load_examples(names: list[str], folder: Path) -> tuple[tuple[str, str], ...]:
    """(name, script) for each example runner: `<folder>/<name>.py`, checked now
    so that a bad one stops the start instead of failing every sweep."""
    if not names:
        raise ConfigError("PRISM_EXAMPLE_RUNNERS: name at least one example runner")
    if len(set(names)) != len(names):
        raise ConfigError("PRISM_EXAMPLE_RUNNERS: names must be unique")
    examples = []
    for name in names:
        path = folder / f"{name}.py"
        try:
            script = path.read_text()
        except OSError as error:
            raise ConfigError(
                f"PRISM_EXAMPLE_RUNNERS: {name} needs its script {path}: {error.strerror}"
            ) from None
        if not script.strip() or len(script.encode()) > MAX_SCRIPT_BYTES:
            raise ConfigError(f"{path}: a script must have 1 to {MAX_SCRIPT_BYTES} bytes")
        examples.append((name, script))
    return tuple(examples)
