"""The one logger of every Prism process: JSON lines, one key schema.

Each line is a JSON object with these keys, in this order:

    time      when, ISO 8601 in UTC with milliseconds: "2025-01-31T12:00:00.123+00:00"
    level     debug, info, warning, error; critical only for a process that cannot start
    service   the process: orchestrator, runner, gateway, sandbox.images (given to `configure`)
    logger    the part of it that logs: orchestrator.dispatch, sandbox.container, ...
    message   what happened, in words that stay the same for every line of its kind (tests
              and alerts match them); the values go into fields
    ...       then the line's fields

A field means the same under the same key everywhere:

    sweep      a sweep id
    trial      a trial id, "<sweep id>/<index>"
    execution  one attempt at a trial: its trial id, plus "@<attempt>" from the second attempt
               on. A runner only ever sees these (the runner protocol calls it `trial_id`).
    runner     a runner's name
    error_id   the id an answer carries instead of an unexpected error (`unexpected`)

A field named like a schema key is kept with a trailing underscore (`message_`), so the
schema always holds. Envoy writes its own lines (gateway/launch.py) and its access log
(gateway/envoy.yaml: method, path, status, ... as fields) with the same five keys.

At a call site:

    from prism import logs

    log = logs.get("orchestrator.dispatch")
    log.info("trial finished", trial=trial_id, outcome=outcome)
    error_id = logs.unexpected(log, "recording a result failed", error, execution=execution_id)

A process's entry point calls `configure` once (`prism.lifecycle.run_service`, `python -m
gateway`, `python -m sandbox.images`); PRISM_LOG_LEVEL sets the level. Library code only calls
`get`. Records that libraries write through `logging` themselves (grpc, asyncio, the Docker
SDK) reach the same handler and get the same schema, their logger's name as `logger`.

Why the standard library's `logging` underneath, and no logging package: a formatter and a thin
wrapper are all this needs, the libraries above already log through `logging` (a package would
need a bridge to catch them), and the services' dependencies stay the ones they run on.
`logging` takes a lock per record, so threads (the sandbox's readers, a store's thread) and the
event loop can log at once, each line written whole.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

from prism.environ import env

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    # The standard library's other names for two of them, which PRISM_LOG_LEVEL took
    # before this module read it.
    "warn": logging.WARNING,
    "fatal": logging.CRITICAL,
}
# Where a record keeps its fields between the Logger and the formatter.
_FIELDS = "prism_fields"
# An exception's text in a line, cut to these sizes, because it may carry a trial's bytes.
_ERROR_TEXT_CHARS = 300
_ERROR_FRAMES = 6
_TRACEBACK_CHARS = 2000


class _JsonLines(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in getattr(record, _FIELDS, {}).items():
            line[f"{key}_" if key in line else key] = value
        if record.exc_info:
            # Only libraries log a traceback (ours go through `unexpected`): its end, which
            # names the error and where it was raised.
            line["exception"] = self.formatException(record.exc_info)[-_TRACEBACK_CHARS:]
        return json.dumps(line, separators=(",", ":"), default=str)


def configure(service: str, *, stream: TextIO | None = None) -> None:
    """Write every record of this process as a JSON line to `stream` (stdout, where the platform
    collects them, unless told otherwise), from the level PRISM_LOG_LEVEL names (info).

    An unknown level raises ValueError naming the variable, once logging is configured at info,
    so that the caller can log why it stops."""
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(_JsonLines(service))
    name = env("PRISM_LOG_LEVEL", "info").strip().lower()
    level = LEVELS.get(name)
    logging.basicConfig(
        level=logging.INFO if level is None else level, handlers=[handler], force=True
    )
    if level is None:
        raise ValueError(f"PRISM_LOG_LEVEL must be one of {', '.join(LEVELS)}, got {name!r}")


class Logger:
    """What a part of a process logs through: a message and its fields, at a level."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    @property
    def name(self) -> str:
        return self._logger.name

    def debug(self, message: str, /, **fields: Any) -> None:
        self._log(logging.DEBUG, message, fields)

    def info(self, message: str, /, **fields: Any) -> None:
        self._log(logging.INFO, message, fields)

    def warning(self, message: str, /, **fields: Any) -> None:
        self._log(logging.WARNING, message, fields)

    def error(self, message: str, /, **fields: Any) -> None:
        self._log(logging.ERROR, message, fields)

    def critical(self, message: str, /, **fields: Any) -> None:
        self._log(logging.CRITICAL, message, fields)

    def _log(self, level: int, message: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, message, extra={_FIELDS: fields})


def get(name: str) -> Logger:
    """The logger of one part of a process, named by where it sits: "orchestrator.dispatch"."""
    return Logger(logging.getLogger(name))


def unexpected(log: Logger, message: str, error: BaseException, **fields: Any) -> str:
    """Log an unexpected error as one bounded line (its text and where it was raised, cut short)
    and return its id, which the answer carries instead of the error itself: no class names or
    trial data leave. `internal_error` words that answer."""
    error_id = secrets.token_hex(6)
    frames = traceback.extract_tb(error.__traceback__)[-_ERROR_FRAMES:]
    log.error(
        message,
        **{
            **fields,
            "error_id": error_id,
            "error": f"{type(error).__name__}: {str(error)[:_ERROR_TEXT_CHARS]}",
            "at": [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in frames],
        },
    )
    return error_id


def internal_error(error_id: str) -> str:
    """The message of an answer to an unexpected error: its id, and where to look."""
    return f"internal error (error id {error_id}); the service's log has the details"
