"""A trial's outcome and result: one type, and the rules everything in it obeys.

Trust model. What the runner measures itself (exit code, wall time, peak memory, OOM
kills) comes from the engine and from the sandbox's supervisor, which the trial can
neither signal, trace nor read. What only the trial can say (its result object, its
metric lines, its artifacts' names and bytes, its output) is written by an attacker:
it is parsed once, where it leaves the sandbox, into the bounded values below, and a
trial whose words break a rule ends ``failed`` with the rule named. A ``TrialResult``
checks its own fields when it is made, so a value of this type is safe to store,
send and show wherever it goes: the runner's store and the orchestrator's, both ends
of the runner stream, the public API.

The rules (the README's trust model lists the same):

- A JSON object (a result, a metric line's values): at most MAX_JSON_BYTES of UTF-8
  written compactly (``to_json``, the form it is kept and sent in), nested at most
  MAX_JSON_DEPTH deep (the object itself is level 1), integers within 64 bits, strings
  and keys valid Unicode (no lone surrogates). NaN, Infinity and floats too large for
  a double become null: they are values a metric really takes.
- Artifacts: at most MAX_ARTIFACT_FILES files and MAX_ARTIFACT_BYTES in all; each
  name a relative, normalised POSIX path ("/"-separated; no empty, "." or ".."
  parts; no leading or trailing "/"), without control or invisible characters
  (bidi overrides, zero-width ones, line separators), each part at most
  MAX_NAME_PART_BYTES of UTF-8, the whole at most MAX_NAME_BYTES, names unique.
- Text the services show (a reason, a skipped-artifact note) is cut to its cap and its
  control and invisible characters are replaced, so a trial cannot forge lines or
  reorder text in a terminal or log.
- Numbers the host measured are clamped to what the wire carries (int32 exit codes,
  int64 bytes, finite non-negative seconds).
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prism.v1 import trial_pb2

MAX_JSON_BYTES = 64 * 1024
# Linux refuses to exec with an environment string longer than this (MAX_ARG_STRLEN).
MAX_ENV_STRING_BYTES = 128 * 1024 - 1
# The sandbox hands the script over in PRISM_SCRIPT, so this is the largest one that
# can run.
MAX_SCRIPT_BYTES = MAX_ENV_STRING_BYTES - len("PRISM_SCRIPT=")
MAX_JSON_DEPTH = 16
# How much longer than compact a JSON object may be written (spaces, escapes, long
# forms of numbers) and still be looked at.
MAX_LOOSE_FACTOR = 8
MAX_ARTIFACT_FILES = 32
MAX_ARTIFACT_BYTES = 4 * 2**20
MAX_NAME_PART_BYTES = 255
MAX_NAME_BYTES = 1024
MAX_SKIPPED = 64
MAX_SKIPPED_CHARS = 512
MAX_REASON_CHARS = 1000
# stdout and stderr together as kept, in UTF-8, at most: the largest output limit a
# spec may set. Bytes that are not UTF-8 become U+FFFD, three bytes each, so output
# past this is cut, never let grow threefold.
MAX_OUTPUT_BYTES = 16 * 2**20

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

# C0 controls, DEL and C1 controls (what can move a cursor, erase a line or start an
# escape sequence in whatever shows the text), and the invisible characters that
# reorder or hide text or break a line: soft hyphen, zero-width ones, the line and
# paragraph separators, bidi marks, embeddings, overrides and isolates, the byte order
# mark. (sandbox/bootstrap.py skips file names holding any of them.)
_INVISIBLE = "\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{_INVISIBLE}]")


class RuleBroken(ValueError):
    """What a trial said breaks a rule; the message names the rule."""


class NotAnObject(ValueError):
    """The text is not a JSON object at all (not JSON, or JSON of another kind)."""


class Outcome(enum.StrEnum):
    """How a trial ended: exactly one per finished execution."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    OOM_KILLED = "oom_killed"
    OUTPUT_LIMIT = "output_limit"
    CANCELLED = "cancelled"
    SANDBOX_ERROR = "sandbox_error"
    RUNNER_LOST = "runner_lost"
    # Stopped by its sweep's early-stopping rule: decided by the orchestrator only.
    PRUNED = "pruned"

    @property
    def infrastructure(self) -> bool:
        """The platform's failure, not the trial's: retried per the sweep's retries."""
        return self in (Outcome.SANDBOX_ERROR, Outcome.RUNNER_LOST)

    @property
    def ran_to_end(self) -> bool:
        """The script ended by itself (or by the kernel): its result and artifacts count."""
        return self in (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.OOM_KILLED)

    def to_proto(self) -> trial_pb2.Outcome:
        return trial_pb2.Outcome.Value(f"OUTCOME_{self.name}")  # type: ignore[return-value]

    @classmethod
    def from_proto(cls, value: int) -> Outcome:
        """An unknown or unset value (a newer or broken peer) is the platform's failure."""
        try:
            return cls[trial_pb2.Outcome.Name(value).removeprefix("OUTCOME_")]  # type: ignore[arg-type]
        except (ValueError, KeyError):
            return cls.SANDBOX_ERROR

    @classmethod
    def stored(cls, value: str | None) -> Outcome:
        """An outcome read back from a store; one this version does not know (written by
        a newer one) is the platform's failure, as on the wire."""
        try:
            return cls(value or "")
        except ValueError:
            return cls.SANDBOX_ERROR


