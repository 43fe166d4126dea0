"""Runner settings, read from the environment in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prism.environ import env, read_secret
from prism.metrics import parse_address

# Created containers cost the engine little (no process runs), but each is a layer on
# disk and a name: a bound keeps a setting's typo from making thousands.
MAX_PREPARED = 64
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True, kw_only=True)
class Settings:
    name: str
    address: str
    data_dir: Path
    token: str | None
    image: str
    slots: int
    # Containers made ahead of demand (PRISM_RUNNER_PREPARED, 0 to MAX_PREPARED; the
    # slots by default), so a trial's start does not wait for one to be created.
    prepared: int = 0
    # How long a stopping runner (SIGTERM) lets its running trials finish before it
    # hands the rest back. What stops the process must wait longer than this (compose's
    # stop_grace_period; see the README).
    drain_seconds: float = 20.0
    # All the runner's pip is told when it downloads a trial's requirements (as wheels,
    # for the image derived for them): a folder of distributions, an index in place of
    # PyPI, whether to use no index at all, and a CA bundle to trust.
    pip_find_links: Path | None = None
    pip_index_url: str | None = None
    pip_no_index: bool = False
    pip_cert: Path | None = None
    # Where GET /metrics is served (PRISM_METRICS_ADDR); None: nowhere.
    metrics_address: tuple[str, int] | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "runners" / f"{self.name}.db"

    @classmethod
    def from_env(cls) -> Settings:
        slots = int(env("PRISM_RUNNER_SLOTS", "4"))
        if slots < 1:
            raise ValueError(f"PRISM_RUNNER_SLOTS must be at least 1, got {slots}")
        prepared = int(env("PRISM_RUNNER_PREPARED", str(min(slots, MAX_PREPARED))))
        if not 0 <= prepared <= MAX_PREPARED:
            raise ValueError(
                f"PRISM_RUNNER_PREPARED must be between 0 and {MAX_PREPARED}, got {prepared}"
            )
        drain_seconds = float(env("PRISM_RUNNER_DRAIN_SECONDS", "20"))
        if not 0 <= drain_seconds <= 3600:
            raise ValueError(
                f"PRISM_RUNNER_DRAIN_SECONDS must be between 0 and 3600, got {drain_seconds:g}"
            )
        find_links = env("PRISM_PIP_FIND_LINKS", "")
        return cls(
            name=env("PRISM_RUNNER_NAME", "runner-1"),
            address=env("PRISM_RUNNER_ADDR", "127.0.0.1:50061"),
            data_dir=Path(env("PRISM_DATA_DIR", ".prism")),
            token=read_secret("PRISM_RUNNER_TOKEN"),
            image=env("PRISM_SANDBOX_IMAGE", "prism-sandbox:latest"),
            slots=slots,
            prepared=prepared,
            drain_seconds=drain_seconds,
            pip_find_links=Path(find_links) if find_links else None,
            pip_index_url=env("PRISM_PIP_INDEX_URL", "") or None,
            pip_no_index=_flag("PRISM_PIP_NO_INDEX"),
            # The runner's pip ignores this host's pip settings, but the CA bundle
            # this host's pip trusts (a proxy's, say) is the one it needs too.
            pip_cert=_cert(),
            metrics_address=parse_address(
                env("PRISM_METRICS_ADDR", ""), variable="PRISM_METRICS_ADDR"
            ),
        )


def _cert() -> Path | None:
    """PRISM_PIP_CERT, which must name a file; else this host's PIP_CERT when
    it names one (a missing one is pip's own setting to worry about, not ours)."""
    given = os.environ.get("PRISM_PIP_CERT", "")
    if given:
        if not Path(given).is_file():
            raise ValueError(f"PRISM_PIP_CERT: no file {given}")
        return Path(given)
    inherited = os.environ.get("PIP_CERT", "")
    return Path(inherited) if inherited and Path(inherited).is_file() else None


def _flag(name: str) -> bool:
    value = env(name, "false").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{name} must be one of {', '.join(_TRUE + _FALSE)}, got {value!r}")
    return value in _TRUE
