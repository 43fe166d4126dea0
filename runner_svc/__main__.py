"""python -m runner_svc: one runner process, configured by PRISM_RUNNER_* variables."""

import asyncio

from prism.service import configure_logging
from runner_svc.config import Settings
from runner_svc.server import serve


def main() -> None:
    configure_logging("runner")
    asyncio.run(serve(Settings.from_env()))


if __name__ == "__main__":
    main()
