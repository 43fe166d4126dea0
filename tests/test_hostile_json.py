"""Absurd numbers and JSON, end to end: results (the last stdout line or the result
file) and metric lines as a hostile trial writes them.

A result or a metric's values end up in both stores, in the runner stream, in GET
/v1/sweeps/{id} (inside a Struct inside a Trial inside a Sweep, transcoded by the
gateway) and in the watch stream. A trial whose JSON breaks a rule of `prism.trial`
must end `failed` naming the rule (a metric line at once); one within the rules must
succeed with its value as the rules define it (NaN, infinities and overflowing floats
become null); and whatever it wrote, its sweep must answer on every route with a watch
that ends in its final event, while the runner's stream stays up (`tests/hostile.py`).
Every case is its own sweep, all created at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.hostile import (
    Attack,
    Batch,
    assert_readable,
    assert_survived,
    metric_values,
    module_batch,
    watch,
)

# The result as the last line of stdout (after an ordinary one), or as the result file.
EMIT = """
import os, sys
line = EXPR
if WHERE == "stdout":
    sys.stdout.buffer.write(b"warming up\\n" + line + b"\\n")
else:
    with open("/workspace/result.json", "wb") as f:
        f.write(line)
sys.exit(EXIT)
"""
# A metric line between two good ones; a trial whose line breaks a rule is stopped
# before it sleeps and prints.
METRIC = """
import sys, time
out = sys.stdout.buffer
for line in (b'{"ok": 1}', EXPR, b'{"after": 1}'):
    out.write(b"PRISM_METRIC " + line + b"\\n")
    out.flush()
time.sleep(SLEEP)
print("reached")
"""


def objects(depth: int) -> str:
    """Source of bytes: objects nested so that their innermost value is at `depth`
    (the outer object is level 1, as in prism.trial)."""
    return f"b'{{\"a\":' * {depth - 1} + b'1' + b'}}' * {depth - 1}"


def arrays(depth: int) -> str:
    """An object holding arrays nested so that the innermost value is at `depth`."""
    return f"b'{{\"a\":' + b'[' * {depth - 2} + b'1' + b']' * {depth - 2} + b'}}'"


def nested(depth: int) -> Any:
    """The value `objects(depth)` writes."""
    value: Any = 1
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def in_arrays(depth: int) -> Any:
    """The value `arrays(depth)` writes."""
    value: Any = 1
    for _ in range(depth - 2):
        value = [value]
    return {"a": value}


@dataclass(frozen=True)
class Result:
    """A result as written, and what the trial must end as: `failed` with `rule` in
    its reason, or `succeeded` with `metrics` (None: no result at all)."""

    expr: str
    rule: str = ""
    metrics: Any = None
    where: str = "stdout"
    exit: int = 0

    def attack(self) -> Attack:
        script = EMIT.replace("EXPR", self.expr).replace("WHERE", repr(self.where))
        return Attack(script.replace("EXIT", str(self.exit)), {"outputKb": 2048})


INT64 = 'b\'{"low": -9223372036854775808, "high": 9223372036854775807}\''
# Compact, exactly the cap: {"s":"xxx...x"} is 8 bytes around the x's.
EXACT = "b'{\"s\":\"' + b'x' * 65528 + b'\"}'"
OVER = "b'{\"s\":\"' + b'x' * 65529 + b'\"}'"
# Over the cap as written, within it once compact.
LOOSE = "b'{\"s\":' + b' ' * 100 + b'\"' + b'x' * 65528 + b'\"' + b' ' * 100 + b'}'"

RESULTS = {
    "int_401_digits": Result("b'{\"n\": ' + b'9' * 401 + b'}'", "integer outside the 64-bit"),
    "int64_edges": Result(INT64, metrics={"low": -(2.0**63), "high": 2.0**63}),
    "int64_plus_one": Result("b'{\"n\": 9223372036854775808}'", "integer outside the 64-bit"),
    "negative_zero": Result('b\'{"i": -0, "f": -0.0, "e": -0e0}\'', metrics=dict(i=0, f=0, e=0)),
    "overflowing_floats": Result(
        'b\'{"big": 1e309, "neg": -1e999, "max": 1.7976931348623157e308, '
        '"tiny": 5e-324, "under": 1e-400}\'',
        metrics={
            "big": None,
            "neg": None,
            "max": 1.7976931348623157e308,
            "tiny": 5e-324,
            "under": 0.0,
        },
    ),
    "nan_and_infinities": Result(
        'b\'{"a": NaN, "b": Infinity, "c": -Infinity}\'', metrics=dict(a=None, b=None, c=None)
    ),
    "nan_lowercase": Result("b'{\"a\": nan}'"),
    "plus_sign": Result("b'{\"a\": +1}'"),
    "objects_15_deep": Result(objects(15), metrics=nested(15)),
    "objects_16_deep": Result(objects(16), metrics=nested(16)),
    "objects_17_deep": Result(objects(17), "nested deeper than 16 levels"),
    "objects_60_deep": Result(objects(60), "nested deeper than 16 levels"),
    "objects_900_deep": Result(objects(900), "nested deeper than 16 levels"),
    "objects_100000_deep": Result(objects(100000), "larger than 65536 bytes"),
    "arrays_15_deep": Result(arrays(15), metrics=in_arrays(15)),
    "arrays_16_deep": Result(arrays(16), metrics=in_arrays(16)),
    "arrays_17_deep": Result(arrays(17), "nested deeper than 16 levels"),
    "arrays_60_deep": Result(arrays(60), "nested deeper than 16 levels"),
    "arrays_900_deep": Result(arrays(900), "nested deeper than 16 levels"),
    "arrays_100000_deep": Result(arrays(100000), "nested deeper than 16 levels"),
    "bare_array_100000_deep": Result("b'[' * 100000 + b']' * 100000"),
    "long_key": Result("b'{\"' + b'k' * 65000 + b'\": 1}'", metrics={"k" * 65000: 1}),
    "exactly_64_kib": Result(EXACT, metrics={"s": "x" * 65528}),
    "one_byte_over": Result(OVER, "larger than 65536 bytes"),
    "loose_within_once_compact": Result(LOOSE, metrics={"s": "x" * 65528}),
    "duplicate_keys": Result('b\'{"a": 1, "a": 2}\'', metrics={"a": 2}),
    "control_characters_in_a_value": Result(
        'b\'{"a": "\\\\u001b[2J\\\\u0000\\\\r\\\\n"}\'', metrics={"a": "\x1b[2J\x00\r\n"}
    ),
    "lone_surrogate_value": Result('b\'{"a": "\\\\ud800"}\'', "not valid Unicode"),
    "lone_surrogate_key": Result("b'{\"\\\\udfff\": 1}'", "not valid Unicode"),
    "byte_order_mark": Result("b'\\xef\\xbb\\xbf{\"a\": 1}'"),
    "not_utf8": Result('b\'{"a": "\\xff"}\''),
    "failing_script_huge_int": Result(
        "b'{\"n\": ' + b'9' * 401 + b'}'", "exited with code 2", exit=2
    ),
    # The result file: the same rules, and it must be a readable UTF-8 regular file.
    "file_not_utf8": Result('b\'{"a": "\\xff"}\'', "is not UTF-8", where="file"),
    "file_an_array": Result("b'[1]'", "is not a JSON object", where="file"),
    "file_empty": Result("b''", "is not JSON", where="file"),
    "file_too_deep": Result(arrays(30000), "nested deeper than 16 levels", where="file"),
    "file_exactly_64_kib": Result(EXACT, metrics={"s": "x" * 65528}, where="file"),
    "file_one_byte_over": Result(OVER, "larger than 65536 bytes", where="file"),
}

# Result files that are not regular files the bootstrap may read.
FILE_SETUP = """
import os
kind = KIND
path = "/workspace/result.json"
if kind == "fifo":
    os.mkfifo(path)
