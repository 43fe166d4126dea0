"""Runner settings, read from the environment in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prism.service import env, read_secret


@dataclass(frozen=True, kw_only=True)
class Settings:
    name: str
    address: str
    data_dir: Path
    token: str | None
    image: str
    slots: int

    @property
    def db_path(self) -> Path:
        return self.data_dir / "runners" / f"{self.name}.db"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            name=env("PRISM_RUNNER_NAME", "runner-1"),
            address=env("PRISM_RUNNER_ADDR", "127.0.0.1:50061"),
            data_dir=Path(env("PRISM_DATA_DIR", ".prism")),
            token=read_secret("PRISM_RUNNER_TOKEN"),
            image=env("PRISM_SANDBOX_IMAGE", "prism-sandbox:latest"),
            slots=int(env("PRISM_RUNNER_SLOTS", "4")),
        )
