"""The sandbox against the real Docker engine: what a trial can and cannot do.

Every container made here carries an owner label unique to this module's run; the
finalizer removes exactly those, and each test checks that none was left behind.
Isolation is shown from inside the sandbox (interfaces, a failed name lookup),
never by aiming a connection at an outside address.
"""

import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

import prism.trial
import sandbox
from prism.trial import Outcome, RuleBroken, TrialResult
from sandbox import (
    MAX_ARTIFACT_BYTES,
    MAX_ARTIFACT_FILES,
    MAX_METRICS,
    MAX_RESULT_BYTES,
    Limits,
    Sandbox,
    bootstrap,
    prism_trial,
)
from sandbox.container import (
    BOOTSTRAP_BYTES,
    OWNER_LABEL,
    _parse_report,
    _ReportReader,
    container_name,
)
from sandbox.engine import ensure_engine, stop_engine
from tests.conftest import wait_until

MiB = 2**20
SMALL = Limits(wall_seconds=20, memory_bytes=64 * MiB, workspace_bytes=8 * MiB, output_bytes=MiB)


pytestmark = pytest.mark.usefixtures("nothing_left_behind")


def run(
    box: Sandbox,
    script: str,
    limits: Limits = SMALL,
    params: str = "{}",
    on_metric: Callable[[dict[str, Any]], None] | None = None,
) -> TrialResult:
    execution = box.run(f"t-{secrets.token_hex(4)}", script, params, limits, on_metric=on_metric)
    assert isinstance(execution.outcome, Outcome)
    return execution


def pairs(execution: TrialResult) -> tuple[tuple[str, bytes], ...]:
    return tuple((a.name, a.data) for a in execution.artifacts)


def test_script_output_and_params_reach_the_trial(box: Sandbox) -> None:
    script = """
import json, os
print(json.dumps({
    "env": json.loads(os.environ["PRISM_PARAMS"]),
    "file": json.load(open("/workspace/params.json")),
    "cwd": os.getcwd(),
    "script_in_env": "PRISM_SCRIPT" in os.environ,
    "report_key_in_env": "PRISM_REPORT_KEY" in os.environ,
    "output_dir": os.path.isdir("/workspace/output"),
}))
"""
    params = {"lr": 0.1, "name": "ünïcode"}
    execution = run(box, script, params=json.dumps(params))

    assert (execution.outcome, execution.exit_code) == ("succeeded", 0)
    assert json.loads(execution.stdout) == {
        "env": params,
        "file": params,
        "cwd": "/workspace",
        "script_in_env": False,
        "report_key_in_env": False,
        "output_dir": True,
    }
    assert execution.stderr == ""
    assert not execution.output_truncated
    assert 0 < execution.duration_seconds < 10
    # The printed line is the trial's result too: the last stdout line, a JSON object.
    assert execution.result == json.loads(execution.stdout)


def test_no_network_but_loopback(box: Sandbox) -> None:
    script = """
import os, socket
print(sorted(os.listdir("/sys/class/net")))
print(sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:]))
try:
    socket.getaddrinfo("example.com", 443)
    print("resolved")
except socket.gaierror:
    print("lookup failed")
"""
    execution = run(box, script)

    assert execution.outcome == "succeeded", execution
    assert execution.stdout.splitlines() == ["['lo']", "['lo']", "lookup failed"]


def test_read_only_root_unprivileged_user_no_capabilities(box: Sandbox) -> None:
    script = """
import json, os
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
writes = {}
for path in ("/etc/prism-probe", "/opt/prism/probe"):
    try:
        open(path, "w").close()
        writes[path] = "written"
    except OSError as error:
        writes[path] = error.errno
print(json.dumps({
    "root_read_only": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
    "ids": [os.getuid(), os.geteuid(), os.getgid()],
    "caps": [int(status[k], 16) for k in ("CapEff", "CapPrm", "CapBnd")],
    "no_new_privs": status["NoNewPrivs"].strip(),
    "writes": writes,
}))
"""
    execution = run(box, script)

    assert execution.outcome == "succeeded", execution
    seen = json.loads(execution.stdout)
    assert seen["root_read_only"] is True
    assert seen["ids"] == [65534, 65534, 65534]
    assert seen["caps"] == [0, 0, 0]
    assert seen["no_new_privs"] == "1"
    assert set(seen["writes"].values()) <= {30, 13}  # EROFS, EACCES: never "written"


def test_workspace_is_writable_and_capped(box: Sandbox) -> None:
    # Files of 1 MiB each, so the file size ulimit cannot be what stops the writes.
    script = """
import errno
written = 0
try:
    for i in range(32):
        with open(f"part{i}", "wb") as f:
            f.write(b"x" * 2**20)
        written += 1
except OSError as error:
    print(written, errno.errorcode[error.errno])
"""
    execution = run(box, script)  # an 8 MiB workspace

    assert execution.outcome == "succeeded", execution
    written, error = execution.stdout.split()
    assert 4 <= int(written) < 8
    assert error == "ENOSPC"


