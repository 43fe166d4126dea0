"""Where a trial's bytes enter the runner (``sandbox/container.py``), fed synthetic
streams: the bootstrap's report found in stderr by the run's key, the metric lines of
stdout, the result, and the verdict drawn from them. These private helpers are the
trust boundary, so they are tested directly, without an engine.

The good reports here are written by the bootstrap's own code (``sandbox/bootstrap.py``,
pointed at a folder of this test's instead of the container's /workspace and cgroup);
the bad ones are framed by hand the way its docstring says:
``\\x1ePRISM-REPORT <key> <length>\\n<length bytes>``."""

from __future__ import annotations

import io
import json
import logging
import re
import struct
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import docker
import pytest

from prism.trial import MAX_JSON_BYTES, Artifact, Outcome, RuleBroken
from sandbox import bootstrap
from sandbox.bootstrap import (
    MAX_RESULT_FILE_BYTES,
    MAX_SKIPPED_LISTED,
    REPORT_MARK,
    RESULT_FILE,
)
from sandbox.container import (
    MAX_METRICS,
    Limits,
    Sandbox,
    _exit_reason,
    _MetricLines,
    _parse_report,
    _Report,
    _ReportReader,
    _Trial,
    _trial_result,
)
from sandbox.prism_trial import MAX_METRIC_LINE_BYTES, METRIC_PREFIX

KEY = "0123456789abcdef0123456789abcdef"
LIMITS = Limits(memory_bytes=64 * 2**20)


def meta(**fields: Any) -> dict[str, Any]:
    """A report's head as the bootstrap writes it, with ``fields`` changed."""
    return {
        "setup_error": None,
        "result": None,
        "result_error": None,
        "signal": 0,
        "peak_memory_bytes": 0,
        "oom_kills": 0,
        "artifacts": [],
        "artifacts_skipped": [],
        **fields,
    }


def payload(head: dict[str, Any], *contents: bytes) -> bytes:
    return json.dumps(head).encode() + b"\n" + b"".join(contents)


def frame(body: bytes, key: str = KEY) -> bytes:
    return REPORT_MARK + key.encode() + b" %d\n" % len(body) + body


def read(data: bytes, chunk: int, key: str = KEY) -> tuple[bytes, _ReportReader]:
    """Feed ``data`` to a reader ``chunk`` bytes at a time; the stderr text it gave back."""
    reader = _ReportReader(key)
    text = b"".join(reader.feed(data[i : i + chunk]) for i in range(0, len(data), chunk))
    return text + reader.end(), reader


