"""Settings from the environment: a variable with its default, and a secret that may
come from a file. Each service's `config` module reads its settings through these."""

from __future__ import annotations

import os
from pathlib import Path


def env(name: str, default: str) -> str:
    """The variable's value; `default` when it is unset or empty."""
    return os.environ.get(name) or default


def read_secret(name: str) -> str | None:
    """`NAME_FILE` (a path) wins over `NAME`; an empty value means unset."""
    path = os.environ.get(f"{name}_FILE")
    value = Path(path).read_text().strip() if path else os.environ.get(name, "").strip()
    return value or None