def shown_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with its control and invisible characters
    replaced by U+FFFD; lone surrogates too."""
    cut = text[:limit].encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub("\ufffd", cut)


def to_json(value: Any) -> str:
    """The compact JSON text of a value: how results and metrics are kept and sent."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def parse_object(
    text: str | bytes,
    *,
    what: str,
    max_depth: int = MAX_JSON_DEPTH,
    max_bytes: int = MAX_JSON_BYTES,
) -> dict[str, Any]:
    """The JSON object ``text`` holds, within the rules; raises NotAnObject when it is no
    JSON object at all, RuleBroken (naming ``what`` and the rule) when it breaks one.
    (The maxima are raised only for a wrapper holding such an object one level down.)"""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotAnObject(f"{what} is not UTF-8") from None
    if len(raw) > MAX_LOOSE_FACTOR * max_bytes:
        # No writing of a JSON object within the cap is this long, and it is not parsed
        # (16 MiB of small numbers would be millions of objects): if it has an object's
        # shape, it is one past the cap; else (a Python dict's repr, say) it is none.
        if _shaped_as_an_object(decoded):
            raise RuleBroken(f"{what} is larger than {max_bytes} bytes")
        raise NotAnObject(f"{what} is not a JSON object")
    try:
        value = json.loads(
            decoded, parse_constant=lambda _: None, parse_float=_finite, parse_int=_int64
        )
    except RuleBroken as error:
        raise RuleBroken(f"{what} {error}") from None
    except RecursionError:
        # Deeper than the parser goes (hundreds of levels): far past the cap.
        if _shaped_as_an_object(decoded):
            raise RuleBroken(f"{what} is nested deeper than {max_depth} levels") from None
        raise NotAnObject(f"{what} is not a JSON object") from None
    except ValueError:
        raise NotAnObject(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise NotAnObject(f"{what} is not a JSON object")
    _check_value(value, what, 1, max_depth)
    if len(to_json(value).encode()) > max_bytes:
        raise RuleBroken(f"{what} is larger than {max_bytes} bytes")
    return value


def _shaped_as_an_object(text: str) -> bool:
    """Starts as a JSON object with a key and ends as one: what is left to tell once
    the text is too long or too deep to parse."""
    stripped = text.strip()
    return stripped.startswith('{"') and stripped.endswith("}")


def _int64(text: str) -> int:
    # Checked on the digits, before Python's own cap on long ones turns it into a
    # syntax error.
    number = int(text) if len(text) <= 20 else INT64[1] + 1
    if not INT64[0] <= number <= INT64[1]:
        raise RuleBroken("holds an integer outside the 64-bit range")
    return number


def _finite(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None


def _check_value(value: Any, what: str, depth: int, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise RuleBroken unless ``value`` (parsed JSON) obeys the rules."""
    if depth > max_depth:
        raise RuleBroken(f"{what} is nested deeper than {max_depth} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_string(key, what)
            _check_value(item, what, depth + 1, max_depth)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, what, depth + 1, max_depth)
    elif isinstance(value, str):
        _check_string(value, what)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise RuleBroken(f"{what} holds an integer outside the 64-bit range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise RuleBroken(f"{what} holds a number that is not finite")
    else:
        raise RuleBroken(f"{what} holds a {type(value).__name__}, which JSON does not have")


def _check_string(text: Any, what: str) -> None:
    if not isinstance(text, str):
        raise RuleBroken(f"{what} has a key that is not a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RuleBroken(f"{what} holds a string that is not valid Unicode") from None


def checked_object(value: Mapping[str, Any], *, what: str) -> str:
    """A JSON object given as a Python value, checked against the same rules; its
    compact JSON text."""
    if not isinstance(value, dict):
        raise RuleBroken(f"{what} is not a JSON object")
    _check_value(value, what, 1)
    text = to_json(value)
    if len(text.encode()) > MAX_JSON_BYTES:
        raise RuleBroken(f"{what} is larger than {MAX_JSON_BYTES} bytes")
    return text


def artifact_name(name: str) -> str:
    """``name`` if it is a valid artifact name; else RuleBroken naming the rule."""
    if not isinstance(name, str) or not name:
        raise RuleBroken("an artifact name is empty")
    shown = repr(shown_text(name, 100))
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise RuleBroken(f"artifact name {shown} is not valid Unicode") from None
    if size > MAX_NAME_BYTES:
        raise RuleBroken(f"artifact name {shown} is longer than {MAX_NAME_BYTES} bytes")
    if _CONTROL.search(name):
        raise RuleBroken(f"artifact name {shown} holds a control or invisible character")
    if name.startswith("/"):
        raise RuleBroken(f"artifact name {shown} is absolute")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise RuleBroken(f"artifact name {shown} is not a normalised relative path")
        if len(part.encode()) > MAX_NAME_PART_BYTES:
            raise RuleBroken(
                f"artifact name {shown} has a part longer than {MAX_NAME_PART_BYTES} bytes"
            )
    return name


@dataclass(frozen=True)
class Artifact:
    """A file the trial left in its output folder."""

    name: str
    data: bytes


def checked_artifacts(artifacts: Iterable[tuple[str, bytes]]) -> tuple[Artifact, ...]:
    """The artifacts as the rules allow them; RuleBroken otherwise."""
    found: list[Artifact] = []
    seen: set[str] = set()
    total = 0
    for name, data in artifacts:
        name = artifact_name(name)
        if name in seen:
            raise RuleBroken(f"artifact name {shown_text(name, 100)!r} appears twice")
        seen.add(name)
        if len(found) == MAX_ARTIFACT_FILES:
            raise RuleBroken(f"more than {MAX_ARTIFACT_FILES} artifacts")
        total += len(data)
        if total > MAX_ARTIFACT_BYTES:
            raise RuleBroken(f"artifacts larger than {MAX_ARTIFACT_BYTES} bytes in all")
        found.append(Artifact(name, bytes(data)))
    return tuple(found)


@dataclass(frozen=True, kw_only=True)
class TrialResult:
    """How one execution of a trial ended, and what it left.

    ``exit_code`` is -1 when the script did not exit by itself. ``result`` is the
    trial's result object (None when it left none or did not run to its end).
    ``peak_memory_bytes`` is the container's peak, 0 when unknown. Making one checks
    every field: RuleBroken for what a trial could have put there (the result, the
    artifacts), while measured numbers are clamped and shown text is cut and cleaned.
    """

    outcome: Outcome
    reason: str
    exit_code: int = -1
    stdout: str = ""
    stderr: str = ""
    output_truncated: bool = False
    duration_seconds: float = 0.0
    result: Mapping[str, Any] | None = None
    peak_memory_bytes: int = 0
    artifacts: tuple[Artifact, ...] = ()
    artifacts_skipped: tuple[str, ...] = ()
    # The result object as compact JSON text, "" when there is none: made from it.
    result_json: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "outcome", Outcome(self.outcome))
        set_(self, "reason", shown_text(str(self.reason), MAX_REASON_CHARS))
        set_(self, "exit_code", _clamp(int(self.exit_code), INT32))
        set_(self, "output_truncated", bool(self.output_truncated))
        seconds = float(self.duration_seconds)
        set_(self, "duration_seconds", seconds if math.isfinite(seconds) and seconds > 0 else 0.0)
        set_(self, "peak_memory_bytes", _clamp(int(self.peak_memory_bytes), (0, INT64[1])))
        room = MAX_OUTPUT_BYTES
        for name in ("stdout", "stderr"):
            data = getattr(self, name).encode("utf-8", "replace")
            if len(data) > room:
                data = data[:room]
                set_(self, "output_truncated", True)
            room -= len(data)
            set_(self, name, data.decode("utf-8", "ignore"))
        # Kept with the result: both stores and the wire take the text.
        text = "" if self.result is None else checked_object(self.result, what="the result")
        set_(self, "result_json", text)
        set_(self, "artifacts", checked_artifacts((a.name, a.data) for a in self.artifacts))
        if len(self.artifacts_skipped) > MAX_SKIPPED:
            raise RuleBroken(f"more than {MAX_SKIPPED} skipped-artifact notes")
        set_(
            self,
            "artifacts_skipped",
            tuple(shown_text(str(s), MAX_SKIPPED_CHARS) for s in self.artifacts_skipped),
        )

    def to_proto(self) -> trial_pb2.TrialResult:
        return trial_pb2.TrialResult(
            outcome=self.outcome.to_proto(),
            reason=self.reason,
            exit_code=self.exit_code,
            stdout=self.stdout,
            stderr=self.stderr,
            output_truncated=self.output_truncated,
            duration_seconds=self.duration_seconds,
            result_json=self.result_json,
            peak_memory_bytes=self.peak_memory_bytes,
            artifacts=[trial_pb2.Artifact(name=a.name, data=a.data) for a in self.artifacts],
            artifacts_skipped=list(self.artifacts_skipped),
        )

    @classmethod
    def from_proto(cls, message: trial_pb2.TrialResult) -> TrialResult:
        """Total: a result that breaks a rule (an older or broken runner let it pass)
        becomes a ``failed`` one naming the rule, never an exception."""
        return _parsed(
            lambda: cls(
                outcome=Outcome.from_proto(message.outcome),
                reason=message.reason,
                exit_code=message.exit_code,
                stdout=message.stdout,
                stderr=message.stderr,
                output_truncated=message.output_truncated,
                duration_seconds=message.duration_seconds,
                result=_stored_object(message.result_json),
                peak_memory_bytes=message.peak_memory_bytes,
                artifacts=tuple(Artifact(a.name, a.data) for a in message.artifacts),
                artifacts_skipped=tuple(message.artifacts_skipped),
            )
        )

    def columns(self) -> dict[str, Any]:
        """The stored columns (both stores keep a result the same way), artifacts aside."""
        return {
            "outcome": self.outcome.value,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "output_truncated": self.output_truncated,
            "duration_seconds": self.duration_seconds,
            "result_json": self.result_json,
            "peak_memory_bytes": self.peak_memory_bytes,
            "artifacts_skipped_json": json.dumps(list(self.artifacts_skipped)),
        }

    @classmethod
    def from_columns(cls, row: Any, artifacts: Iterable[tuple[str, bytes]] = ()) -> TrialResult:
        """A stored result read back. Total: a row an earlier version stored without
        today's checks reads as ``failed`` naming the rule it breaks."""
        return _parsed(
            lambda: cls(
                outcome=Outcome.stored(row.outcome),
                reason=row.reason,
                exit_code=row.exit_code if row.exit_code is not None else -1,
                stdout=row.stdout,
                stderr=row.stderr,
                output_truncated=row.output_truncated,
                duration_seconds=row.duration_seconds or 0.0,
                result=_stored_object(row.result_json),
                peak_memory_bytes=row.peak_memory_bytes,
                artifacts=tuple(Artifact(name, bytes(data)) for name, data in artifacts),
                artifacts_skipped=tuple(_stored_list(row.artifacts_skipped_json)),
            )
        )


def not_run(outcome: Outcome, reason: str) -> TrialResult:
    """The result of an execution that never ran (or whose run was lost)."""
    return TrialResult(outcome=outcome, reason=reason)


def _parsed(make: Callable[[], TrialResult]) -> TrialResult:
    try:
        made: TrialResult = make()
    except (RuleBroken, NotAnObject, ValueError, TypeError) as error:
        reason = str(error) if isinstance(error, (RuleBroken, NotAnObject)) else "malformed"
        return not_run(Outcome.FAILED, f"the trial's result breaks a rule: {reason}")
    return made


def _stored_object(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    return parse_object(text, what="the result")


def _stored_list(text: str) -> list[str]:
    value = json.loads(text or "[]")
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise RuleBroken("the skipped-artifact notes are not a list of strings")
    return value


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(value, bounds[1]))