CHUNKS = [1, 2, 7, 64, 10**9]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bootstrap's container paths, pointed at a folder of this test's."""
    (tmp_path / "output").mkdir()
    (tmp_path / "memory.peak").write_text("12345678\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    monkeypatch.setattr(bootstrap, "RESULT_FILE", str(tmp_path / "result.json"))
    monkeypatch.setattr(bootstrap, "OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setattr(bootstrap, "_PEAK_FILES", (str(tmp_path / "memory.peak"),))
    monkeypatch.setattr(bootstrap, "_OOM_FILES", (str(tmp_path / "memory.events"),))
    return tmp_path


def bootstrap_report(capfdbinary: pytest.CaptureFixture[bytes], **kwargs: Any) -> bytes:
    """What the bootstrap writes to stderr when the script has ended."""
    capfdbinary.readouterr()
    bootstrap._report(KEY, **kwargs)
    return capfdbinary.readouterr().err


# --- the report in stderr ------------------------------------------------------------------


@pytest.mark.parametrize("chunk", CHUNKS)
def test_the_bootstraps_report_is_taken_out_of_stderr(
    workspace: Path, capfdbinary: pytest.CaptureFixture[bytes], chunk: int
) -> None:
    (workspace / "result.json").write_text('{"loss": 0.25}')
    (workspace / "output" / "plots").mkdir()
    (workspace / "output" / "plots" / "loss.txt").write_bytes(b"\x00\xff data")
    (workspace / "output" / "a.txt").write_bytes(b"a")
    (workspace / "output" / "link").symlink_to(workspace / "output" / "a.txt")
    report = bootstrap_report(capfdbinary, signalled=9)
    before, after = b"Traceback ...\nValueError: x\n", b"late line\n"

    text, reader = read(before + report + after, chunk)

    assert (text, reader.problem) == (before + after, None)
    assert reader.payload is not None
    parsed = _parse_report(reader.payload, LIMITS)
    assert (parsed.setup_error, parsed.result, parsed.result_error) == (
        None,
        '{"loss": 0.25}',
        None,
    )
    assert (parsed.signal, parsed.peak_memory_bytes, parsed.oom_kills) == (9, 12345678, 2)
    assert parsed.artifacts == (
        Artifact("a.txt", b"a"),
        Artifact("plots/loss.txt", b"\x00\xff data"),
    )
    assert parsed.artifacts_skipped == ("link: a symlink, not a regular file",)
    assert _trial_result(parsed, bytearray(b'{"not": "this"}\n')) == {"loss": 0.25}


def test_a_setup_error_is_reported_alone(
    workspace: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    (workspace / "result.json").write_text('{"loss": 1}')
    (workspace / "output" / "a.txt").write_bytes(b"a")

    _, reader = read(bootstrap_report(capfdbinary, setup_error="KeyError: 'PRISM_SCRIPT'"), 64)

    assert reader.payload is not None
    parsed = _parse_report(reader.payload, LIMITS)
    assert parsed.setup_error == "KeyError: 'PRISM_SCRIPT'"
    assert (parsed.result, parsed.artifacts) == (None, ())


def test_a_result_file_the_bootstrap_cannot_take_is_named(
    workspace: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    (workspace / "result.json").write_bytes(b"\xff\xfe not utf-8")

    _, reader = read(bootstrap_report(capfdbinary), 64)

    assert reader.payload is not None
    parsed = _parse_report(reader.payload, LIMITS)
    with pytest.raises(RuleBroken, match=re.escape(f"{RESULT_FILE} is not UTF-8")):
        _trial_result(parsed, bytearray(b'{"loss": 1}\n'))


def test_the_peak_is_never_more_than_the_containers_memory() -> None:
    body = payload(meta(peak_memory_bytes=2**62))
    assert _parse_report(body, LIMITS).peak_memory_bytes == LIMITS.container_memory_bytes


@pytest.mark.parametrize("chunk", CHUNKS)
def test_a_frame_with_another_key_is_only_text(chunk: int) -> None:
    forged = frame(payload(meta(result='{"loss": -1}')), key="f" * 32)
    real = frame(payload(meta(result='{"loss": 1}')))

    text, reader = read(b"x" + forged + b"y\n" + real, chunk)

    assert text == b"x" + forged + b"y\n"
    assert reader.payload == payload(meta(result='{"loss": 1}'))


def test_each_trial_has_a_key_of_its_own() -> None:
    first, second = _Trial(2**20, None), _Trial(2**20, None)
    assert first.report_key != second.report_key
    assert len(first.report_key) >= 32
    body = frame(payload(meta()), key=first.report_key)
    assert second.report.feed(body) + second.report.end() == body
    assert second.report.payload is None


@pytest.mark.parametrize("chunk", CHUNKS)
def test_what_follows_the_report_is_text_even_another_report(chunk: int) -> None:
    first, second = frame(payload(meta(signal=1))), frame(payload(meta(signal=2)))

    text, reader = read(first + second, chunk)

    assert text == second
    assert reader.payload == payload(meta(signal=1))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_text_that_only_starts_like_the_mark_is_given_back(chunk: int) -> None:
    almost = REPORT_MARK + KEY[:-1].encode()
    text, reader = read(b"before " + almost, chunk)
    assert (text, reader.payload, reader.problem) == (b"before " + almost, None, None)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize(
    "cut",
    [
        len(REPORT_MARK) + len(KEY) + 1,  # the mark and the key, no length
        len(REPORT_MARK) + len(KEY) + 3,  # part of the length
        len(REPORT_MARK) + len(KEY) + 5,  # the header, no payload
        -1,  # all but the last byte
    ],
    ids=["no-length", "part-length", "no-payload", "last-byte"],
)
def test_a_report_cut_short_is_a_problem(chunk: int, cut: int) -> None:
    body = frame(payload(meta()))

    text, reader = read(b"before\n" + body[:cut], chunk)

    assert text == b"before\n"
    assert (reader.payload, reader.problem) == (None, "it was cut short")


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize(
    "header",
    [b"abc\n", b"-5\n", b" 12\n", b"12 \n", b"\n", b"99999999999\n", b"1" * 20],
    ids=["letters", "negative", "space-before", "space-after", "empty", "over-cap", "no-newline"],
)
def test_a_malformed_header_is_a_problem_and_the_rest_is_text(chunk: int, header: bytes) -> None:
    data = REPORT_MARK + KEY.encode() + b" " + header + b"rest\n"

    text, reader = read(data, chunk)

    assert (reader.payload, reader.problem) == (None, "its header is not a length within the cap")
    assert text == header + b"rest\n"


def test_the_largest_report_the_cap_allows_is_read_whole() -> None:
    contents = b"z" * bootstrap.MAX_ARTIFACT_BYTES
    body = payload(meta(artifacts=[["big.bin", len(contents)]]), contents)

    text, reader = read(frame(body), 2**16)

    assert (text, reader.problem, reader.payload) == (b"", None, body)


# --- the report's contents -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (b"", "is not JSON"),
        (b"{not json\n", "is not JSON"),
        (b'["a list"]\n', "is not a JSON object"),
        (payload({"signal": 0}), "is not shaped as a report"),
        (payload(meta(signal=-1)), "non-negative 64-bit integer"),
        (payload(meta(oom_kills=True)), "non-negative 64-bit integer"),
        (payload(meta(peak_memory_bytes=1.5)), "non-negative 64-bit integer"),
        (payload(meta(peak_memory_bytes=2**63)), "non-negative 64-bit integer"),
        (payload(meta(setup_error=5)), "a note that is not text"),
        (payload(meta(result=["x"])), "not text of at most"),
        (payload(meta(result="x" * (MAX_RESULT_FILE_BYTES + 1))), "not text of at most"),
        (payload(meta(artifacts={"a": 1})), "something other than a list"),
        (payload(meta(artifacts=[["a", 5]]), b"abc"), "announces more artifact bytes"),
        (payload(meta(artifacts=[["a", -1]]), b""), "announces more artifact bytes"),
        (payload(meta(artifacts=[["a", 1]]), b"ab"), "holds bytes no artifact claims"),
        (payload(meta(), b"stray"), "holds bytes no artifact claims"),
        (payload(meta(artifacts=[["a", 1, 2]]), b"a"), "is not shaped as a report"),
        (payload(meta(artifacts=[["../etc/passwd", 1]]), b"a"), "not a normalised relative"),
        (payload(meta(artifacts=[["a", 1], ["a", 1]]), b"ab"), "appears twice"),
        (payload(meta(artifacts_skipped=[1])), "skipped files, or not text"),
        (payload(meta(artifacts_skipped=["x"] * (MAX_SKIPPED_LISTED + 1))), "skipped files"),
    ],
)
def test_a_report_that_breaks_a_rule_is_refused_naming_it(body: bytes, rule: str) -> None:
    with pytest.raises(RuleBroken, match=re.escape(rule)):
        _parse_report(body, LIMITS)


def test_notes_are_cut_to_their_caps() -> None:
    parsed = _parse_report(payload(meta(setup_error="e" * 5000, result_error="r" * 5000)), LIMITS)
    assert (len(parsed.setup_error or ""), len(parsed.result_error or "")) == (500, 200)


# --- metric lines ----------------------------------------------------------------------------


class Metrics:
    """A metric reader and what it handed over."""

    def __init__(self) -> None:
        self.values: list[dict[str, Any]] = []
        self.broken: list[str] = []
        self.lines = _MetricLines(self.values.append, self.broken.append)

    def feed(self, data: bytes, chunk: int = 10**9) -> Metrics:
        for i in range(0, len(data), chunk):
            self.lines.feed(data[i : i + chunk])
        return self


def metric(values: Any) -> bytes:
    return METRIC_PREFIX.encode() + json.dumps(values).encode() + b"\n"


@pytest.mark.parametrize("chunk", CHUNKS)
def test_metric_lines_are_handed_over_in_order_and_other_lines_ignored(chunk: int) -> None:
    stdout = (
        b"epoch 1\n"
        + metric({"step": 1, "loss": 0.5})
        + b'  PRISM_METRIC {"indented": true}\n'
        + b"PRISM_METRIC\n"
        + b'PRISM_METRICS {"x": 1}\n'
        + b"PRISM_METR\n"
        + metric({"step": 2, "nested": {"a": [1, None]}})
        + b'PRISM_METRIC {"last": true}'
    )

    found = Metrics().feed(stdout, chunk)
    assert found.values == [{"step": 1, "loss": 0.5}, {"step": 2, "nested": {"a": [1, None]}}]
    found.lines.end()  # a last line without a newline counts too

    assert found.values[-1] == {"last": True}
    assert (found.lines.count, found.broken) == (3, [])


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        (b"PRISM_METRIC not json\n", "metric line 1 is not JSON"),
        (b"PRISM_METRIC [1, 2]\n", "metric line 1 is not a JSON object"),
        (b'PRISM_METRIC {"n": 1e999999999999999999999}\n', None),
        (b'PRISM_METRIC {"n": ' + b"9" * 30 + b"}\n", "outside the 64-bit range"),
        (b"PRISM_METRIC " + b'{"a":' * 17 + b"1" + b"}" * 17 + b"\n", "nested deeper than 16"),
        (b'PRISM_METRIC {"s": "\\udc80"}\n', "not valid Unicode"),
        (b'PRISM_METRIC {"s": "\xff"}\n', "metric line 1 is not UTF-8"),
    ],
    ids=["text", "list", "huge-float", "big-int", "deep", "surrogate", "not-utf8"],
)
def test_a_metric_line_that_breaks_a_rule_breaks_the_trial_once(
    line: bytes, rule: str | None
) -> None:
    found = Metrics().feed(line + line + metric({"after": 1}))
    found.lines.end()

    if rule is None:  # not finite: null, within the rules
        assert found.values == [{"n": None}, {"n": None}, {"after": 1}]
        assert found.broken == []
        return
    assert found.values == []
    assert len(found.broken) == 1 and rule in found.broken[0]


def test_a_metric_line_within_the_cap_is_read_and_one_byte_more_is_not() -> None:
    def line_of(size: int) -> bytes:
        padding = size - len(METRIC_PREFIX) - len('{"p": ""}')
        line = METRIC_PREFIX.encode() + json.dumps({"p": "x" * padding}).encode()
        assert len(line) == size
        return line + b"\n"

    longest = Metrics().feed(line_of(MAX_METRIC_LINE_BYTES), chunk=1000)
    assert (len(longest.values), longest.broken) == (1, [])

    over = Metrics().feed(line_of(MAX_METRIC_LINE_BYTES + 1) + metric({"after": 1}), chunk=1000)
    assert over.values == []
    assert over.broken == [f"metric line 1 is longer than {MAX_METRIC_LINE_BYTES} bytes"]


def test_a_long_line_that_is_no_metric_costs_nothing() -> None:
    found = Metrics().feed(b"x" * (10 * MAX_METRIC_LINE_BYTES) + b"\n" + metric({"a": 1}), 4096)
    assert (found.values, found.broken) == ([{"a": 1}], [])


def test_the_10001st_metric_line_breaks_the_trial() -> None:
    found = Metrics().feed(b"".join(metric({"step": i}) for i in range(MAX_METRICS)))
    assert len(found.values) == MAX_METRICS
    assert found.values[-1] == {"step": MAX_METRICS - 1}
    assert found.broken == []

    found.feed(metric({"step": MAX_METRICS}) + metric({"step": MAX_METRICS + 1}))

    assert len(found.values) == MAX_METRICS
    assert found.broken == [f"more than {MAX_METRICS} metric lines"]


def test_no_metric_is_handed_over_after_close() -> None:
    found = Metrics().feed(metric({"a": 1}))
    found.lines.close()
    found.feed(metric({"b": 2}))
    assert found.values == [{"a": 1}]


def test_a_failing_callback_costs_the_trial_nothing(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[dict[str, Any]] = []
    broken: list[str] = []

    def callback(values: dict[str, Any]) -> None:
        seen.append(values)
        if len(seen) == 1:
            raise RuntimeError("the caller's bug")

    lines = _MetricLines(callback, broken.append)
    with caplog.at_level(logging.ERROR, logger="sandbox.container"):
        lines.feed(metric({"a": 1}) + metric({"b": 2}))

    assert (seen, broken) == ([{"a": 1}, {"b": 2}], [])
    assert any("metric callback failed" in r.getMessage() for r in caplog.records)


# --- the result ----------------------------------------------------------------------------


def report(**fields: Any) -> _Report:
    return _parse_report(payload(meta(**fields)), LIMITS)


def test_the_last_stdout_line_that_is_a_json_object_is_the_result() -> None:
    stdout = bytearray(b'{"first": 1}\nsome text\n{"loss": 0.5, "acc": 1}\n\n  \n')
    assert _trial_result(report(), stdout) == {"loss": 0.5, "acc": 1}


@pytest.mark.parametrize(
    "last",
    [b"done", b"[1, 2]", b"{'python': 'repr'}", b'PRISM_METRIC {"a": 1}', b"\xff{}"],
)
def test_a_last_line_that_is_no_json_object_is_no_result(last: bytes) -> None:
    assert _trial_result(report(), bytearray(b'{"earlier": 1}\n' + last + b"\n")) is None


@pytest.mark.parametrize(
    ("last", "rule"),
    [
        (json.dumps({"s": "x" * MAX_JSON_BYTES}).encode(), "larger than 65536 bytes"),
        (b'{"a": [' + b"1," * 300_000 + b"1]}", "larger than 65536 bytes"),
        (b'{"a":' * 17 + b"1" + b"}" * 17, "nested deeper than 16"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested deeper than 16"),
        (b'{"n": ' + b"9" * 25 + b"}", "outside the 64-bit range"),
    ],
    ids=["long-string", "huge", "deep", "very-deep", "big-int"],
)
def test_a_last_line_that_is_a_json_object_beyond_the_caps_breaks_a_rule(
    last: bytes, rule: str
) -> None:
    with pytest.raises(RuleBroken, match=rule) as broken:
        _trial_result(report(), bytearray(b"text\n" + last + b"\n"))
    assert str(broken.value).startswith("the result (the last line of stdout)")


def test_a_huge_last_line_that_is_not_shaped_as_an_object_is_no_result() -> None:
    assert _trial_result(report(), bytearray(b"{" + b"x" * 10**6)) is None


def test_the_result_file_wins_and_must_be_a_json_object() -> None:
    assert _trial_result(report(result='{"file": 1}'), bytearray(b'{"stdout": 1}\n')) == {"file": 1}
    with pytest.raises(RuleBroken, match=re.escape(f"{RESULT_FILE} is not a JSON object")):
        _trial_result(report(result="[1]"), bytearray(b'{"stdout": 1}\n'))
    with pytest.raises(RuleBroken, match=re.escape(f"{RESULT_FILE} is larger than")):
        _trial_result(report(result=json.dumps({"s": "x" * MAX_JSON_BYTES})), bytearray())
    with pytest.raises(RuleBroken, match=re.escape(f"{RESULT_FILE} is a symlink")):
        _trial_result(report(result_error="is a symlink, not a regular file"), bytearray())


# --- the verdict -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """A sandbox whose client never reaches an engine: the verdict needs none."""
    with closing(
        docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.44")
    ) as client:
        yield Sandbox(client, image="unused", owner="unit")


def verdict(
    sandbox: Sandbox,
    code: int,
    *,
    stop: Outcome | None = None,
    detail: str = "",
    stderr: bytes = b"",
    report: _Report | None = None,
    problem: str | None = None,
    engine_oom: bool = False,
    read_error: Exception | None = None,
) -> tuple[Outcome, str, int]:
    trial = _Trial(2**20, None)
    if stop is not None:
        trial.stop(stop, detail)
    trial.stderr += stderr
    trial.read_error = read_error
    return sandbox._verdict(trial, code, LIMITS, report, problem, engine_oom)


def test_an_exit_with_a_report_is_the_scripts_own(sandbox: Sandbox) -> None:
    assert verdict(sandbox, 0, report=report()) == (Outcome.SUCCEEDED, "exited with code 0", 0)
    outcome, reason, code = verdict(
        sandbox, 3, report=report(), stderr=b"Traceback\n" + b"E" * 300 + b"\n\n"
    )
    assert (outcome, code) == (Outcome.FAILED, 3)
    assert reason == "exited with code 3: " + "E" * 200
    assert verdict(sandbox, 137, report=report())[1] == "exited with code 137 (SIGKILL)"


@pytest.mark.parametrize(
    ("stop", "outcome", "words"),
    [
        (Outcome.TIMED_OUT, Outcome.TIMED_OUT, "60 s wall-clock limit"),
        (Outcome.OUTPUT_LIMIT, Outcome.OUTPUT_LIMIT, f"more than {LIMITS.output_bytes} bytes"),
        (Outcome.CANCELLED, Outcome.CANCELLED, "cancelled"),
        (Outcome.FAILED, Outcome.FAILED, "broke a rule: metric line 3 is not JSON; the trial"),
    ],
)
def test_a_stop_the_host_caused_explains_the_exit_first(
    sandbox: Sandbox, stop: Outcome, outcome: Outcome, words: str
) -> None:
    found = verdict(
        sandbox,
        137,
        stop=stop,
        detail="metric line 3 is not JSON",
        report=report(oom_kills=1),
        engine_oom=True,
        read_error=OSError("gone"),
    )
    assert (found[0], found[2]) == (outcome, -1)
    assert words in found[1]


def test_a_lost_output_stream_is_the_platforms_failure(sandbox: Sandbox) -> None:
    found = verdict(sandbox, 0, report=report(), read_error=OSError("reset"))
    assert found[0] == Outcome.SANDBOX_ERROR


def test_a_setup_error_is_the_platforms_failure(sandbox: Sandbox) -> None:
    outcome, reason, _ = verdict(sandbox, 125, report=report(setup_error="OSError: no space"))
    assert outcome == Outcome.SANDBOX_ERROR
    assert reason.endswith("could not prepare the trial: OSError: no space")


def test_a_bootstrap_that_gave_up_before_the_key_is_the_platforms_failure(
    sandbox: Sandbox,
) -> None:
    # No report (it never read the key: an image of another version, a trial that did not
    # arrive whole): no trial code ran, so the trial is not to blame, and it may be retried.
    stderr = b"prism: could not prepare the trial: ValueError: stdin does not start\n"
    outcome, reason, code = verdict(sandbox, bootstrap.SETUP_FAILED, stderr=stderr)
    assert (outcome, code) == (Outcome.SANDBOX_ERROR, -1)
    assert reason.startswith("the sandbox could not prepare the trial: exited with code 125")
    assert "stdin does not start" in reason


def test_the_kernels_oom_kills_are_counted(sandbox: Sandbox) -> None:
    outcome, reason, code = verdict(sandbox, 1, report=report(oom_kills=2))
    assert (outcome, code) == (Outcome.OOM_KILLED, 1)
    assert reason.startswith("2 processes killed by the kernel: out of memory")
    assert reason.endswith("; the script then exited with code 1")
    outcome, reason, code = verdict(sandbox, 137, report=report(signal=9), engine_oom=True)
    assert (outcome, code) == (Outcome.OOM_KILLED, -1)
    assert reason.startswith("1 process killed by the kernel")
    assert verdict(sandbox, 137, engine_oom=True)[0] == Outcome.OOM_KILLED


@pytest.mark.parametrize("problem", ["it was cut short", "is not JSON"])
def test_a_spoilt_report_fails_the_trial_naming_the_problem(sandbox: Sandbox, problem: str) -> None:
    outcome, reason, code = verdict(sandbox, 0, problem=problem)
    assert (outcome, code) == (Outcome.FAILED, 0)
    assert reason.startswith("exited with code 0; ") and reason.endswith(problem)


def test_no_report_at_all(sandbox: Sandbox) -> None:
    outcome, reason, code = verdict(sandbox, 0)
    assert (outcome, code) == (Outcome.SANDBOX_ERROR, -1)
    assert "without a report" in reason
    outcome, reason, code = verdict(sandbox, 2, stderr=b"boom\n")
    assert (outcome, code) == (Outcome.FAILED, 2)
    assert reason == "exited with code 2: boom (the sandbox's bootstrap did not report)"


def test_exit_reasons_name_the_signal_and_the_last_stderr_line() -> None:
    assert _exit_reason(0, b"noise\n") == "exited with code 0"
    assert _exit_reason(143, b"") == "exited with code 143 (SIGTERM)"
    assert _exit_reason(200, b"") == "exited with code 200"
    assert _exit_reason(1, b"first\n\xff last \n\n") == "exited with code 1: \ufffd last"


# --- the engine's stream, end to end in-process ----------------------------------------------


def multiplexed(*frames: tuple[int, bytes]) -> io.BytesIO:
    """The engine's attach stream: 8-byte headers (stream, length) before each frame."""
    return io.BytesIO(
        b"".join(struct.pack(">BxxxL", kind, len(data)) + data for kind, data in frames)
    )


