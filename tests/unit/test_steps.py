"""The step runner behind `make demo` and `make up` (prism/steps.py): one line per
step, everything else in the log, and a failure that shows where to look."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from prism.steps import TAIL_LINES, Step, plan, run_steps


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def run(steps: list[Step], tmp_path: Path, *, live: bool = False) -> tuple[int, str, str]:
    out = io.StringIO()
    log = tmp_path / "logs" / "demo.log"
    status = run_steps(steps, log_path=log, out=out, live=live)
    return status, out.getvalue(), log.read_text()


def test_each_step_is_one_line_and_its_output_goes_to_the_log(tmp_path: Path) -> None:
    steps = [
        Step(
            "engine",
            python("import sys; print('started it'); print('apt says hi', file=sys.stderr)"),
        ),
        Step("image", python("print('already built: x')")),
        Step("sweep", python("print('3 of 3 done'); print(); print('results'); print('next')")),
    ]
    status, out, log = run(steps, tmp_path)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("  ✓ engine  started it (")
    assert lines[1] == "  · image   already built: x"
    assert lines[2].startswith("  ✓ sweep   3 of 3 done (")
    # The last step's other lines are the ending, after one blank line.
    assert lines[3:] == ["", "results", "next"]
    assert "apt says hi" not in out
    for text in ("==> engine", "apt says hi", "started it", "==> image", "results"):
        assert text in log


def test_without_a_terminal_there_are_no_escape_codes(tmp_path: Path) -> None:
    slow = python(
        "import sys, time\n"
        "for i in range(3): print(i, file=sys.stderr, flush=True); time.sleep(0.2)\n"
        "print('\x1b[1mdone\x1b[0m')"
    )
    status, out, _ = run([Step("slow", slow)], tmp_path)
    assert status == 0
    assert "\x1b" not in out and "\r" not in out
    assert out.startswith("  ✓ slow  done (") and len(out.splitlines()) == 1


def test_on_a_terminal_the_final_line_replaces_the_live_one(tmp_path: Path) -> None:
    slow = python(
        "import sys, time\nprint('working', file=sys.stderr, flush=True); time.sleep(0.5)\n"
        "print('made it')"
    )
    status, out, _ = run([Step("slow", slow)], tmp_path, live=True)
    assert status == 0
    assert "working" in out  # its latest output was on the live line
    final = out.rsplit("\r\x1b[K", 1)[1]
    assert final.startswith("  ✓ slow  made it (")
    assert final.endswith(")\n")


def test_a_failing_step_names_the_log_and_shows_its_last_lines(tmp_path: Path) -> None:
    failing = python(
        "import sys\n"
        # On stderr, as the failure below: two pipes have no order between them.
        "for i in range(40): print(f'line {i}', file=sys.stderr)\n"
        "sys.exit('sandbox.engine: no Docker engine answers: start one')"
    )
    never = tmp_path / "never"
    steps = [
        Step("first", python("print('ok')")),
        Step("engine", failing),
        Step("after", python(f"open({str(never)!r}, 'w')")),
    ]
    status, out, log = run(steps, tmp_path)
    assert status == 1
    assert "  ✗ engine  failed with exit status 1 (" in out
    # Why it failed is the last line shown, the lines before it as many as fit.
    shown = [line for line in out.splitlines() if line.startswith("    | ")]
    assert shown[-1] == "    | sandbox.engine: no Docker engine answers: start one"
    assert len(shown) == TAIL_LINES
    assert "    | line 39" in out and "line 20\n" not in out
    assert out.splitlines()[-1] == f"  full log: {tmp_path / 'logs' / 'demo.log'}"
    assert "line 0\n" in log and "no Docker engine answers" in log
    assert not never.exists(), "a step after a failure ran"


def test_a_command_that_cannot_start_is_a_failure_that_says_why(tmp_path: Path) -> None:
    status, out, _ = run([Step("missing", [str(tmp_path / "no-such-program")])], tmp_path)
    assert status == 127
    assert "  ✗ missing" in out and "no-such-program" in out


def test_a_step_with_nothing_to_do_does_not_run(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    step = Step(
        "venv",
        python(f"open({str(ran)!r}, 'w')"),
        skip_if=python("pass"),
        skipped="already set up in .venv",
    )
    status, out, _ = run([step], tmp_path)
    assert status == 0
    assert out == "  · venv  already set up in .venv\n"
    assert not ran.exists()


def test_a_step_that_needs_doing_runs_with_its_own_words(tmp_path: Path) -> None:
    step = Step(
        "venv",
        python("import sys; print('pip noise', file=sys.stderr)"),
        skip_if=python("raise SystemExit(1)"),
        result="installed the package in .venv",
    )
    status, out, log = run([step], tmp_path)
    assert status == 0
    assert out.startswith("  ✓ venv  installed the package in .venv (")
    assert "pip noise" in log


def test_the_demo_is_the_stack_coming_up_then_the_sweep() -> None:
    up = plan("up", venv=".venv", stamp=".venv/.installed")
    demo = plan("demo", venv=".venv", stamp=".venv/.installed")
    assert [step.name for step in demo] == [*(step.name for step in up), "the sweep"]
    assert up[0].argv[-1] == ".venv/.installed"  # the Makefile decides on reinstalling
    assert all(step.argv[0] == ".venv/bin/python" for step in demo[1:])
