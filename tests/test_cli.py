"""The `prism` command, the installed script, driven against a running stack: runs from a
script and from spec files, its live display through a pseudo-terminal, Ctrl-C, the reads and
their --json, and the documented exit statuses."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prism.client import Client
from tests.conftest import RunningStack

PRISM = str(Path(sys.executable).parent / "prism")

TRAIN = """\
import json, math, os, time
p = json.loads(os.environ["PRISM_PARAMS"])
loss = (math.log10(p["lr"]) + 2) ** 2 + 0.1 * p["layers"]
for step in range(3):
    print("PRISM_METRIC " + json.dumps({"step": step, "loss": loss * (3 - step)}))
    time.sleep(float(p.get("pause", 0)))
if p["layers"] == 3:
    raise SystemExit("too deep \\x1b]0;retitled\\x07\\x1b[2J")
os.makedirs("/workspace/output/plots", exist_ok=True)
open("/workspace/output/plots/curve.txt", "w").write(str(loss))
print(json.dumps({"loss": loss}))
"""


def env_of(stack: RunningStack, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env.update(PRISM_ADDRESS=stack.gateway, PRISM_DATA_DIR=str(stack.layout.data_dir))
    env.update(COLUMNS="160")
    if token is not None:
        env["PRISM_API_TOKEN"] = token
    return env


def prism(
    stack: RunningStack, *args: str, token: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PRISM, *args],
        env=env_of(stack, token),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def on_a_terminal(
    stack: RunningStack, *args: str, cwd: Path, interrupt_when: bytes | None = None
) -> tuple[int, str]:
    """Run the command with a pseudo-terminal as its stdout and stderr, as a user would; with
    `interrupt_when`, send it SIGINT (what Ctrl-C does) once its output shows those bytes."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [PRISM, *args], env=env_of(stack), cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=terminal, stderr=terminal,
        # As from a terminal: a run started in the background by a shell without job
        # control (CI, say) inherits SIGINT ignored, and Python then never interrupts.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal's other end closed: the command exited
                    break
                if not chunk:
                    break
                seen += chunk
            if interrupt_when is not None and interrupt_when in seen:
                process.send_signal(signal.SIGINT)
                interrupt_when = None
        return process.wait(timeout=30), seen.decode(errors="replace")
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()


@pytest.fixture
def train(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(TRAIN)
    return tmp_path


def test_run_a_script_with_flags_one_line_per_event(stack: RunningStack, train: Path) -> None:
    ran = prism(
        stack,
        *("run", "train.py", "-p", "lr=0.1,0.01", "-p", "layers=1,2"),
        *("--objective", "loss:min", "--max-parallel", "2", "--wall", "30", "--memory", "128"),
        cwd=train,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = ran.stdout.splitlines()
    sweep_id = lines[0].split()[1].rstrip(":")
    assert lines[0] == f"sweep {sweep_id}: 4 trials"
    for index in range(4):
        assert any(line.startswith(f"trial {index} started on ") for line in lines)
        assert any(line.startswith(f"trial {index} succeeded loss=") for line in lines)
    assert "trial 0 step=2 loss=1.1" in lines  # a metric, as the trial wrote it
    assert f"sweep {sweep_id} done: 4 succeeded" in lines
    assert "best: trial 1 · loss 0.1 · layers=1 lr=0.01" in lines
    assert "\x1b" not in ran.stdout  # not a terminal: no display codes
    shown = json.loads(prism(stack, "show", sweep_id, "--json").stdout)
    assert shown["spec"]["limits"]["memoryMb"] == 128 and shown["spec"]["maxParallel"] == 2
    assert [t["outcome"] for t in shown["trials"]] == ["succeeded"] * 4
    table = prism(stack, "show", sweep_id)
    assert table.returncode == 0
    assert any(line.split()[:2] == ["★", "1"] for line in table.stdout.splitlines())


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "sweep.toml",
            'task = "toml"\nscriptFile = "train.py"\n'
            "[parameters.random]\ntrials = 3\nseed = 4\n"
            "[parameters.random.parameters]\nlr = {loguniform = [0.001, 0.1]}\n"
            'layers = {choice = [1, 2]}\n[objective]\nmetric = "loss"\n',
        ),
        (
            "sweep.yaml",
            "task: yaml\nscriptFile: train.py\nparameters:\n  random:\n    trials: 3\n"
            "    seed: 4\n"
            "    parameters: {lr: {loguniform: [0.001, 0.1]}, layers: {choice: [1, 2]}}\n"
            "objective: {metric: loss}\n",
        ),
    ],
)
def test_run_a_spec_file_detached_then_watch_as_json(
    stack: RunningStack, train: Path, name: str, text: str
) -> None:
    (train / name).write_text(text)
    detached = prism(stack, "run", name, "--detach", cwd=train)
    assert detached.returncode == 0, detached.stderr
    sweep_id = detached.stdout.strip()
    watched = prism(stack, "watch", sweep_id, "--json")
    assert watched.returncode == 0, watched.stderr
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    assert events[-1]["final"] and events[-1]["sweepState"] == "done"
    assert events[0]["kind"] == "sweep_created" and events[0]["trialIndex"] == -1
    assert sum(e["kind"] == "trial_finished" for e in events) == 3
    shown = json.loads(prism(stack, "show", sweep_id, "--json").stdout)
    assert shown["spec"]["task"] == name.split(".")[1]
    assert shown["spec"]["script"] == TRAIN