def test_the_drained_stream_keeps_output_and_takes_the_report_apart() -> None:
    seen: list[dict[str, Any]] = []
    trial = _Trial(1000, seen.append)
    body = payload(meta(result='{"r": 1}', artifacts=[["a", 3000]]), b"a" * 3000)
    report_bytes = frame(body, key=trial.report_key)
    stdout = b"hello\n" + metric({"step": 1})

    trial.drain(
        multiplexed(
            (1, stdout[:9]),
            (2, b"warning\n" + report_bytes[:20]),
            (1, stdout[9:]),
            (2, report_bytes[20:] + b"after\n"),
        )
    )

    assert (bytes(trial.stdout), bytes(trial.stderr)) == (stdout, b"warning\nafter\n")
    assert seen == [{"step": 1}]
    # The report is no output: a 3 KB one within a 1000-byte limit cuts nothing.
    assert (trial.truncated, trial.stop_reason, trial.read_error) == (False, None, None)
    assert trial.report.payload == body
    assert trial.wake.is_set()


def test_output_beyond_the_limit_is_cut_and_stops_the_trial() -> None:
    trial = _Trial(10, None)

    trial.drain(multiplexed((1, b"0123456"), (2, b"abcdefgh"), (1, b"more")))

    assert (bytes(trial.stdout), bytes(trial.stderr)) == (b"0123456", b"abc")
    assert (trial.truncated, trial.stop_reason) == (True, Outcome.OUTPUT_LIMIT)


def test_a_broken_metric_line_stops_the_trial_with_the_rule() -> None:
    trial = _Trial(2**20, None)

    trial.drain(multiplexed((1, b"PRISM_METRIC [1]\n")))

    assert trial.stop_reason == Outcome.FAILED
    assert trial.stop_detail == "metric line 1 is not a JSON object"