@pytest.mark.parametrize(
    "script",
    ["import time\nprint('started')\ntime.sleep(1000)", "print('started')\nwhile True: pass"],
    ids=["sleep", "busy"],
)
def test_wall_clock_limit_kills(box: Sandbox, script: str) -> None:
    began = time.monotonic()
    # 4 s: on a loaded machine the interpreter may take a while to print at all.
    execution = run(box, script, Limits(wall_seconds=4))

    assert (execution.outcome, execution.exit_code) == ("timed_out", -1)
    assert time.monotonic() - began < 15
    assert execution.stdout == "started\n"  # output printed before the kill is kept


def test_output_flood_is_cut_and_killed(box: Sandbox) -> None:
    cap = 64 * 1024
    script = "import sys\nwhile True:\n    print('x' * 999)\n    print('e' * 99, file=sys.stderr)"
    began = time.monotonic()
    execution = run(box, script, Limits(wall_seconds=20, output_bytes=cap))

    assert (execution.outcome, execution.exit_code) == ("output_limit", -1)
    assert execution.output_truncated
    kept = len(execution.stdout.encode()) + len(execution.stderr.encode())
    assert cap - 1000 < kept <= cap
    assert time.monotonic() - began < 10


def test_memory_bomb_is_oom_killed(box: Sandbox) -> None:
    script = "hoard = []\nwhile True:\n    hoard.append(b'x' * (8 * 2**20))"
    execution = run(box, script, Limits(wall_seconds=20, memory_bytes=64 * 2**20))

    assert (execution.outcome, execution.exit_code) == ("oom_killed", -1)


def test_process_limit_holds(box: Sandbox) -> None:
    script = """
import os, time
children = []
try:
    for _ in range(100):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
except OSError as error:
    print(len(children), error.errno)
"""
    execution = run(box, script, Limits(wall_seconds=20, processes=16))

    assert execution.outcome == "succeeded", execution
    forked, errno = map(int, execution.stdout.split())
    assert forked < 16
    assert errno == 11  # EAGAIN


def test_fork_bomb_is_contained(box: Sandbox) -> None:
    script = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    )
    began = time.monotonic()
    execution = run(box, script, Limits(wall_seconds=3, processes=32))

    assert execution.outcome == "timed_out"
    assert time.monotonic() - began < 15


@pytest.mark.parametrize(
    ("script", "exit_code", "last_line"),
    [
        ("def f():\n    raise ValueError('boom')\nf()", 1, "ValueError: boom"),
        ("import sys\nsys.exit(3)", 3, None),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)", 143, None),
    ],
    ids=["exception", "exit", "signal"],
)
def test_failure_reports_code_and_traceback(
    box: Sandbox, script: str, exit_code: int, last_line: str | None
) -> None:
    execution = run(box, script)

    assert (execution.outcome, execution.exit_code) == ("failed", exit_code)
    assert execution.reason.startswith(f"exited with code {exit_code}")
    if exit_code > 128:
        assert "(SIGTERM)" in execution.reason
    if last_line is not None:
        assert "Traceback (most recent call last)" in execution.stderr
        assert 'File "/workspace/trial.py", line 2, in f' in execution.stderr
        assert execution.reason.endswith(last_line)


def test_cancel_kills_a_running_trial(
    box: Sandbox, docker_client: docker.DockerClient, owner: str
) -> None:
    trial_id = f"cancel-{secrets.token_hex(4)}"
    results: list[TrialResult] = []
    worker = threading.Thread(
        target=lambda: results.append(box.run(trial_id, "import time\ntime.sleep(60)", "{}", SMALL))
    )
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while not docker_client.api.containers(
            filters={"name": container_name(owner, trial_id), "status": "running"}
        ):
            assert time.monotonic() < deadline, "the trial's container never ran"
            time.sleep(0.05)
        cancelled_at = time.monotonic()
        assert box.cancel(trial_id)
    finally:
        worker.join(30)

    assert [(r.outcome, r.exit_code) for r in results] == [("cancelled", -1)]
    assert time.monotonic() - cancelled_at < 5
    assert not box.cancel(trial_id)  # no longer running


def test_concurrent_runs_keep_their_own_output(box: Sandbox) -> None:
    results: dict[int, TrialResult] = {}

    def one(i: int) -> None:
        results[i] = box.run(f"many-{secrets.token_hex(4)}-{i}", f"print({i})", "{}", SMALL)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)

    assert {i: (e.outcome, e.stdout) for i, e in results.items()} == {
        i: ("succeeded", f"{i}\n") for i in range(4)
    }


# The trial contract: result, metrics, artifacts, peak memory, stragglers.


