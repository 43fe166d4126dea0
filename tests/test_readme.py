"""The README's tutorial, run as written (only the address and the token
file are this test stack's)."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO, RunningStack


def tutorial_blocks() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Your first real sweep", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_your_first_real_sweep_works_verbatim(stack: RunningStack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    blocks = tutorial_blocks()
    # The dependency example reaches a package index: not from a test.
    offline = [b for b in blocks if "requirements" not in b]
    assert len(offline) == 2, "the tutorial's first two steps"
    script = "set -euo pipefail\n" + "\n".join(offline)
    script = script.replace("http://127.0.0.1:8080", f"http://{stack.gateway}")
    script = script.replace(".prism/api_token", str(stack.layout.api_token_file))
    done = subprocess.run(
        ["timeout", "120", "bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert """{"layers": 1, "lr": 0.01} {'loss': 0.1}""" in done.stdout
    assert '"stdout":"PRISM_METRIC' in done.stdout