elif kind == "symlink":
    os.symlink("/etc/passwd", path)
elif kind == "folder":
    os.mkdir(path)
else:
    with open(path, "w") as f:
        f.write('{"a": 1}')
    os.chmod(path, 0)
"""
FILES = {
    "file_a_fifo": ("fifo", "is a fifo, not a regular file"),
    "file_a_symlink": ("symlink", "is a symlink, not a regular file"),
    "file_a_folder": ("folder", "is a folder, not a regular file"),
    "file_unreadable": ("unreadable", "cannot be read (Permission denied)"),
}


@dataclass(frozen=True)
class Metric:
    """A metric line as written: `rule` when it breaks one, else the values recorded."""

    expr: str
    rule: str = ""
    values: Any = None

    def attack(self) -> Attack:
        script = METRIC.replace("EXPR", self.expr).replace("SLEEP", "30" if self.rule else "0")
        return Attack(script, {"wallSeconds": 60, "outputKb": 2048})


def line(size: int) -> str:
    """Source of bytes: {"s":"xx...x"}, `size` x's (8 bytes around them)."""
    return f"b'{{\"s\":\"' + b'x' * {size} + b'\"}}'"


METRICS = {
    "metric_150_deep": Metric(objects(150), "metric line 2 is nested deeper than 16 levels"),
    "metric_30000_deep": Metric(arrays(30000), "metric line 2 is nested deeper than 16 levels"),
    "metric_401_digits": Metric(
        "b'{\"n\": ' + b'9' * 401 + b'}'", "metric line 2 holds an integer outside the 64-bit range"
    ),
    "metric_lone_surrogate": Metric(
        'b\'{"a": "\\\\udc00"}\'', "metric line 2 holds a string that is not valid Unicode"
    ),
    "metric_not_json": Metric("b'{not json'", "metric line 2 is not JSON"),
    "metric_not_an_object": Metric("b'[1, 2]'", "metric line 2 is not a JSON object"),
    "metric_byte_order_mark": Metric("b'\\xef\\xbb\\xbf{\"a\": 1}'", "metric line 2 is not JSON"),
    "metric_not_utf8": Metric('b\'{"a": "\\xff"}\'', "metric line 2 is not UTF-8"),
    # 13 bytes of prefix: the whole line is one byte over 64 KiB.
    "metric_line_one_byte_over": Metric(line(65516), "metric line 2 is longer than 65536 bytes"),
    # Short as written; four times the cap once each 1e15 is printed in full.
    "metric_over_once_printed": Metric(
        "b'{\"a\": [' + b','.join([b'1e15'] * 12000) + b']}'",
        "metric line 2 is larger than 65536 bytes",
    ),
    "metric_line_exactly_64_kib": Metric(line(65515), values={"s": "x" * 65515}),
    "metric_16_deep": Metric(objects(16), values=nested(16)),
    "metric_nan_and_infinities": Metric(
        'b\'{"a": NaN, "b": -Infinity, "c": 1e999, "z": -0.0}\'',
        values={"a": None, "b": None, "c": None, "z": 0},
    ),
    "metric_duplicate_keys": Metric('b\'{"a": 1, "a": 2}\'', values={"a": 2}),
    "metric_int64_edges": Metric(INT64, values={"low": -(2.0**63), "high": 2.0**63}),
}