def test_contract_constants_agree_inside_and_outside_the_image() -> None:
    assert sandbox.RESULT_FILE == bootstrap.RESULT_FILE == prism_trial.RESULT_FILE
    assert sandbox.OUTPUT_DIR == "/workspace/output"
    assert sandbox.METRIC_PREFIX == "PRISM_METRIC "
    assert MAX_RESULT_BYTES == bootstrap.MAX_RESULT_BYTES == prism_trial.MAX_RESULT_BYTES
    assert MAX_RESULT_BYTES == prism.trial.MAX_JSON_BYTES
    assert bootstrap.MAX_RESULT_FILE_BYTES == prism.trial.MAX_LOOSE_FACTOR * MAX_RESULT_BYTES
    assert prism_trial.MAX_METRIC_LINE_BYTES == prism.trial.MAX_JSON_BYTES
    # The bootstrap is shipped alone, so it repeats the caps prism.trial checks again.
    for name in ("MAX_ARTIFACT_FILES", "MAX_ARTIFACT_BYTES", "MAX_NAME_PART_BYTES"):
        assert getattr(bootstrap, name) == getattr(prism.trial, name), name
    assert bootstrap.MAX_NAME_BYTES == prism.trial.MAX_NAME_BYTES
    assert bootstrap.MAX_SKIPPED_LISTED == prism.trial.MAX_SKIPPED
    assert bootstrap.MAX_SKIPPED_CHARS == prism.trial.MAX_SKIPPED_CHARS
    assert bootstrap._CONTROL.pattern == prism.trial._CONTROL.pattern
    assert prism_trial.MAX_DEPTH == prism.trial.MAX_JSON_DEPTH
    assert (MAX_ARTIFACT_FILES, MAX_ARTIFACT_BYTES, MAX_METRICS) == (32, 4 * MiB, 10_000)


def test_result_file_beats_the_last_stdout_line(box: Sandbox) -> None:
    script = """
import json
json.dump({"from": "file", "loss": 0.25}, open("/workspace/result.json", "w"))
print(json.dumps({"from": "stdout"}))
"""
    execution = run(box, script)

    assert execution.outcome == "succeeded", execution
    assert execution.result == {"from": "file", "loss": 0.25}


@pytest.mark.parametrize(
    ("script", "result"),
    [
        ("print('log line')\nprint('{\"loss\": 0.5}')\nprint()\nprint('   ')", {"loss": 0.5}),
        (
            'print(\'{"loss": NaN, "best": Infinity, "tiny": 1e999}\')',
            {"loss": None, "best": None, "tiny": None},
        ),
        ("print('{\"loss\": 0.5}')\nprint('done')", None),
        ("print('[1, 2]')", None),
        ("print('{\"loss\": 0.5')", None),
        ("print({'loss': 0.5})", None),
        ("print('PRISM_METRIC {\"loss\": 0.5}')", None),
        ("pass", None),
    ],
    ids=[
        "last-line",
        "nan",
        "last-line-not-json",
        "not-an-object",
        "broken-json",
        "python-repr",
        "metric-line",
        "nothing",
    ],
)
def test_result_falls_back_to_the_last_stdout_line(
    box: Sandbox, script: str, result: dict[str, Any] | None
) -> None:
    execution = run(box, script, Limits(wall_seconds=20, output_bytes=4 * MAX_RESULT_BYTES))

    assert execution.outcome == "succeeded", execution
    assert execution.result == result
    assert "prism:" not in execution.stderr


DEEP = '{"a":' * 17 + "1" + "}" * 17


@pytest.mark.parametrize(
    ("script", "rule"),
    [
        (
            "open('/workspace/result.json', 'w').write('[1, 2]')\nprint('{\"loss\": 0.5}')",
            "/workspace/result.json is not a JSON object",
        ),
        (
            "open('/workspace/result.json', 'w').write('{broken')",
            "/workspace/result.json is not JSON",
        ),
        (
            "open('/workspace/result.json', 'w')"
            f".write('{{\"x\": \"' + 'y' * {MAX_RESULT_BYTES} + '\"}}')",
            f"/workspace/result.json is larger than {MAX_RESULT_BYTES} bytes",
        ),
        (
            "open('/workspace/result.json', 'wb').write(b'{\"x\": \"\\xff\"}')",
            "/workspace/result.json is not UTF-8",
        ),
        (
            "import os\nos.symlink('/etc/passwd', '/workspace/result.json')",
            "/workspace/result.json is a symlink, not a regular file",
        ),
        (
            f"print('{DEEP}')",
            "the result (the last line of stdout) is nested deeper than 16 levels",
        ),
        (
            "print('{\"a\": ' + '9' * 401 + '}')",
            "the result (the last line of stdout) holds an integer outside the 64-bit range",
        ),
        (
            "print('{\"a\": -9223372036854775809}')",
            "the result (the last line of stdout) holds an integer outside the 64-bit range",
        ),
        (
            "print('{\"\\\\ud800\": 1}')",
            "the result (the last line of stdout) holds a string that is not valid Unicode",
        ),
        (
            f"print('{{\"x\": \"' + 'y' * {MAX_RESULT_BYTES} + '\"}}')",
            f"the result (the last line of stdout) is larger than {MAX_RESULT_BYTES} bytes",
        ),
    ],
    ids=[
        "file-not-an-object",
        "file-not-json",
        "file-too-large",
        "file-not-utf8",
        "file-a-symlink",
        "line-too-deep",
        "line-huge-int",
        "line-below-int64",
        "line-lone-surrogate",
        "line-too-large",
    ],
)
def test_a_result_that_breaks_a_rule_fails_the_trial_naming_it(
    box: Sandbox, script: str, rule: str
) -> None:
    execution = run(box, script, Limits(wall_seconds=20, output_bytes=4 * MAX_RESULT_BYTES))

    assert (execution.outcome, execution.result) == ("failed", None), execution
    assert execution.reason == f"broke a rule: {rule}"


