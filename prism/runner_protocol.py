"""The runner stream's contract, both ends of it: what the orchestrator sends down
(commands), what the runner sends up (events) and how a trial's result maps onto
them. prism/v1/runner.proto is the wire; this module is the only code that builds
or reads its messages."""

from __future__ import annotations

# A trial's result carries captured output and artifacts, well over gRPC's 4 MiB
# default message size.
MAX_RESULT_MESSAGE_BYTES = 64 * 2**20
# Initial metadata of the stream saying how many trials the runner executes at once
# (read by orchestrators older than the Hello message).
SLOTS_KEY = "prism-slots"