def test_failed_trials_their_logs_and_artifacts(
    stack: RunningStack, train: Path, tmp_path: Path
) -> None:
    ran = prism(stack, "run", "train.py", "-p", "lr=0.01", "-p", "layers=2,3", cwd=train)
    assert ran.returncode == 4, ran.stdout + ran.stderr  # done, with a failed trial
    sweep_id = ran.stdout.split()[1].rstrip(":")
    assert f"sweep {sweep_id} done: 1 succeeded · 1 failed" in ran.stdout
    assert "\x1b" not in ran.stdout  # the trial's codes never reach the terminal

    logs = prism(stack, "logs", sweep_id, "1")
    assert logs.returncode == 0
    assert 'PRISM_METRIC {"step": 2' in logs.stdout
    assert "too deep \\x1b]0;retitled\\x07\\x1b[2J" in logs.stderr
    raw = prism(stack, "logs", sweep_id, "1", "--raw")
    assert "\x1b]0;retitled\x07" in raw.stderr  # asked for
    as_json = json.loads(prism(stack, "logs", sweep_id, "0", "--json").stdout)
    assert as_json["stdout"].endswith('{"loss": 0.2}\n')

    listed = prism(stack, "artifacts", sweep_id, "0")
    assert listed.stdout.split() == [str(len("0.2")), "plots/curve.txt"]
    dest = tmp_path / "out"
    fetched = prism(stack, "artifacts", sweep_id, "0", "-o", str(dest))
    assert fetched.returncode == 0, fetched.stderr
    assert (dest / "plots" / "curve.txt").read_text() == "0.2"
    assert fetched.stdout.strip() == str(dest / "plots" / "curve.txt")


def test_logs_follow_waits_for_the_trial(stack: RunningStack, train: Path) -> None:
    started = prism(
        stack, "run", "train.py", "-p", "lr=0.1", "-p", "layers=1", "-p", "pause=1", "--detach",
        cwd=train,
    )  # fmt: skip
    sweep_id = started.stdout.strip()
    followed = prism(stack, "logs", sweep_id, "0", "--follow")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.endswith('{"loss": 1.1}\n')


def test_logs_follow_shows_a_trial_s_metrics_inert_on_a_terminal(
    stack: RunningStack, tmp_path: Path
) -> None:
    (tmp_path / "hostile.py").write_text(
        "import json, time\n"
        "metric = {'\\x1b]0;owned\\x07loss': '\\x1b[2Jred'}\n"
        "print('PRISM_METRIC ' + json.dumps(metric), flush=True)\n"
        "time.sleep(3)\n"
        "print('\\x1b[2Jraw')\n"
    )
    sweep_id = prism(stack, "run", "hostile.py", "--detach", cwd=tmp_path).stdout.strip()
    status, shown = on_a_terminal(stack, "logs", sweep_id, "0", "--follow", cwd=tmp_path)
    assert status == 0, shown
    assert "\x1b]0;owned" not in shown and "\x1b[2J" not in shown
    assert "\\x1b]0;owned\\x07loss=\\x1b[2Jred" in shown  # the metric, live, escaped
    assert "\\x1b[2Jraw" in shown  # and its output, at the end