def test_integers_at_the_64_bit_edges_are_results(box: Sandbox) -> None:
    script = 'print(\'{"low": -9223372036854775808, "high": 9223372036854775807}\')'
    execution = run(box, script)

    assert execution.result == {"low": -(2**63), "high": 2**63 - 1}, execution


def test_a_failed_trial_keeps_its_own_reason_and_learns_the_rule_on_stderr(box: Sandbox) -> None:
    script = """
open("/workspace/result.json", "w").write("not json")
print('{"partial": true}')
raise SystemExit("gave up")
"""
    execution = run(box, script)

    assert (execution.outcome, execution.exit_code) == ("failed", 1)
    assert execution.reason == "exited with code 1: gave up"
    assert execution.result is None
    assert execution.stderr == "gave up\nprism: /workspace/result.json is not JSON\n"


def test_helper_module_reads_params_and_writes_metrics_and_result(box: Sandbox) -> None:
    script = """
import prism_trial, time
params = prism_trial.params()
for step in range(3):
    prism_trial.report(step=step, loss=params["lr"] * step)
prism_trial.report({"val/loss": float("nan")})
time.sleep(1.5)
prism_trial.result(lr=params["lr"], done=True)
"""
    seen: list[tuple[float, dict[str, Any]]] = []
    began = time.monotonic()
    execution = run(
        box,
        script,
        params=json.dumps({"lr": 0.5}),
        on_metric=lambda v: seen.append((time.monotonic(), v)),
    )
    ended = time.monotonic()

    assert execution.outcome == "succeeded", execution
    assert [values for _, values in seen] == [
        {"step": 0, "loss": 0.0},
        {"step": 1, "loss": 0.5},
        {"step": 2, "loss": 1.0},
        {"val/loss": None},
    ]
    # Reported while the trial ran, not after it ended.
    assert began < seen[0][0] < ended - 1.0
    assert execution.result == {"lr": 0.5, "done": True}
    # Metric lines stay in stdout.
    assert execution.stdout.splitlines()[0] == 'PRISM_METRIC {"step":0,"loss":0.0}'
    assert len(execution.stdout.splitlines()) == 4


def test_metric_lines_are_exact(box: Sandbox) -> None:
    script = r"""
import sys
print("PRISM_METRIC {\"a\": 1}")
print("PRISM_METRIC  {\"b\": 2}\r")
print(" PRISM_METRIC {\"no\": 1}")
print("PRISM_METRIC{\"no\": 2}")
print("prism_metric {\"no\": 3}")
print("PRISM_METRIC {\"c\": 3}", file=sys.stderr)
sys.stdout.write("PRISM_METRIC {\"d\":")
sys.stdout.flush()
sys.stdout.write(" 4}\nordinary output\n")
print("PRISM_METRIC {\"e\": " + "[" * 15 + "]" * 15 + "}")
sys.stdout.write("PRISM_METRIC {\"last\": true}")
"""
    seen: list[dict[str, Any]] = []
    execution = run(box, script, on_metric=seen.append)

    assert execution.outcome == "succeeded", execution
    assert seen == [
        {"a": 1},
        {"b": 2},
        {"d": 4},
        {"e": json.loads("[" * 15 + "]" * 15)},
        {"last": True},
    ]


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("'PRISM_METRIC not json'", "metric line 2 is not JSON"),
        ("'PRISM_METRIC [1, 2]'", "metric line 2 is not a JSON object"),
        (
            "'PRISM_METRIC ' + '{\"a\":' * 17 + '1' + '}' * 17",
            "metric line 2 is nested deeper than 16 levels",
        ),
        (
            "'PRISM_METRIC ' + '{\"a\":' * 2000 + '1' + '}' * 2000",
            "metric line 2 is nested deeper than 16 levels",
        ),
        (
            "'PRISM_METRIC {\"a\": ' + '9' * 401 + '}'",
            "metric line 2 holds an integer outside the 64-bit range",
        ),
        (
            "'PRISM_METRIC {\"big\": \"' + 'x' * 70000 + '\"}'",
            "metric line 2 is longer than 65536 bytes",
        ),
        (
            "'PRISM_METRIC {\"\\\\udfff\": 1}'",
            "metric line 2 holds a string that is not valid Unicode",
        ),
        (
            "b'PRISM_METRIC {\"a\": \"\\xff\"}'.decode('utf-8', 'surrogateescape')",
            "metric line 2 is not UTF-8",
        ),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "too-deep",
        "too-deep-for-the-parser",
        "huge-int",
        "too-long",
        "lone-surrogate",
        "not-utf8",
    ],
)
def test_a_metric_line_that_breaks_a_rule_stops_the_trial_at_once(
    box: Sandbox, line: str, rule: str
) -> None:
    script = f"""
import sys, time
print('PRISM_METRIC {{"ok": 1}}', flush=True)
sys.stdout.buffer.write(({line}).encode('utf-8', 'surrogateescape') + b"\\n")
sys.stdout.flush()
print('PRISM_METRIC {{"after": 1}}', flush=True)
time.sleep(30)
"""
    seen: list[dict[str, Any]] = []
    began = time.monotonic()
    execution = run(box, script, Limits(wall_seconds=40), on_metric=seen.append)

    assert (execution.outcome, execution.exit_code) == ("failed", -1), execution
    assert execution.reason == f"broke a rule: {rule}; the trial was stopped"
    assert seen == [{"ok": 1}]
    assert time.monotonic() - began < 20  # stopped at once, not at its wall limit


