"""The README's tutorial, run as written (only the address and the token
file are this test stack's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, RunningStack


def tutorial_blocks() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Your first real sweep", 1)[1].split("\n## ", 1)[0]
    # The search section has its own test.
    section = section.split("\n### Search that learns", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def verbatim(stack: RunningStack, blocks: list[str]) -> str:
    """The blocks as one bash script against the test stack: its address and token file, and
    the prism command of this environment."""
    script = "set -euo pipefail\n" + "\n".join(blocks)
    script = script.replace("http://127.0.0.1:8080", f"http://{stack.gateway}")
    script = script.replace(".prism/api_token", str(stack.layout.api_token_file))
    return script.replace("$PWD/.venv/bin", str(Path(sys.executable).parent))


def stack_env(stack: RunningStack) -> dict[str, str]:
    return {
        **os.environ,
        "PRISM_ADDRESS": stack.gateway,
        "PRISM_API_TOKEN_FILE": str(stack.layout.api_token_file),
    }


def run_verbatim(
    stack: RunningStack, blocks: list[str], cwd: Path, within: int
) -> subprocess.CompletedProcess[str]:
    """The blocks run as written against the test stack, within `within` seconds; they
    must succeed."""
    done = subprocess.run(
        ["timeout", str(within), "bash", "-c", verbatim(stack, blocks)],
        cwd=cwd,
        env=stack_env(stack),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_your_first_real_sweep_works_verbatim(stack: RunningStack, tmp_path: Path) -> None:
    blocks = tutorial_blocks()
    # The dependency example reaches a package index: not from a test.
    offline = [b for b in blocks if "requirements" not in b]
    assert len(offline) == 3, "the command, then the same over HTTP in two steps"
    done = run_verbatim(stack, offline, tmp_path, within=180)
    # What the README shows the command printing, but the sweep's id.
    shown = re.findall(r"^# (.*)$", offline[0], flags=re.M)
    assert len(shown) == 9
    lines = done.stdout.splitlines()
    for line in shown:
        if "started on" in line:  # the runner's name is this stack's
            assert any(out.startswith(line.rsplit(" ", 1)[0]) for out in lines)
        elif "…" not in line:
            assert line in lines
    assert """{"layers": 1, "lr": 0.01} {'loss': 0.1}""" in done.stdout
    assert '"stdout":"PRISM_METRIC' in done.stdout


def test_the_python_examples_work_verbatim(stack: RunningStack, tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### The same from Python", 1)[1].split("\n### ", 1)[0]
    short, example = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len([line for line in short.splitlines() if line and not line.startswith("#")]) <= 5
    # The tutorial's first step writes train.py (and starts its own sweep).
    first = verbatim(stack, tutorial_blocks()[:1])
    subprocess.run(
        ["bash", "-c", first], cwd=tmp_path, env=stack_env(stack), check=True, capture_output=True
    )
    outputs = []
    for code in (short, example):
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=stack_env(stack),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout.splitlines())
    assert outputs[0] == [short.splitlines()[-1].removeprefix("# ")]
    shown = [line for line in example.splitlines() if line.startswith("# ") and "…" not in line]
    lines = outputs[1]
    assert sorted(lines[:6]) == [f"trial {i}: succeeded" for i in range(6)]
    assert lines[6:] == [line.removeprefix("# ") for line in shown[1:]]
    assert shown[0].removeprefix("# ") in lines


def test_the_search_example_prunes_and_finds_the_best(stack: RunningStack, tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Search that learns, and early stopping", 1)[1].split("\n### ", 1)[0]
    [block] = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    # $PRISM and $TOKEN as the walkthrough before it sets them.
    setup = "PRISM=http://127.0.0.1:8080\nTOKEN=$(cat .prism/api_token)\n"
    done = run_verbatim(stack, [setup, block], tmp_path, within=240)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("done {'total': 16, 'pending': 0, 'running': 0, 'finished': 16, ")
    pruned = [line for line in lines if " pruned at step " in line]
    assert pruned and f"'pruned': {len(pruned)}}}" in lines[0]
    assert lines[-1].startswith("best: trial ")
    print(done.stdout)
