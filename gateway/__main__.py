"""``python -m gateway``: render the Envoy configuration from the environment and become Envoy.

The process replaces itself with Envoy (same pid) so that a supervisor tracking the pid tracks
Envoy. Settings errors exit with status 2 and one JSON line on stderr.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from gateway.config import ConfigError, Settings
from gateway.launch import GatewayError, exec_envoy


def _log(level: str, message: str, **fields: object) -> None:
    line = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "logger": "gateway",
        "message": message,
        **fields,
    }
    # Flushed now: exec discards whatever Python still buffers.
    print(json.dumps(line), file=sys.stderr, flush=True)


def main() -> None:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        _log("critical", str(exc))
        sys.exit(2)
    if settings.token is None:
        _log("warning", "no API token configured: every route answers 503 until one is set")
    _log(
        "info",
        "starting envoy",
        listen=str(settings.listen),
        admin_socket=str(settings.admin_socket),
        orchestrator=str(settings.orchestrator),
        config=str(settings.config_path),
        sync_timeout_s=settings.sync_timeout_s,
    )
    try:
        exec_envoy(settings)
    except (GatewayError, OSError) as exc:
        _log("critical", f"cannot start envoy: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
