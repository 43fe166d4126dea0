"""The API's answers stay within their budgets however heavy the stored trials are:
a sweep of 300 trials with the heaviest results the rules allow, a trial's 16 MiB of
output as logs, the compatible status's share of output per trial.

In-process, like ``tests/unit/test_trial.py`` (split from it), but each test builds and
serialises tens of MiB, seconds of work: kept out of the fast tier."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format

from orchestrator_svc import domain, store, sweeps, views
from prism.trial import to_json


def heavy_trial(
    position: int, stdout: str = "", result: str = "", artifacts: int = 0
) -> store.Trial:
    # By default the heaviest result the rules allow as a Struct: 64 KiB of small numbers.
    return store.Trial(
        id=f"s/{position}",
        sweep="s",
        position=position,
        name=f"trial-{position}",
        params_json=f'{{"i": {position}}}',
        state=domain.FINISHED,
        outcome="succeeded",
        result_json=result or to_json({"z": [0] * 32760}),
        stdout=stdout,
        attempts=1,
    )


def as_json(message: Any) -> str:
    """A message as the gateway writes it (compact), every non-ASCII character escaped:
    the longest JSON it can take."""
    return json.dumps(json_format.MessageToDict(message), separators=(",", ":"))


SWEEP = store.Sweep(id="s", task="t", spec_json='{"task": "t"}', status="done", created_at=1.0)


@pytest.mark.parametrize(
    "result",
    [to_json({"z": [0] * 32760}), to_json({"s": "\x01" * 10920})],
    ids=["heaviest-as-protobuf", "heaviest-as-json"],
)
def test_a_sweep_of_heavy_results_is_answered_within_its_budget(result: str) -> None:
    rows = [heavy_trial(i, result=result) for i in range(300)]
    names = [(f"{'n' * 1000}{i}", 1) for i in range(32)]

    answer = store.SweepAnswer(SWEEP, rows, False, {}, None, [], [])
    shown = views.sweep(SWEEP, answer, {row.id: names for row in rows})

    # As protobuf (what the gateway buffers) and as JSON (what it then writes).
    assert shown.ByteSize() < views.SWEEP_BUDGET_BYTES + 2**20
    assert len(as_json(shown)) < views.SWEEP_BUDGET_BYTES + 2**20
    assert [t.index for t in shown.trials] == list(range(300))
    whole = [t for t in shown.trials if not t.abridged]
    assert whole and whole == list(shown.trials[: len(whole)])
    assert all(t.HasField("metrics") and t.HasField("params") and t.artifacts for t in whole)
    rest = shown.trials[len(whole) :]
    assert rest and not any(
        t.HasField("metrics") or t.HasField("params") or t.artifacts for t in rest
    )
    # GetTrial shows an abridged one whole.
    assert views.trial(rows[-1], names).metrics == whole[0].metrics


def test_the_compatible_status_cuts_outputs_to_their_share() -> None:
    rows = [heavy_trial(i, stdout="x" * 2**20) for i in range(50)]
    share = store.output_share(50, sweeps.OUTPUT_BUDGET_CHARS)

    shown = sweeps.results(rows)

    assert len(shown) == 50
    assert all(len(r.output) < share + 100 for r in shown)
    assert (
        shown[-1].output == "x" * share + "\n[cut: GET /v1/sweeps/s/trials/49/logs has all of it]"
    )


@pytest.mark.parametrize("character", ["x", "\x01", '"', "\ufffd"])
def test_logs_are_answered_within_their_budget_as_json(character: str) -> None:
    row = heavy_trial(0, stdout=character * (16 * 2**20 // len(character.encode())))
    row.stderr = "tail"

    shown = views.logs(row)

    size = len(as_json(shown))
    assert size <= views.LOGS_BUDGET_BYTES + 1024
    assert shown.truncated == (character != "x")
    assert shown.stdout == row.stdout[: len(shown.stdout)]