def test_metrics_are_capped_per_trial(box: Sandbox) -> None:
    script = f"""
for i in range({MAX_METRICS + 50}):
    print('PRISM_METRIC {{"i": %d}}' % i)
print("done")
"""
    seen: list[dict[str, Any]] = []
    execution = run(
        box, script, Limits(wall_seconds=30, output_bytes=4 * MiB), on_metric=seen.append
    )

    assert (execution.outcome, execution.reason) == (
        "failed",
        f"broke a rule: more than {MAX_METRICS} metric lines; the trial was stopped",
    )
    assert len(seen) == MAX_METRICS
    assert seen[-1] == {"i": MAX_METRICS - 1}


def test_a_failing_metric_callback_costs_nothing(box: Sandbox) -> None:
    def broken(values: dict[str, Any]) -> None:
        raise RuntimeError("the caller's bug")

    execution = run(box, "print('PRISM_METRIC {\"a\": 1}')\nprint('after')", on_metric=broken)

    assert (execution.outcome, execution.stdout) == (
        "succeeded",
        'PRISM_METRIC {"a": 1}\nafter\n',
    )


def test_output_files_become_artifacts(box: Sandbox) -> None:
    script = """
import os
os.chdir("/workspace/output")
os.makedirs("plots/deep", exist_ok=True)
open("metrics.csv", "w").write("step,loss\\n1,0.5\\n")
open("plots/loss.png", "wb").write(bytes(range(256)))
open("plots/deep/empty.txt", "w").close()
os.symlink("/etc/passwd", "passwd")
os.symlink("plots", "plots-link")
os.mkfifo("pipe")
open("/workspace/not-output.txt", "w").write("ignored")
"""
    execution = run(box, script)

    assert execution.outcome == "succeeded", execution
    assert pairs(execution) == (
        ("metrics.csv", b"step,loss\n1,0.5\n"),
        ("plots/deep/empty.txt", b""),
        ("plots/loss.png", bytes(range(256))),
    )
    assert execution.artifacts_skipped == (
        "passwd: a symlink, not a regular file",
        "pipe: a fifo, not a regular file",
        "plots-link: a symlink, not a regular file",
    )


def test_artifacts_are_capped_in_count_and_size(box: Sandbox) -> None:
    script = f"""
import os
os.chdir("/workspace/output")
os.makedirs("many")
for i in range({MAX_ARTIFACT_FILES + 3}):
    open(f"many/{{i:03}}.txt", "w").write(str(i))
os.makedirs("big")
for name in ("a", "b", "c"):
    open(f"big/{{name}}.bin", "wb").write(b"x" * (3 * 2**20 // 2))
open("big/d.txt", "w").write("small")
"""
    limits = Limits(wall_seconds=20, workspace_bytes=16 * MiB)
    execution = run(box, script, limits)

    assert execution.outcome == "succeeded", execution
    names = [a.name for a in execution.artifacts]
    # In name order: big/a.bin and big/b.bin fill 3 MiB, big/c.bin would pass 4 MiB,
    # the small big/d.txt still fits; then files until there are 32.
    assert names[:3] == ["big/a.bin", "big/b.bin", "big/d.txt"]
    assert names[3:] == [f"many/{i:03}.txt" for i in range(MAX_ARTIFACT_FILES - 3)]
    assert sum(len(a.data) for a in execution.artifacts) <= MAX_ARTIFACT_BYTES
    assert execution.artifacts_skipped == (
        f"big/c.bin: over the cap of {MAX_ARTIFACT_BYTES} bytes in all",
        *(
            f"many/{i:03}.txt: over the cap of {MAX_ARTIFACT_FILES} files"
            for i in range(MAX_ARTIFACT_FILES - 3, MAX_ARTIFACT_FILES + 3)
        ),
    )


