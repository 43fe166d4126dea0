"""Floods, end to end: metric lines by the ten thousand, from many processes at once,
output on both streams, one endless line, many files, output that grows when shown.

Each flood must end with a bounded outcome (the caps of the trial contract), keep
what the contract says it keeps, and leave its sweep answering on every route; the
runner's stream must stay up and an ordinary sweep created right after the floods on
the same runner must complete (how long it took is printed, not asserted: timing
ratios belong to bench/). Every flood is its own sweep, all created at once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest

from orchestrator_svc import views
from tests.hostile import (
    Attack,
    Batch,
    MiB,
    assert_readable,
    assert_survived,
    get,
    metric_values,
    module_batch,
    watch,
)

METRICS = """
import json, os, sys
n = json.loads(os.environ["PRISM_PARAMS"]).get("n", 10000)
write = sys.stdout.write
for i in range(n):
    write('PRISM_METRIC {"i": %d}\\n' % i)
sys.stdout.flush()
print(json.dumps({"printed": n}))
"""

# The most metric bytes a trial may print: 240 lines of 64 KiB of small numbers, each
# five times as large once it is a Struct in the watch.
HEAVY_METRICS = """
import json
line = "PRISM_METRIC " + json.dumps({"z": [0] * 32000}, separators=(",", ":"))
for _ in range(240):
    print(line, flush=True)
"""

# Eight processes print metric lines as fast as they can, each line one write.
MANY_PROCESSES = """
import os, time
for k in range(8):
    if os.fork() == 0:
        i = 0
        while True:
            os.write(1, b'PRISM_METRIC {"k": %d, "i": %d}\\n' % (k, i))
            i += 1
time.sleep(30)
print("reached")
"""

BOTH_STREAMS = """
import os
if os.fork() == 0:
    while True:
        os.write(2, b"e" * 4096)
while True:
    os.write(1, b"o" * 4096)
"""

HUGE_LINE = """
import sys
sys.stdout.write(PREFIX + "x" * 2**20)
"""

ENDLESS_LINE = """
import os
while True:
    os.write(1, b"x" * 65536)
"""

MANY_SMALL_FILES = """
import os
os.chdir("/workspace/output")
for i in range(5000):
    with open(f"s{i:04d}", "wb") as f:
        f.write(b"%04d" % i * 256)
"""

# Bytes that are not UTF-8: each becomes U+FFFD, three bytes, wherever it is shown.
INVALID_UTF8 = """
import sys
sys.stdout.buffer.write(b"\\xff" * (16 * 2**20 - 16))
"""

ASCII_16_MIB = """
import sys
line = "o" * 1023 + "\\n"
for _ in range(16 * 1024 - 1):
    sys.stdout.write(line)
