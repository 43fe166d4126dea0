"""python -m orchestrator_svc: the orchestrator, configured by PRISM_* variables."""

from orchestrator_svc.config import Settings
from orchestrator_svc.server import serve
from prism.lifecycle import run_service

if __name__ == "__main__":
    run_service("orchestrator", Settings.from_env, serve)