def test_peak_memory_is_measured(box: Sandbox) -> None:
    script = "hoard = bytearray(100 * 2**20)\nhoard[::4096] = b'x' * len(hoard[::4096])"
    execution = run(box, script, Limits(wall_seconds=20, memory_bytes=256 * MiB))

    assert execution.outcome == "succeeded", execution
    assert 100 * MiB < execution.peak_memory_bytes < 180 * MiB


def test_out_of_memory_in_a_child_process_is_oom_killed(box: Sandbox) -> None:
    # The script survives its child's death and exits 0: still oom_killed.
    script = """
import subprocess, sys
child = subprocess.run([sys.executable, "-c", "b = []\\nwhile True: b.append(bytearray(2**20))"])
print("child ended with", child.returncode)
"""
    execution = run(box, script, Limits(wall_seconds=30, memory_bytes=64 * MiB))

    assert (execution.outcome, execution.exit_code) == ("oom_killed", 0), execution
    assert execution.stdout == "child ended with -9\n"
    assert execution.reason.startswith("1 process killed by the kernel: out of memory")
    assert execution.reason.endswith("the script then exited with code 0")
    assert execution.peak_memory_bytes > 64 * MiB


def test_processes_left_behind_are_killed_when_the_script_exits(box: Sandbox) -> None:
    script = """
import os, subprocess
subprocess.Popen(["sleep", "600"])  # keeps stdout open
subprocess.Popen(["sleep", "600"], start_new_session=True, stdout=subprocess.DEVNULL)
if os.fork() == 0:  # a daemon: detached and orphaned
    os.setsid()
    if os.fork() == 0:
        import time
        time.sleep(600)
    os._exit(0)
print("bye")
"""
    began = time.monotonic()
    execution = run(box, script, Limits(wall_seconds=60))

    assert (execution.outcome, execution.stdout) == ("succeeded", "bye\n"), execution
    assert time.monotonic() - began < 10


@pytest.mark.parametrize("kind", ["memory", "files"])
@pytest.mark.parametrize("beyond", [-32, 32])
def test_memory_limit_is_the_ceiling_of_what_the_trial_holds(
    box: Sandbox, kind: str, beyond: int
) -> None:
    # Files in the workspace are tmpfs pages: memory, counted inside the same limit.
    hold = {
        "memory": "b = bytearray(n * 2**20)\nb[::4096] = b'x' * len(b[::4096])",
        "files": "for i in range(n):\n    open(f'/workspace/f{i}', 'wb').write(b'x' * 2**20)",
    }[kind]
    script = (
        f"import json, os\nn = json.loads(os.environ['PRISM_PARAMS'])['mb']\n{hold}\nprint('held')"
    )
    limit = 128
    execution = run(
        box,
        script,
        Limits(wall_seconds=30, memory_bytes=limit * MiB, workspace_bytes=4 * limit * MiB),
        params=json.dumps({"mb": limit + beyond}),
    )

    if beyond < 0:
        assert (execution.outcome, execution.stdout) == ("succeeded", "held\n"), execution
    else:
        assert execution.outcome == "oom_killed", execution
        assert "held" not in execution.stdout
    assert execution.peak_memory_bytes <= limit * MiB + BOOTSTRAP_BYTES


PROBE_THE_SUPERVISOR = """
import ctypes, errno, json, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)

def attempt(action):
    try:
        action()
        return "done"
    except OSError as error:
        return errno.errorcode[error.errno]

def read(path):
    with open(path, "rb") as f:
        f.read()

def ptrace():
    if libc.ptrace(16, 1, None, None) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), "ptrace")

seen = {
    "environ": attempt(lambda: read("/proc/1/environ")),
    "mem": attempt(lambda: read("/proc/1/mem")),
    "stderr": attempt(lambda: open("/proc/1/fd/2", "wb")),
    "fds": attempt(lambda: os.listdir("/proc/1/fd")),
    "ptrace": attempt(ptrace),
    "key_in_env": any("REPORT" in name for name in os.environ),
}
for sig in (signal.SIGSTOP, signal.SIGKILL):
    os.kill(1, sig)  # delivered, and dropped: the namespace's init has no handler
time.sleep(0.5)
print(json.dumps(seen))
"""