"""

ATTACKS = {
    "ten_thousand_metrics": Attack(METRICS, {"outputKb": 1024}),
    "one_metric_too_many": Attack(METRICS, {"outputKb": 1024}, ({"n": 10001},)),
    "metrics_from_many_processes": Attack(MANY_PROCESSES, {"outputKb": 4096, "wallSeconds": 60}),
    "concurrent_metric_floods": Attack(
        METRICS, {"outputKb": 1024}, tuple({"t": t} for t in range(6))
    ),
    "heavy_metric_lines": Attack(HEAVY_METRICS, {"outputKb": 16384}),
    "both_streams": Attack(BOTH_STREAMS, {"outputKb": 256, "wallSeconds": 60}),
    "one_huge_line": Attack(HUGE_LINE.replace("PREFIX", "''"), {"outputKb": 2048}),
    "one_huge_metric_line": Attack(
        HUGE_LINE.replace("PREFIX", "'PRISM_METRIC '"), {"outputKb": 2048}
    ),
    "endless_line": Attack(ENDLESS_LINE, {"outputKb": 1024, "wallSeconds": 60}),
    "many_small_files": Attack(MANY_SMALL_FILES),
    "invalid_utf8_16_mib": Attack(INVALID_UTF8, {"outputKb": 16384, "memoryMb": 512}),
    "three_times_16_mib": Attack(
        ASCII_16_MIB, {"outputKb": 16384, "memoryMb": 512}, tuple({"t": t} for t in range(3))
    ),
}
# Sweeps whose output, as shown, is at the 16 MiB cap.
OVERSIZED = ("invalid_utf8_16_mib", "three_times_16_mib")


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, sandbox_image: str) -> Iterator[Batch]:
    yield from module_batch(tmp_path_factory.mktemp("floods"), sandbox_image, ATTACKS, slots=16)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_the_sweep_answers_on_every_route(batch: Batch, name: str) -> None:
    assert_readable(batch.stack, batch.sweeps[name])


def test_ten_thousand_metric_lines_are_all_recorded_in_order(batch: Batch) -> None:
    trial = batch.trial("ten_thousand_metrics")
    assert (trial["outcome"], trial["metrics"]) == ("succeeded", {"printed": 10000})
    values = metric_values(watch(batch.stack, batch.sweeps["ten_thousand_metrics"]["id"]))
    assert values == [{"i": i} for i in range(10000)]


def test_one_metric_line_past_the_cap_stops_the_trial(batch: Batch) -> None:
    trial = batch.trial("one_metric_too_many")
    assert (trial["outcome"], trial["reason"]) == (
        "failed",
        "broke a rule: more than 10000 metric lines; the trial was stopped",
    )
    values = metric_values(watch(batch.stack, batch.sweeps["one_metric_too_many"]["id"]))
    assert values == [{"i": i} for i in range(10000)]


def test_metric_lines_from_many_processes_stop_at_the_cap(batch: Batch) -> None:
    trial = batch.trial("metrics_from_many_processes")
    assert (trial["outcome"], trial["reason"]) == (
        "failed",
        "broke a rule: more than 10000 metric lines; the trial was stopped",
    )
    assert "reached" not in batch.logs("metrics_from_many_processes")["stdout"]
    values = metric_values(watch(batch.stack, batch.sweeps["metrics_from_many_processes"]["id"]))
    assert len(values) == 10000
    # Each process's lines arrive whole and in its own order.
    for k in range(8):
        mine = [v["i"] for v in values if v["k"] == k]
        assert mine == list(range(len(mine)))


def test_concurrent_metric_floods_lose_nothing(batch: Batch) -> None:
    sweep = batch.sweeps["concurrent_metric_floods"]
    assert [t["outcome"] for t in sweep["trials"]] == ["succeeded"] * 6
    events = watch(batch.stack, sweep["id"])
    per_trial = Counter(e["trialIndex"] for e in events if e["kind"] == "metric")
    assert per_trial == dict.fromkeys(range(6), 10000)
    # The ordinary sweep that ran beside them kept every metric too.
    assert metric_values(watch(batch.stack, batch.bystander["id"])) == [
        {"step": s} for s in range(3)
    ]
    seconds = batch.bystander_seconds
    print(f"an ordinary 1-trial sweep beside 90,000 metric lines: {seconds:.1f} s")


def test_the_heaviest_metric_lines_are_all_recorded(batch: Batch) -> None:
    assert batch.trial("heavy_metric_lines")["outcome"] == "succeeded"
    values = metric_values(watch(batch.stack, batch.sweeps["heavy_metric_lines"]["id"]))
    assert values == [{"z": [0] * 32000}] * 240


def test_a_flood_on_both_streams_keeps_the_output_limit(batch: Batch) -> None:
    trial = batch.trial("both_streams")
    assert trial["outcome"] == "output_limit", trial
    logs = batch.logs("both_streams")
    assert logs["truncated"] is True
    kept = len(logs["stdout"].encode()) + len(logs["stderr"].encode())
    assert 256 * 1024 - 8192 < kept <= 256 * 1024


def test_one_huge_line_is_output_not_a_result(batch: Batch) -> None:
    trial = batch.trial("one_huge_line")
    assert (trial["outcome"], trial.get("metrics")) == ("succeeded", None), trial
    assert batch.logs("one_huge_line")["stdout"] == "x" * MiB


def test_one_huge_metric_line_breaks_the_line_cap(batch: Batch) -> None:
    trial = batch.trial("one_huge_metric_line")
    assert trial["outcome"] == "failed", trial
    assert "metric line 1 is longer than 65536 bytes" in trial["reason"]


def test_an_endless_line_is_cut_at_the_output_limit(batch: Batch) -> None:
    trial = batch.trial("endless_line")
    assert trial["outcome"] == "output_limit", trial
    assert len(batch.logs("endless_line")["stdout"]) == MiB


def test_many_small_files_give_the_first_thirty_two(batch: Batch) -> None:
    listed = batch.artifacts("many_small_files")
    assert [a["name"] for a in listed["artifacts"]] == [f"s{i:04d}" for i in range(32)]
    assert listed["skipped"][-1] == f"... and {5000 - 32 - 63} more"


def test_output_that_grows_when_shown_leaves_the_rest_readable(batch: Batch) -> None:
    for name in OVERSIZED:
        sweep = batch.sweeps[name]
        assert {t["outcome"] for t in sweep["trials"]} == {"succeeded"}
        reply = batch.stack.http("GET", f"/v1/sweeps/{sweep['id']}")
        assert reply.status == 200, reply.body
        assert watch(batch.stack, sweep["id"])[-1]["kind"] == "sweep_finished"
        assert batch.artifacts(name)["artifacts"] == []
    for index in range(3):
        logs = batch.logs("three_times_16_mib", index)
        assert len(logs["stdout"]) == 16 * MiB - 1024


def test_the_logs_of_invalid_utf8_output_answer_within_the_cap(batch: Batch) -> None:
    # Each byte that is not UTF-8 is kept as U+FFFD, three bytes (cut at 16 MiB of it),
    # and shown as much of it as the logs' budget holds should a printer escape it.
    logs = batch.logs("invalid_utf8_16_mib")
    assert logs["truncated"] is True
    assert set(logs["stdout"]) == {"\ufffd"}
    assert views.LOGS_BUDGET_BYTES - 6 < len(json.dumps(logs["stdout"])) <= views.LOGS_BUDGET_BYTES


@pytest.mark.parametrize("name", OVERSIZED)
def test_the_compatible_status_route_answers_for_large_output(batch: Batch, name: str) -> None:
    code, body = get(batch.stack, f"/sweeps/{batch.sweeps[name]['id']}")
    assert code == 200, body[:300]


def test_the_runner_stream_and_the_services_survive(batch: Batch) -> None:
    assert_survived(batch)
