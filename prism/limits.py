"""A trial's limits as the API states them: each one's JSON name, its default and its range.

The one place that knows the defaults. The orchestrator checks a spec's limits against
the ranges and records the spec with every default filled in, so every answer shows what
a trial gets; it fills them in again when it reads a spec an older version stored without
them. The sandbox takes the same defaults for a run that names no limit of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard


@dataclass(frozen=True)
class Limit:
    """One limit: its JSON name, default and inclusive range, and whether it is whole."""

    json_name: str
    default: float
    low: float
    high: float
    whole: bool


# By the protobuf field name of prism.v1.Limits.
LIMITS: dict[str, Limit] = {
    "wall_seconds": Limit("wallSeconds", 60.0, 0.1, 3600, whole=False),
    "memory_mb": Limit("memoryMb", 256, 16, 8192, whole=True),
    "cpus": Limit("cpus", 1.0, 0.01, 8, whole=False),
    "processes": Limit("processes", 64, 8, 4096, whole=True),
    "output_kb": Limit("outputKb", 1024, 1, 16 * 1024, whole=True),
    "workspace_mb": Limit("workspaceMb", 64, 1, 4096, whole=True),
}


def effective(given: Any) -> dict[str, float | int]:
    """A spec's ``limits`` (JSON names) with every limit it leaves out at its default.

    Total, for a spec stored by any version: what is not a positive number an int32
    holds (absent, 0 as older versions took for "the default", or a damaged value) is
    the default, and a whole limit is an int."""
    found: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    limits: dict[str, float | int] = {}
    for limit in LIMITS.values():
        value = found.get(limit.json_name)
        chosen = value if _usable(value) else limit.default
        limits[limit.json_name] = int(chosen) if limit.whole else float(chosen)
    return limits


def _usable(value: Any) -> TypeGuard[int | float]:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value < 2**31
    )


# Every limit's default, by JSON name.
DEFAULTS = effective({})