def test_the_trial_cannot_read_trace_or_stop_its_supervisor(box: Sandbox) -> None:
    execution = run(box, PROBE_THE_SUPERVISOR)

    assert execution.outcome == "succeeded", execution
    assert json.loads(execution.stdout) == {
        "environ": "EACCES",
        "mem": "EACCES",
        "stderr": "EACCES",
        "fds": "EACCES",
        "ptrace": "EPERM",
        "key_in_env": False,
    }
    # The supervisor lived through SIGSTOP and SIGKILL and reported.
    assert execution.peak_memory_bytes > 0


@pytest.mark.parametrize(
    "forged",
    [
        "b'\\x1ePRISM-REPORT ' + b'0' * 32 + b' 5000000\\n{'",
        "b'\\x1ePRISM-REPORT ' + os.urandom(16).hex().encode() + b' 2\\n{}'",
        "b'\\x1ePRISM-REPORT '",
    ],
    ids=["announces-5MB", "guessed-key", "mark-alone"],
)
def test_a_forged_report_is_only_stderr_text(box: Sandbox, forged: str) -> None:
    script = f"""
import os, sys
open("/workspace/output/real.txt", "w").write("mine")
sys.stderr.buffer.write({forged})
sys.stderr.flush()
sys.exit(3)
"""
    execution = run(box, script)

    assert (execution.outcome, execution.exit_code) == ("failed", 3), execution
    assert "PRISM-REPORT" in execution.stderr
    assert pairs(execution) == (("real.txt", b"mine"),)


def test_a_sandbox_that_cannot_prepare_the_trial_is_a_sandbox_error(box: Sandbox) -> None:
    execution = run(box, "print('never')", params="[1, 2]")

    assert execution.outcome == "sandbox_error", execution
    assert execution.reason.startswith("the sandbox could not prepare the trial: ValueError")
    assert execution.stdout == ""


def test_odd_output_names_are_skipped_and_listed_safely(box: Sandbox) -> None:
    script = """
import os
os.chdir("/workspace/output")
open("fine.txt", "w").write("ok")
open("new\\nline", "w").write("x")
open("esc\\x1b[2J", "w").write("x")
open(b"latin\\xe9", "w").write("x")
"""
    execution = run(box, script)

    assert execution.outcome == "succeeded", execution
    assert pairs(execution) == (("fine.txt", b"ok"),)
    assert sorted(execution.artifacts_skipped) == [
        "esc\ufffd[2J: the name holds a control or invisible character",
        "latin\ufffd: the name is not UTF-8",
        "new\ufffdline: the name holds a control or invisible character",
    ]


def test_report_is_found_across_any_split_and_stays_out_of_stderr() -> None:
    key = "k" * 32
    artifacts = b"abc"
    meta = b'{"result": null}\n'
    report = bootstrap.REPORT_MARK + key.encode() + b" %d\n" % (len(meta) + 3) + meta + artifacts
    stream = b"warning: one\n\x1ePRISM-REPORT wrong-key 5\nerr" + report + b"after\x1ePRISM"
    for size in (1, 2, 7, len(stream)):
        reader = _ReportReader(key)
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        text = b"".join(reader.feed(chunk) for chunk in chunks) + reader.end()
        assert text == b"warning: one\n\x1ePRISM-REPORT wrong-key 5\nerrafter\x1ePRISM"
        assert reader.payload == meta + artifacts
        assert reader.problem is None


def test_a_reported_peak_is_capped_at_the_containers_limit() -> None:
    limits = Limits(memory_bytes=64 * MiB)
    meta: dict[str, Any] = {
        "setup_error": None,
        "result": None,
        "result_error": None,
        "signal": 0,
        "peak_memory_bytes": 2**63 - 1,
        "oom_kills": 0,
        "artifacts": [],
        "artifacts_skipped": [],
    }
    report = _parse_report(json.dumps(meta).encode() + b"\n", limits)
    assert report.peak_memory_bytes == 64 * MiB + BOOTSTRAP_BYTES
    for forged in (2**63, 10**30, -1, 1.5, True, "1"):
        with pytest.raises(RuleBroken, match="count"):
            _parse_report(json.dumps({**meta, "peak_memory_bytes": forged}).encode(), limits)


def test_a_cut_or_malformed_report_is_a_problem_not_text() -> None:
    key = "k" * 32
    mark = bootstrap.REPORT_MARK + key.encode() + b" "
    cut = _ReportReader(key)
    assert cut.feed(b"text" + mark + b"100\n{") + cut.end() == b"text"
    assert (cut.payload, cut.problem) == (None, "it was cut short")
    malformed = _ReportReader(key)
    text = malformed.feed(mark + b"99999999999\nrest") + malformed.end()
    assert text == b"99999999999\nrest"
    assert (malformed.payload, malformed.problem) == (
        None,
        "its header is not a length within the cap",
    )


