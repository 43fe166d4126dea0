"""prism.logs: the lines it writes, parsed back."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from prism import logs

SCHEMA = ["time", "level", "service", "logger", "message"]


class Captured:
    """What `logs.configure("test")` writes, parsed back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self._buffer = io.StringIO()

    def configure(self, level: str | None = None) -> None:
        """At PRISM_LOG_LEVEL `level` (None: unset, the default)."""
        if level is None:
            self._monkeypatch.delenv("PRISM_LOG_LEVEL", raising=False)
        else:
            self._monkeypatch.setenv("PRISM_LOG_LEVEL", level)
        logs.configure("test", stream=self._buffer)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._buffer.getvalue().splitlines()]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Captured]:
    """The root logger as it was is restored after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield Captured(monkeypatch)
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_line_has_the_schema_keys_first_then_its_fields(captured: Captured) -> None:
    captured.configure()
    logs.get("orchestrator.dispatch").info("trial finished", trial="s/0", outcome="succeeded")
    [line] = captured.lines()
    assert list(line) == [*SCHEMA, "trial", "outcome"]
    assert line["level"] == "info"
    assert line["service"] == "test"
    assert line["logger"] == "orchestrator.dispatch"
    assert line["message"] == "trial finished"
    assert (line["trial"], line["outcome"]) == ("s/0", "succeeded")
    written = datetime.fromisoformat(line["time"])
    assert written.tzinfo is not None and written.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - written) < timedelta(minutes=1)


def test_the_default_level_is_info(captured: Captured) -> None:
    captured.configure()
    log = logs.get("test")
    log.debug("hidden")
    log.info("shown")
    assert [line["message"] for line in captured.lines()] == ["shown"]


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", ["debug", "info", "warning", "error"]),
        ("INFO", ["info", "warning", "error"]),
        ("warning", ["warning", "error"]),
        ("WARN", ["warning", "error"]),
        ("error", ["error"]),
        ("fatal", []),
    ],
)
def test_the_level_filters_what_is_written(
    captured: Captured, level: str, shown: list[str]
) -> None:
    captured.configure(level)
    log = logs.get("test")
    log.debug("debug")
    log.info("info")
    log.warning("warning")
    log.error("error")
    assert [line["message"] for line in captured.lines()] == shown
    assert [line["level"] for line in captured.lines()] == shown


def test_an_unknown_level_is_refused_naming_the_variable_and_info_is_used(
    captured: Captured,
) -> None:
    with pytest.raises(ValueError, match="PRISM_LOG_LEVEL"):
        captured.configure("loud")
    log = logs.get("test")
    log.debug("hidden")
    log.critical("cannot start")
    [line] = captured.lines()
    assert (line["level"], line["message"]) == ("critical", "cannot start")


def test_fields_are_kept_as_json_and_never_replace_the_schema(captured: Captured) -> None:
    captured.configure()
    logs.get("test").warning(
        "two\nlines",
        count=3,
        runners=["runner-1", "runner-2"],
        path=Path("/data"),
        message="a field",
        level="a field too",
    )
    [line] = captured.lines()
    assert line["message"] == "two\nlines"
    assert line["level"] == "warning"
    assert (line["message_"], line["level_"]) == ("a field", "a field too")
    assert (line["count"], line["runners"], line["path"]) == (3, ["runner-1", "runner-2"], "/data")


def test_records_of_other_libraries_get_the_schema(captured: Captured) -> None:
    captured.configure()
    logging.getLogger("grpc._cython").warning("%d streams", 3)
    [line] = captured.lines()
    assert list(line) == SCHEMA
    assert (line["logger"], line["message"]) == ("grpc._cython", "3 streams")


def test_a_librarys_traceback_is_cut_to_its_end(captured: Captured) -> None:
    captured.configure()
    try:
        raise RuntimeError("x" * 100_000 + " the end")
    except RuntimeError:
        logging.getLogger("asyncio").exception("task failed")
    [line] = captured.lines()
    assert len(line["exception"]) <= 2000
    assert line["exception"].endswith("the end")


def raise_deep(depth: int, text: str) -> None:
    if depth == 0:
        raise KeyError(text)
    raise_deep(depth - 1, text)


def test_unexpected_logs_one_bounded_line_and_returns_its_error_id(captured: Captured) -> None:
    captured.configure()
    secret = "trial bytes " * 10_000
    try:
        raise_deep(20, secret)
    except KeyError as error:
        error_id = logs.unexpected(logs.get("rpc"), "a call failed", error, sweep="s")
    [line] = captured.lines()
    assert (line["level"], line["logger"], line["message"]) == ("error", "rpc", "a call failed")
    assert line["error_id"] == error_id and len(error_id) == 12
    assert line["sweep"] == "s"
    assert line["error"].startswith("KeyError: ")
    assert len(line["error"]) <= len("KeyError: ") + 300
    assert len(line["at"]) == 6
    assert all(frame.startswith("test_logs.py:") for frame in line["at"])
    assert len(json.dumps(line)) < 2000


def test_each_unexpected_error_gets_its_own_id(captured: Captured) -> None:
    captured.configure()
    log = logs.get("test")
    ids = {logs.unexpected(log, "failed", ValueError("v")) for _ in range(100)}
    assert len(ids) == 100


def test_the_answer_names_the_error_id_and_nothing_of_the_error() -> None:
    answer = logs.internal_error("0123456789ab")
    assert answer == "internal error (error id 0123456789ab); the service's log has the details"
