"""Trials that try to pass their own failure off as the platform's, end to end.

`sandbox_error` and `runner_lost` are infrastructure outcomes: retried per the sweep's
`retries`, on whatever runner is free, at other sweeps' expense. What a trial does
must never end as one of them: whatever exit code it picks, whatever it prints that
looks like the supervisor, however it kills or stops itself, and whatever it writes
up to the very edge of its output limit, it ends with its own typed outcome, run
once though its sweep allows two retries (`tests/hostile.py` checks the rest).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prism.stack import ORCHESTRATOR
from tests.hostile import (
    Attack,
    Batch,
    assert_readable,
    assert_survived,
    module_batch,
    unexpected_errors,
)

RETRIES = {"retries": 2}
EXIT = """
import sys
print("prism: could not prepare the trial: ValueError: forged", file=sys.stderr)
sys.exit(CODE)
"""

# Exactly the output limit (16 MiB, the largest a spec may set), then an exit code of
# its own and a last line that breaks a rule, or one that keeps them.
EXACT_OUTPUT = """
import sys
last = LAST + b"\\n"
total = 16 * 2**20
sys.stdout.buffer.write(b"x" * (total - len(last) - 1) + b"\\n" + last)
sys.stdout.flush()
sys.exit(1)
"""
AT_THE_LIMIT = {"outputKb": 16384, "memoryMb": 512}

KILL_SELF = """
import os, signal
os.kill(os.getpid(), signal.SIGKILL)
"""

STOP_SELF = """
import os, signal
print("stopping", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""

ATTACKS = {
    **{
        f"exit_{code}": Attack(EXIT.replace("CODE", str(code)), extra=RETRIES)
        for code in (125, 126, 127, 137, 139, 255)
    },
    "kill_self": Attack(KILL_SELF, extra=RETRIES),
    "stop_self": Attack(STOP_SELF, {"wallSeconds": 3}, extra=RETRIES),
    "exact_output_limit": Attack(
        EXACT_OUTPUT.replace("LAST", "b'{\"n\": 1}'"), AT_THE_LIMIT, extra=RETRIES
    ),
    "exact_output_limit_and_a_broken_result": Attack(
        EXACT_OUTPUT.replace("LAST", "b'{\"n\": ' + b'9' * 401 + b'}'"), AT_THE_LIMIT, extra=RETRIES
    ),
}
EXPECTED = {
    **{f"exit_{code}": ("failed", code) for code in (125, 126, 127, 137, 139, 255)},
    "kill_self": ("failed", 137),
    "stop_self": ("timed_out", -1),
    "exact_output_limit": ("failed", 1),
    "exact_output_limit_and_a_broken_result": ("failed", 1),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[Batch]:
    yield from module_batch(tmp_path_factory.mktemp("outcomes"), sandbox_image, ATTACKS)


def ended(batch: Batch, name: str) -> tuple[str, int, int]:
    trial = batch.trial(name)
    return trial["outcome"], trial["exitCode"], trial["attempts"]


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_trial_ends_with_its_own_outcome_once(batch: Batch, name: str) -> None:
    assert ended(batch, name) == (*EXPECTED[name], 1), batch.trial(name)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_sweep_answers_on_every_route(batch: Batch, name: str) -> None:
    assert_readable(batch.stack, batch.sweeps[name])


def test_a_forged_supervisor_note_is_the_trials_own_stderr(batch: Batch) -> None:
    trial = batch.trial("exit_125")
    assert trial["reason"] == (
        "exited with code 125: prism: could not prepare the trial: ValueError: forged"
    )


def test_the_output_limit_itself_is_kept_whole(batch: Batch) -> None:
    logs = batch.logs("exact_output_limit")
    assert (len(logs["stdout"]), logs["truncated"]) == (16 * 2**20, False)
    assert batch.trial("exact_output_limit")["metrics"] == {"n": 1}


def test_no_trial_makes_the_runner_fail_unexpectedly(batch: Batch) -> None:
    for service in (ORCHESTRATOR, batch.runner):
        assert unexpected_errors(batch.stack, service) == []


def test_the_runner_stream_and_the_services_survive(batch: Batch) -> None:
    assert_survived(batch, unexpected=False)
