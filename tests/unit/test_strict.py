"""The HTTP create's body parsed strictly into a SweepSpec: a field the spec does not have
is named with where it is (every one at once), and anything that is not the spec as JSON
is an INVALID_ARGUMENT naming the body or the field, never another error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.api import httpbody_pb2
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator_svc import strict
from prism import rpc
from prism.errors import InvalidArgument
from prism.v1 import orchestrator_pb2

SPEC = {
    "task": "tune",
    "script": "print(1)",
    "parameters": {"random": {"trials": 2, "seed": 3, "parameters": {"any name": {"int": [1, 2]}}}},
    "objective": {"metric": "loss", "goal": "maximize"},
    "maxParallel": 2,
    "limits": {"wallSeconds": 5, "memoryMb": 128},
    "requirements": ["tabulate"],
}


def body(value: Any, content_type: str = "application/json") -> httpbody_pb2.HttpBody:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return httpbody_pb2.HttpBody(content_type=content_type, data=data)


def parsed(value: Any, content_type: str = "application/json") -> orchestrator_pb2.SweepSpec:
    return strict.parse(body(value, content_type), orchestrator_pb2.SweepSpec())


def refused(value: Any, content_type: str = "application/json") -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        parsed(value, content_type)
    return dict(caught.value.violations)


def test_a_spec_parses_as_the_typed_request_would_carry_it() -> None:
    assert parsed(SPEC) == json_format.ParseDict(SPEC, orchestrator_pb2.SweepSpec())


def test_field_names_as_protobuf_spells_them_are_fields_too() -> None:
    assert parsed({"task": "t", "max_parallel": 3}).max_parallel == 3


@pytest.mark.parametrize(
    ("spec", "field", "keys"),
    [
        ({"task": "t", "maxParallel": 1, "max_parallel": 2}, "max_parallel", "maxParallel"),
        ({"task": "t", "max_parallel": 1, "maxParallel": 2}, "maxParallel", "max_parallel"),
        ({"task": "t", "limits": {"memory_mb": 1, "memoryMb": 1}}, "limits.memoryMb", "memory_mb"),
    ],
)
def test_a_field_given_by_both_its_names_is_refused(
    spec: dict[str, Any], field: str, keys: str
) -> None:
    assert refused(spec) == {field: f'"{keys}" and "{field.rsplit(".")[-1]}" name one field'}


def test_null_is_a_field_left_out() -> None:
    spec = parsed({"task": "t", "limits": {"memoryMb": None}, "objective": {"goal": None}})
    assert not spec.limits.HasField("memory_mb") and not spec.objective.HasField("goal")


def test_a_limit_given_as_zero_stays_given() -> None:
    spec = parsed({"task": "t", "limits": {"memoryMb": 0}})
    assert spec.limits.HasField("memory_mb") and spec.limits.memory_mb == 0


@pytest.mark.parametrize(
    ("spec", "field", "hint"),
    [
        ({"task": "t", "maxParalel": 4}, "maxParalel", 'did you mean "maxParallel"?'),
        ({"task": "t", "limit": {"memoryMb": 64}}, "limit", 'did you mean "limits"?'),
        ({"task": "t", "limits": {"memory": 64}}, "limits.memory", 'did you mean "memoryMb"?'),
        ({"task": "t", "objective": {"metrik": "x"}}, "objective.metrik", '"metric"'),
        (
            {"task": "t", "parameters": {"random": {"trails": 3}}},
            "parameters.random.trails",
            '"trials"',
        ),
        ({"task": "t", "zzz": 1}, "zzz", "the fields here: task, script, examples"),
    ],
)
def test_an_unknown_field_is_named_with_where_it_is(
    spec: dict[str, Any], field: str, hint: str
) -> None:
    rule = refused(spec)[field]
    assert rule.startswith(f"unknown field {json.dumps(field.rsplit('.')[-1])}")
    assert hint in rule


def test_every_unknown_field_is_named_at_once() -> None:
    found = refused({"task": "t", "limit": {}, "limits": {"cpu": 1, "ram": 2}, "x": None})
    assert set(found) == {"limit", "limits.cpu", "limits.ram", "x"}


def test_hints_are_worked_out_only_for_the_unknown_fields_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hints: list[str] = []

    def hint(key: str, _: Any) -> str:
        hints.append(key)
        return "unknown"

    monkeypatch.setattr(strict, "_unknown", hint)
    found = refused({"task": "t", "limits": {f"k{i}": 1 for i in range(50)}, "x": 1})
    assert len(found) == len(hints) == strict.MAX_NAMED


def test_free_form_values_take_any_key() -> None:
    spec = parsed({"task": "t", "parameters": {"grid": {"limits": [1], "memory": [2]}}})
    assert set(spec.parameters.grid) == {"limits", "memory"}
    spec = parsed({"task": "t", "parameters": {"list": [{"maxParalel": 1}]}})
    assert spec.parameters.list[0]["maxParalel"] == 1


def test_a_long_unknown_key_is_shown_cut() -> None:
    [(field, rule)] = refused({"task": "t", "k" * 10_000: 1}).items()
    assert field == "k" * strict.MAX_KEY_CHARS and len(rule) < 1000


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
        "",
        "application/x-www-form-urlencoded",  # curl -d, unless told otherwise
    ],
)
def test_json_content_types_are_taken(content_type: str) -> None:
    assert parsed({"task": "t"}, content_type).task == "t"


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x"])
def test_other_content_types_are_refused(content_type: str) -> None:
    assert "must be JSON" in refused({"task": "t"}, content_type)["body"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"null", "a JSON object, not null"),
        (b"[]", "not an array"),
        (b'"spec"', "not a string"),
        (b"5", "not a number"),
        (b"true", "not a boolean"),
        (b"not json", "is not JSON"),
        (b'{"task": "t"} trailing', "is not JSON"),
        (b'{"task": "\xff"}', "is not UTF-8"),
        (b'{"task": "a", "task": "b"}', 'names "task" twice'),
        (b'{"limits": {"cpus": NaN}}', "NaN is not a JSON number"),
        (b'{"limits": {"cpus": 1e999}}', "too large for a double"),
        (b'{"parameters": {"grid": {"a": [1' + b"0" * 400 + b"]}}}", "cannot be read"),
        (b'{"task": "t", "maxParallel": ' + b"1" * 5000 + b"}", "more than 4300 digits"),
        (b'{"task": "\\ud800"}', "holds an unpaired surrogate (\\ud800)"),
        (b'{"task": "t", "limits": "\\ud800"}', "unpaired surrogate (\\ud800)"),
        (b'{"task": "t", "objective": ["\\udc00"]}', "unpaired surrogate (\\udc00)"),
        (b'{"\\ud800": 1}', "unpaired surrogate"),
        (b'{"task": "t", "limits": {"\\udfff": 1}}', "unpaired surrogate (\\udfff)"),
        (b'{"task": "t", "examples": "\\ud800x"}', "unpaired surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_named(data: bytes, words: str) -> None:
    assert words in refused(data)["body"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"task": 5}, "task"),
        ({"task": "t", "limits": {"memoryMb": "lots"}}, "limits.memoryMb"),
        ({"task": "t", "limits": {"memoryMb": 1e30}}, "limits.memoryMb"),
        ({"task": "t", "limits": 5}, "limits"),
        ({"task": "t", "parameters": {"grid": {"a": [1]}, "list": [{}]}}, "parameters"),
    ],
)
def test_a_value_of_the_wrong_type_is_named(spec: dict[str, Any], field: str) -> None:
    assert field in refused(spec)


def test_a_surrogate_pair_is_one_character() -> None:
    assert parsed(b'{"task": "\\ud83d\\ude00"}').task == "\U0001f600"


def test_anything_else_the_parser_raises_is_the_body_that_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fails(*_: Any) -> None:
        raise SystemError("returned a result with an exception set")

    monkeypatch.setattr(json_format, "ParseDict", fails)
    assert refused({"task": "t"}) == {"body": "cannot be read as a SweepSpec"}


def test_a_path_through_a_oneof_stops_at_it_and_the_rule_names_the_rest() -> None:
    found = refused({"task": "t", "parameters": {"random": {"seed": -1}}})
    assert found["parameters"].startswith("seed: Value out of range")


# Any text, unpaired surrogates included (st.text() leaves them out); BIG stands for an
# integer of more digits than Python reads, which json.dumps cannot write.
TEXT = st.lists(st.characters(exclude_categories=()) | st.characters(categories=["Cs"])).map(
    "".join
)
BIG = "<an integer of 5000 digits>"
JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.just(BIG) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from([*SPEC, "limits", "memoryMb", "grid", "random", "bogus"]) | TEXT
SPECS = st.recursive(JSON, lambda inner: st.dictionaries(KEYS, inner, max_size=6), max_leaves=30)


def written(value: Any) -> bytes:
    return json.dumps(value).encode().replace(json.dumps(BIG).encode(), b"1" * 5000)


@settings(max_examples=300, deadline=None)
@given(st.one_of(SPECS.map(written), st.binary(max_size=200)))
def test_no_body_makes_anything_but_a_spec_or_invalid_argument(data: bytes) -> None:
    try:
        spec = strict.parse(body(data), orchestrator_pb2.SweepSpec())
    except InvalidArgument as error:
        assert error.violations and all(field and rule for field, rule in error.violations)
        rpc.status_details(error)  # the answer's details: protobuf strings, UTF-8
        str(error).encode()  # the answer's message
    else:
        spec.SerializeToString()