def test_remove_orphans_spares_prepared_and_foreign_containers(
    docker_client: docker.DockerClient, owner: str, sandbox_image: str
) -> None:
    api = docker_client.api
    labels = [{OWNER_LABEL: owner}, {OWNER_LABEL: f"other-{secrets.token_hex(4)}"}]
    created = [api.create_container(sandbox_image, labels=label)["Id"] for label in labels]
    box = Sandbox(docker_client, image=sandbox_image, owner=owner, ahead=2)
    try:
        # One run makes the sandbox prepare containers of its kind.
        assert run(box, "print(1)").outcome == "succeeded"
        wait_until(lambda: len(box._containers.ready()) == 2, what="two prepared containers")
        prepared = box._containers.ready()

        assert box.remove_orphans() == [created[0]]
        ours = {c["Id"] for c in api.containers(all=True, filters={"label": OWNER_LABEL})}
        assert created[0] not in ours
        assert {created[1]} | prepared <= ours
    finally:
        box.close()
        for container_id in created:
            with suppress(docker.errors.NotFound):
                api.remove_container(container_id, force=True)
    # Closed: what it prepared is gone, and nothing else of its own is left.
    assert api.containers(all=True, filters={"label": f"{OWNER_LABEL}={owner}"}) == []


def test_prepared_containers_each_serve_one_trial_with_the_same_hardening(
    docker_client: docker.DockerClient, owner: str, sandbox_image: str
) -> None:
    script = """
import json, os, socket
found = sorted(os.listdir("/workspace")) + sorted(os.listdir("/tmp"))
for path in ("/workspace/left", "/tmp/left"):
    open(path, "w").write("x")
trial = os.environ["PRISM_TRIAL_ID"]
print(json.dumps({"host": socket.gethostname(), "found": found, "id": trial}))
"""
    api = docker_client.api
    box = Sandbox(docker_client, image=sandbox_image, owner=owner, ahead=2, behind=2)
    try:
        first = box.run("prepared-0", script, "{}", SMALL)
        wait_until(lambda: len(box._containers.ready()) == 2, what="two prepared containers")
        prepared = box._containers.ready()
        configs = [api.inspect_container(c)["HostConfig"] for c in prepared]
        # One prepared but removed by hand since is passed over.
        api.remove_container(next(iter(prepared)), force=True)
        later = [box.run(f"prepared-{i}", script, "{}", SMALL) for i in (1, 2, 3)]
    finally:
        box.close()

    results = [r.result or {} for r in [first, *later]]
    assert [r.outcome for r in [first, *later]] == ["succeeded"] * 4
    assert [r["id"] for r in results] == [f"prepared-{i}" for i in range(4)]
    # A fresh container each: nothing another trial left, a host name of its own.
    assert [r["found"] for r in results] == [["output", "params.json", "trial.py"]] * 4
    assert len({r["host"] for r in results}) == 4
    # Made ahead with what a container made for the trial has.
    for config in configs:
        assert config["ReadonlyRootfs"] and config["NetworkMode"] == "none"
        assert config["CapDrop"] == ["ALL"] and config["Memory"] == SMALL.container_memory_bytes
        assert config["PidsLimit"] == SMALL.processes + 1
        assert any(o.startswith("seccomp=") for o in config["SecurityOpt"])


def test_a_silent_trial_outlives_the_clients_timeout(
    docker_client: docker.DockerClient, owner: str, sandbox_image: str
) -> None:
    # The engine client's timeout bounds its calls, not how long a trial may stay quiet.
    with closing(docker.from_env(timeout=2)) as impatient:
        box = Sandbox(impatient, image=sandbox_image, owner=owner)
        execution = run(box, "import time\ntime.sleep(4)\nprint('{\"quiet\": 4}')")
    assert (execution.outcome, execution.result) == ("succeeded", {"quiet": 4})


def test_too_large_script_is_refused_without_a_container(box: Sandbox) -> None:
    execution = run(box, "#" * (200 * 1024))

    assert execution.outcome == "sandbox_error"
    assert "the script is larger than" in execution.reason


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="wall_seconds"):
        Limits(wall_seconds=0)


def test_engine_module_leaves_a_running_engine_alone(tmp_path: Path) -> None:
    assert ensure_engine(tmp_path) is None
    assert not (tmp_path / "dockerd.pid").exists()
    assert not stop_engine(tmp_path)


def test_stop_engine_signals_only_a_dockerd(tmp_path: Path) -> None:
    (tmp_path / "dockerd.pid").write_text(f"{os.getpid()}\n")  # a pid that is not dockerd

    assert not stop_engine(tmp_path)
    assert not (tmp_path / "dockerd.pid").exists()


def test_engine_refusal_is_a_sandbox_error(docker_client: docker.DockerClient, owner: str) -> None:
    # (An unreachable engine is not shown here: the SDK leaks the socket of a failed
    # connect, which this module's warnings-as-errors would report.)
    missing_image = Sandbox(docker_client, image="prism-no-such-image:never", owner=owner)
    execution = missing_image.run("x", "pass", "{}", SMALL)

    assert execution.outcome == "sandbox_error"
    assert "prism-no-such-image" in execution.reason
