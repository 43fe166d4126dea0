"""The trial helper, importable by every trial's code: ``import prism_trial``.

    import prism_trial

    params = prism_trial.params()                # {"lr": 0.1, ...}
    for step in range(100):
        ...
        prism_trial.report(step=step, loss=loss)  # an intermediate metric, at once
    prism_trial.result(loss=loss, accuracy=acc)   # the trial's result

``report`` prints one line ``PRISM_METRIC {"step": 3, "loss": 0.25}`` to stdout and
flushes it; a trial may print such lines itself, in any language. ``result`` writes
/workspace/result.json. Both also take one mapping, for names that are not Python
identifiers: ``prism_trial.report({"val/loss": 0.3})``. Values must be JSON
serialisable; NaN and infinities arrive as null. Both check the size caps here, so a
mistake raises in the script instead of failing the trial later.

Standard library only, and no Prism imports: the sandbox image ships this file as it is
(in /opt/prism, on the trial's PYTHONPATH), and the host imports it as
``sandbox.prism_trial`` for the same constants.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

PARAMS_ENV = "PRISM_PARAMS"
PARAMS_FILE = "/workspace/params.json"
RESULT_FILE = "/workspace/result.json"
METRIC_PREFIX = "PRISM_METRIC "
# A result (the file, or the stdout line) longer than this, written compactly, fails
# the trial (the host's rules are prism/trial.py's; README, "The trial contract").
MAX_RESULT_BYTES = 64 * 1024
# A metric line longer than this, prefix included, fails the trial at once.
MAX_METRIC_LINE_BYTES = 64 * 1024
# Objects and lists nested deeper than this (the object itself is level 1) fail it too.
MAX_DEPTH = 16


def params() -> dict[str, Any]:
    """The trial's parameters."""
    raw = os.environ.get(PARAMS_ENV)
    if raw is None:
        with open(PARAMS_FILE, encoding="utf-8") as f:
            raw = f.read()
    value = json.loads(raw or "{}")
    if not isinstance(value, dict):
        raise ValueError("the trial's parameters are not a JSON object")
    return value


def report(values: Mapping[str, Any] | None = None, /, **more: Any) -> None:
    """Report an intermediate metric now: one PRISM_METRIC line on stdout."""
    line = METRIC_PREFIX + _dumps(values, more)
    if len(line.encode()) > MAX_METRIC_LINE_BYTES:
        raise ValueError(f"a metric line is at most {MAX_METRIC_LINE_BYTES} bytes")
    print(line, flush=True)


def result(values: Mapping[str, Any] | None = None, /, **more: Any) -> None:
    """Set the trial's result: writes /workspace/result.json (the last call wins)."""
    text = _dumps(values, more)
    if len(text.encode()) > MAX_RESULT_BYTES:
        raise ValueError(f"a result is at most {MAX_RESULT_BYTES} bytes of JSON")
    with open(RESULT_FILE, "w", encoding="utf-8") as f:
        f.write(text)


def _dumps(values: Mapping[str, Any] | None, more: Mapping[str, Any]) -> str:
    merged = {**(values or {}), **more}
    # Written compactly, as the host measures it; one line always (json.dumps escapes
    # newlines inside strings).
    text = json.dumps(merged, default=_unknown, separators=(",", ":"), ensure_ascii=False)
    if _depth(merged) > MAX_DEPTH:
        raise ValueError(f"a metric or result is nested at most {MAX_DEPTH} levels deep")
    return text


def _depth(value: Any) -> int:
    if isinstance(value, Mapping):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, (list, tuple)):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _unknown(value: Any) -> Any:
    # numpy scalars and arrays, the usual content of a metric, without importing numpy.
    for method in ("tolist", "item"):
        convert = getattr(value, method, None)
        if callable(convert):
            return convert()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
