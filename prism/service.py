"""Temporary: the old names that orchestrator_svc/dispatch.py, runner_svc/executor.py and
runner_svc/servicer.py still import from here, while they are being rewritten. This module
goes once they import from prism.logs, prism.rpc and prism.keepalive instead."""

from __future__ import annotations

import logging
from typing import Any

from prism import logs
from prism.keepalive import CLIENT_KEEPALIVE
from prism.rpc import abort

__all__ = ["CLIENT_KEEPALIVE", "abort", "log", "unexpected"]


def log(logger: logging.Logger, message: str, **fields: Any) -> None:
    logs.get(logger.name).info(message, **fields)


def unexpected(logger: logging.Logger, message: str, error: BaseException, **fields: Any) -> str:
    return logs.unexpected(logs.get(logger.name), message, error, **fields)