def test_the_live_display_on_a_terminal(stack: RunningStack, train: Path) -> None:
    status, shown = on_a_terminal(
        stack, "run", "train.py", "-p", "lr=0.1,0.01", "-p", "layers=1", "-p", "pause=0.5",
        "--objective", "loss", cwd=train,
    )  # fmt: skip
    assert status == 0, shown
    assert "━" in shown  # the progress bar
    assert "2/2 trials" in shown
    assert "last metric" in shown  # the running trials' table
    assert "best: trial 1 · loss 0.1 · layers=1 lr=0.01" in shown
    assert "trials: prism show" in shown


def test_ctrl_c_detaches_and_the_sweep_runs_on(stack: RunningStack, train: Path) -> None:
    status, shown = on_a_terminal(
        stack, "run", "train.py", "-p", "lr=0.1", "-p", "layers=1", "-p", "pause=20",
        cwd=train, interrupt_when=b"last metric",
    )  # fmt: skip
    assert status == 130, shown
    assert "detached from sweep" in shown
    sweep_id = shown.split("detached from sweep ")[1].split(":")[0]
    assert f"prism watch {sweep_id}" in shown
    with Client(stack.gateway, stack.token) as client:
        assert client.get(sweep_id).state == "running"
        cancelled = prism(stack, "cancel", sweep_id)
        assert (
            cancelled.returncode == 0 and cancelled.stdout.strip() == f"sweep {sweep_id} cancelled"
        )
        watched = prism(stack, "watch", sweep_id)
        assert watched.returncode == 5, watched.stdout + watched.stderr
        assert client.get(sweep_id).counts.finished == 1


def test_sweeps_lists_the_latest(stack: RunningStack, train: Path) -> None:
    sweep_id = prism(stack, "run", "train.py", "-p", "lr=0.1", "-p", "layers=1", "--detach",
                     cwd=train).stdout.strip()  # fmt: skip
    table = prism(stack, "sweeps", "--limit", "1")
    assert table.returncode == 0
    assert table.stdout.splitlines()[1].split()[0] == sweep_id
    listed = json.loads(prism(stack, "sweeps", "--json", "--limit", "0").stdout)
    assert sweep_id in [s["id"] for s in listed]
    prism(stack, "watch", sweep_id)


def test_usage_errors_exit_2_naming_what_is_wrong(stack: RunningStack, train: Path) -> None:
    bad_flag = prism(stack, "run", "train.py", "-p", "lr=uniform:1", cwd=train)
    assert bad_flag.returncode == 2
    assert "uniform takes two numbers" in bad_flag.stderr
    (train / "typo.yaml").write_text("task: t\nscriptFile: train.py\nmaxParalel: 2\n")
    typo = prism(stack, "run", "typo.yaml", cwd=train)
    assert typo.returncode == 2 and "maxParalel" in typo.stderr
    refused = prism(stack, "run", "train.py", "--memory", "1", cwd=train)  # the service says no
    assert refused.returncode == 2
    assert "invalid_argument" in refused.stderr and "limits.memoryMb" in refused.stderr
    assert prism(stack, "show").returncode == 2  # argparse's own


def test_service_errors_and_an_unreachable_service(stack: RunningStack) -> None:
    missing = prism(stack, "show", "no-such-sweep")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "prism: not_found: no sweep 'no-such-sweep'",
    )
    refused = prism(stack, "sweeps", token="wrong")
    assert refused.returncode == 1 and refused.stderr.startswith("prism: unauthenticated:")
    unreachable = prism(stack, "--address", "127.0.0.1:1", "sweeps")
    assert unreachable.returncode == 3 and unreachable.stderr.startswith("prism: unavailable:")


def test_the_demo_s_own_calls(stack: RunningStack) -> None:
    ran = prism(stack, "examples", "from the command line")
    assert ran.returncode == 0, ran.stderr
    reply = json.loads(ran.stdout)
    assert [r["runner"] for r in reply["results"]] == ["runner-a", "runner-b", "runner-c"]
    status = prism(stack, "status", reply["sweepId"])
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "done"
    assert json.loads(prism(stack, "landing").stdout)
