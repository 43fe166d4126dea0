"""python -m orchestrator_svc: the orchestrator, configured by PRISM_* variables."""

import asyncio

from orchestrator_svc.config import Settings
from orchestrator_svc.server import serve
from prism.service import configure_logging


def main() -> None:
    configure_logging("orchestrator")
    asyncio.run(serve(Settings.from_env()))


if __name__ == "__main__":
    main()
