"""The orchestrator service: the public API, sweep planning, dispatch and recovery."""
