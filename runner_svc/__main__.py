"""python -m runner_svc: one runner process, configured by PRISM_RUNNER_* variables."""

from prism.lifecycle import run_service
from runner_svc.config import Settings
from runner_svc.server import serve

if __name__ == "__main__":
    run_service("runner", Settings.from_env, serve)