ATTACKS = {
    **{name: case.attack() for name, case in RESULTS.items()},
    **{name: Attack(FILE_SETUP.replace("KIND", repr(kind))) for name, (kind, _) in FILES.items()},
    **{name: case.attack() for name, case in METRICS.items()},
    "file_loose_within_once_compact": Result(LOOSE, where="file").attack(),
    # Not JSON at all, though it starts with a brace: the last line is no result.
    "huge_line_starting_with_a_brace": Attack(
        "import sys\nsys.stdout.write('{' + 'x' * 600000 + '\\n')\n", {"outputKb": 2048}
    ),
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[Batch]:
    yield from module_batch(tmp_path_factory.mktemp("json"), sandbox_image, ATTACKS)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_sweep_answers_on_every_route(batch: Batch, name: str) -> None:
    assert_readable(batch.stack, batch.sweeps[name])


@pytest.mark.parametrize("name", list(RESULTS))
def test_a_result_ends_its_trial_as_the_rules_say(batch: Batch, name: str) -> None:
    case, trial = RESULTS[name], batch.trial(name)
    if name == "failing_script_huge_int":
        assert (trial["outcome"], trial["exitCode"]) == ("failed", 2), trial
        assert trial["reason"].startswith("exited with code 2")
        assert batch.logs(name)["stderr"].endswith(
            "prism: the result (the last line of stdout) holds an integer outside the "
            "64-bit range\n"
        )
    elif case.rule:
        assert (trial["outcome"], trial["exitCode"]) == ("failed", 0), trial
        assert trial["reason"].startswith("broke a rule: "), trial["reason"]
        assert case.rule in trial["reason"]
        assert trial.get("metrics") in (None, {})
    else:
        assert (trial["outcome"], trial["reason"]) == ("succeeded", "exited with code 0"), trial
        assert trial.get("metrics") == case.metrics


@pytest.mark.parametrize("name", list(FILES))
def test_a_result_file_that_is_not_a_readable_file_fails_naming_why(
    batch: Batch, name: str
) -> None:
    trial = batch.trial(name)
    assert (trial["outcome"], trial["exitCode"]) == ("failed", 0), trial
    assert trial["reason"] == f"broke a rule: /workspace/result.json {FILES[name][1]}"


@pytest.mark.parametrize("name", list(METRICS))
def test_a_metric_line_is_recorded_or_stops_its_trial_naming_the_rule(
    batch: Batch, name: str
) -> None:
    case, trial = METRICS[name], batch.trial(name)
    values = metric_values(watch(batch.stack, batch.sweeps[name]["id"]))
    stdout = batch.logs(name)["stdout"]
    if case.rule:
        assert (trial["outcome"], trial["reason"]) == (
            "failed",
            f"broke a rule: {case.rule}; the trial was stopped",
        )
        assert values == [{"ok": 1}]
        assert "reached" not in stdout  # stopped at once, not at the end of its sleep
    else:
        assert trial["outcome"] == "succeeded", trial
        assert values == [{"ok": 1}, case.values, {"after": 1}]
        assert stdout.endswith("reached\n")


def test_a_loose_result_file_within_the_cap_once_compact_is_accepted(batch: Batch) -> None:
    trial = batch.trial("file_loose_within_once_compact")
    assert (trial["outcome"], trial.get("metrics")) == ("succeeded", {"s": "x" * 65528}), trial


def test_a_huge_last_line_that_is_not_json_is_no_result(batch: Batch) -> None:
    trial = batch.trial("huge_line_starting_with_a_brace")
    assert (trial["outcome"], trial.get("metrics")) == ("succeeded", None), trial


def test_the_runner_stream_and_the_services_survive(batch: Batch) -> None:
    assert_survived(batch)
