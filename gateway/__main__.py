"""``python -m gateway``: render the Envoy configuration from the environment and become Envoy.

The process replaces itself with Envoy (same pid) so that a supervisor tracking the pid tracks
Envoy. Its own lines go to stderr, where Envoy's own log goes too (stdout is Envoy's access
log), as `prism.logs` JSON lines; a settings error exits with status 2 and one such line.
"""

from __future__ import annotations

import sys

from gateway.config import Settings
from gateway.launch import GatewayError, exec_envoy
from prism import logs

log = logs.get("gateway")


def main() -> None:
    try:
        logs.configure("gateway", stream=sys.stderr)
        settings = Settings.from_env()
    except ValueError as exc:  # a ConfigError, or PRISM_LOG_LEVEL's
        log.critical(str(exc))
        sys.exit(2)
    if settings.token is None:
        log.warning("no API token configured: every route answers 503 until one is set")
    log.info(
        "starting envoy",
        listen=str(settings.listen),
        admin_socket=str(settings.admin_socket),
        orchestrator=str(settings.orchestrator),
        config=str(settings.config_path),
        sync_timeout_s=settings.sync_timeout_s,
    )
    try:
        # Each line above is flushed as it is written: exec discards what Python still buffers.
        exec_envoy(settings)
    except (GatewayError, OSError) as exc:
        log.critical(f"cannot start envoy: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
