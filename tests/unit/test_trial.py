"""The trial-result type and its rules, in-process: no Docker, no services.

What a trial says is parsed by ``prism.trial`` into bounded values; these tests hold
the parser to being total (an attacker's bytes give a value or a named rule, never
another exception) and to letting through only what every later stage can store,
send and show."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

import pytest
from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator_svc import domain, store, views
from prism.trial import (
    INT64,
    MAX_ARTIFACT_BYTES,
    MAX_ARTIFACT_FILES,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_OUTPUT_BYTES,
    Artifact,
    NotAnObject,
    Outcome,
    RuleBroken,
    TrialResult,
    artifact_name,
    parse_object,
    shown_text,
    to_json,
)
from prism.v1 import orchestrator_pb2, trial_pb2
from sandbox import bootstrap

# JSON values of any shape a trial can write, within and beyond the rules.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=40,
)


def nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value  # type: ignore[no-any-return]


def test_outcomes_match_the_proto_enum_both_ways() -> None:
    proto = {n.removeprefix("OUTCOME_").lower() for n in trial_pb2.Outcome.keys()} - {"unspecified"}
    assert {o.value for o in Outcome} == proto
    for outcome in Outcome:
        assert Outcome.from_proto(outcome.to_proto()) is outcome
    assert Outcome.from_proto(trial_pb2.OUTCOME_UNSPECIFIED) is Outcome.SANDBOX_ERROR
    assert Outcome.from_proto(999) is Outcome.SANDBOX_ERROR


def test_only_the_platforms_failures_are_retried() -> None:
    assert {o for o in Outcome if o.infrastructure} == {
        Outcome.SANDBOX_ERROR,
        Outcome.RUNNER_LOST,
    }


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_parsing_any_bytes_gives_an_object_or_a_named_rule(raw: bytes) -> None:
    try:
        value = parse_object(raw, what="it")
    except (RuleBroken, NotAnObject) as error:
        assert str(error).startswith("it ")
    else:
        assert isinstance(value, dict)


@settings(max_examples=300)
@given(json_values)
def test_what_passes_the_rules_can_be_stored_sent_and_shown(value: Any) -> None:
    try:
        text = json.dumps({"v": value}, allow_nan=True)
    except ValueError:
        return
    try:
        parsed = parse_object(text, what="it")
    except RuleBroken:
        return
    # Kept and sent as compact JSON; read back the same.
    assert parse_object(to_json(parsed), what="it") == parsed
    # Shown through the public API: a Struct inside a Trial inside a Sweep, serialised
    # and parsed back as any client does.
    sweep = orchestrator_pb2.Sweep()
    sweep.trials.add().metrics.update(parsed)
    assert orchestrator_pb2.Sweep.FromString(sweep.SerializeToString()) == sweep


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 60, 900, 5000])
def test_nesting_is_capped(depth: int) -> None:
    text = json.dumps(nested(depth - 1)) if depth < 900 else '{"a":' * depth + "1" + "}" * depth
    if depth <= MAX_JSON_DEPTH:
        assert parse_object(text, what="it") == nested(depth - 1)
    else:
        with pytest.raises(RuleBroken, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
            parse_object(text, what="it")


@pytest.mark.parametrize(
    ("digits", "allowed"),
    [
        (str(INT64[0]), True),
        (str(INT64[1]), True),
        (str(INT64[0] - 1), False),
        (str(INT64[1] + 1), False),
        (str(10**30), False),
        ("9" * 401, False),
        ("-" + "9" * 5000, False),
    ],
    ids=["min", "max", "below", "above", "1e30", "401-digits", "5000-digits"],
)
def test_integers_must_fit_64_bits(digits: str, allowed: bool) -> None:
    text = '{"n": ' + digits + "}"
    if allowed:
        assert parse_object(text, what="it") == {"n": int(digits)}
    else:
        with pytest.raises(RuleBroken, match="outside the 64-bit range"):
            parse_object(text, what="it")


def test_non_finite_numbers_become_null() -> None:
    text = '{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1e999, "e": -1e999, "f": 1.5}'
    assert parse_object(text, what="it") == dict(a=None, b=None, c=None, d=None, e=None, f=1.5)


def test_size_counts_the_compact_form() -> None:
    # Written loosely it is over the cap; compact, it fits.
    loose = '{"x":' + " " * 100 + json.dumps("y" * (MAX_JSON_BYTES - 20)) + " " * 100 + "}"
    assert len(loose) > MAX_JSON_BYTES
    assert parse_object(loose, what="it") == {"x": "y" * (MAX_JSON_BYTES - 20)}
    # Floats that print longer than written still count as printed.
    many = "{" + ",".join(f'"{i}":1e5' for i in range(5000)) + "}"
    assert len(many) < MAX_JSON_BYTES
    with pytest.raises(RuleBroken, match="larger than"):
        parse_object(many, what="it")


@pytest.mark.parametrize(
    "text",
    ['{"\\ud800": 1}', '{"a": "\\udfff"}', '{"a": ["\\ud83d"]}'],
)
def test_lone_surrogates_break_the_rules(text: str) -> None:
    with pytest.raises(RuleBroken, match="not valid Unicode"):
        parse_object(text, what="it")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/etc/passwd",
        "../../../etc/passwd",
        "a/../b",
        "a//b",
        "a/./b",
        "a/",
        ".",
        "..",
        "tab\there",
        "new\nline",
        "esc\x1b[2J",
        "del\x7f",
        "c1\x9b",
        "nul\x00",
        "\u202etxt.exe",
        "line\u2028separator",
        "zero\u200bwidth",
        "\ufeffbom",
        "isolate\u2066x\u2069",
        "x" * 256,
        "a/" + "y" * 256,
        "/".join(["p" * 200] * 6),
        "\udc80",
    ],
)
def test_artifact_names_that_break_a_rule(name: str) -> None:
    with pytest.raises(RuleBroken, match="artifact name"):
        artifact_name(name)


@pytest.mark.parametrize("name", ["a", "plots/loss.png", "ünïcode/名前.txt", "x" * 255, ".hidden"])
def test_artifact_names_that_keep_the_rules(name: str) -> None:
    assert artifact_name(name) == name


@given(
    st.lists(
        st.text(min_size=1, max_size=300).filter(lambda p: p not in (".", "..") and "/" not in p),
        min_size=1,
        max_size=3,
    )
)
def test_the_bootstrap_and_the_host_agree_on_names(parts: list[str]) -> None:
    # The bootstrap sees names made of folder entries (never "", ".", ".." or a "/"),
    # skips those it cannot report; the host refuses those and only those.
    name = "/".join(parts)
    try:
        artifact_name(name)
        host_ok = True
    except RuleBroken:
        host_ok = False
    assert (bootstrap.name_problem(name) is None) == host_ok


def result(**given: Any) -> TrialResult:
    return TrialResult(**{"outcome": Outcome.SUCCEEDED, "reason": "exited with code 0", **given})


def test_a_result_survives_the_wire_and_the_store_unchanged() -> None:
    original = result(
        exit_code=0,
        stdout="out ünï\n",
        stderr="err\n",
        output_truncated=True,
        duration_seconds=1.5,
        result={"loss": 0.25, "nested": {"list": [1, None, "x"]}},
        peak_memory_bytes=12345,
        artifacts=(Artifact("a.txt", b"\x00\xff"), Artifact("b/c.bin", b"")),
        artifacts_skipped=("d: a symlink, not a regular file",),
    )
    assert TrialResult.from_proto(original.to_proto()) == original
    row = SimpleNamespace(**original.columns())
    artifacts = [(a.name, a.data) for a in original.artifacts]
    assert TrialResult.from_columns(row, artifacts) == original


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("result_json", json.dumps(nested(60)), "nested deeper than 16 levels"),
        ("result_json", '{"n": ' + "9" * 401 + "}", "outside the 64-bit range"),
        ("result_json", "[1]", "not a JSON object"),
        ("result_json", "{", "not JSON"),
        ("artifacts", [("../../../etc/passwd", b"x")], "is not a normalised relative path"),
        ("artifacts", [("a", b"x"), ("a", b"y")], "appears twice"),
        ("artifacts", [(f"{i}", b"") for i in range(MAX_ARTIFACT_FILES + 1)], "more than 32"),
        ("artifacts", [("a", b"x" * (MAX_ARTIFACT_BYTES + 1))], "larger than"),
        ("artifacts_skipped", [f"{i}" for i in range(65)], "more than 64"),
    ],
)
def test_a_poisoned_result_from_the_wire_is_a_failed_trial_not_an_exception(
    field: str, value: Any, rule: str
) -> None:
    message = trial_pb2.TrialResult(outcome=trial_pb2.OUTCOME_SUCCEEDED, reason="ok")
    if field == "result_json":
        message.result_json = value
    elif field == "artifacts":
        message.artifacts.extend(trial_pb2.Artifact(name=n, data=d) for n, d in value)
    else:
        message.artifacts_skipped.extend(value)

    parsed = TrialResult.from_proto(message)

    assert parsed.outcome is Outcome.FAILED
    assert parsed.reason.startswith("the trial's result breaks a rule: ")
    assert rule in parsed.reason
    assert (parsed.result, parsed.artifacts) == (None, ())


def test_measured_numbers_are_clamped_and_shown_text_is_cleaned() -> None:
    made = result(
        reason="exited with code 1: \x1b[31mred\r\nforged line" + "x" * 5000,
        exit_code=2**40,
        peak_memory_bytes=2**64,
        duration_seconds=math.nan,
        artifacts_skipped=("evil\x1b]0;title\x07: a symlink",),
    )
    assert made.exit_code == 2**31 - 1
    assert made.peak_memory_bytes == 2**63 - 1
    assert made.duration_seconds == 0.0
    assert "\x1b" not in made.reason and "\r" not in made.reason and "\n" not in made.reason
    assert len(made.reason) == 1000
    assert made.artifacts_skipped == ("evil\ufffd]0;title\ufffd: a symlink",)
    assert shown_text("a\tb\nc\x00", 10) == "a\ufffdb\ufffdc\ufffd"
    assert shown_text("x\u202ey\u2028z\u200b", 10) == "x\ufffdy\ufffdz\ufffd"


# Rows an earlier version may have stored, without today's checks: reading them back
# (the runner's replay, the API's answers) never raises.
POISON = [
    json.dumps(nested(60)),
    '{"n": ' + "9" * 401 + "}",
    '{"n": 1e400}',
    '{"\\ud800": 1}',
    "[1, 2]",
    "not json",
    '{"a":' * 900 + "1" + "}" * 900,
]


@pytest.mark.parametrize("stored", POISON)
def test_stored_poison_reads_back_as_a_failed_trial(stored: str) -> None:
    row = SimpleNamespace(
        **{**result().columns(), "result_json": stored, "artifacts_skipped_json": "[]"}
    )
    read = TrialResult.from_columns(row, [("../x", b"")])
    assert read.outcome is Outcome.FAILED


@pytest.mark.parametrize("stored", POISON)
def test_the_api_shows_any_stored_value(stored: str) -> None:
    trial = store.Trial(
        id="s/0",
        position=0,
        name="t",
        params_json=stored,
        state=domain.FINISHED,
        outcome="succeeded",
        result_json=stored,
        attempts=1,
    )
    sweep = store.Sweep(
        id="s",
        task="t",
        spec_json=json.dumps({"task": "t", "objective": {"metric": "n"}}),
        status="done",
        created_at=1.0,
    )
    shown = views.sweep(sweep, store.SweepAnswer(sweep, [trial], False, {}, trial, [], []), {})
    orchestrator_pb2.Sweep.FromString(shown.SerializeToString())
    event = store.Event(seq=1, kind="metric", trial_index=0, data=stored, at=1.0)
    orchestrator_pb2.SweepEvent.FromString(views.event(event).SerializeToString())
    finished = store.Event(seq=2, kind="sweep_finished", data=stored, at=1.0)
    assert views.event(finished).final


def test_a_metric_event_one_level_down_is_shown_whole() -> None:
    metric = nested(MAX_JSON_DEPTH - 1)
    event = store.Event(
        seq=1, kind="metric", trial_index=0, data=json.dumps({"values": metric}), at=1.0
    )
    expected = struct_pb2.Struct()
    expected.update({"values": metric})
    assert views.event(event).data == expected


def test_output_is_kept_within_its_cap_in_utf8() -> None:
    # 16 MiB of bytes that are not UTF-8 decode to three times as much: cut, never more.
    made = result(stdout="\ufffd" * (12 * 2**20), stderr="e" * 2**20)
    assert len(made.stdout.encode()) + len(made.stderr.encode()) <= MAX_OUTPUT_BYTES
    assert made.output_truncated
    assert made.stderr == ""  # stdout came first and took the room
