"""The `prism` command's views of a sweep: kept up by events, and safe to print whatever a
trial wrote."""

from __future__ import annotations

import io

import pytest
from google.protobuf import struct_pb2
from rich.console import Console

from prism import display
from prism.client import Event
from prism.v1 import orchestrator_pb2

# What a trial can put in the strings the command prints: terminal controls (CSI, OSC that
# retitles the window or writes the clipboard, C1 controls, a bell, a backspace), and rich's
# own markup.
HOSTILE = [
    "\x1b[2J\x1b[Hcleared",
    "\x1b]0;owned\x07",
    "\x1b]52;c;cm0gLXJmIH4=\x07",
    "\x9b31mC1",
    "back\x08\x08\x08space",
    "[bold red]markup[/bold red]",
    "line\nbreak\rreturn",
]


def struct(values: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def sweep(*trials: orchestrator_pb2.Trial, goal: str = "minimize") -> orchestrator_pb2.Sweep:
    spec = orchestrator_pb2.SweepSpec(
        task="t", objective=orchestrator_pb2.Objective(metric="loss", goal=goal)
    )
    counts = orchestrator_pb2.TrialCounts(total=len(trials))
    return orchestrator_pb2.Sweep(id="s1", state="running", spec=spec, trials=trials, counts=counts)


def trial(
    index: int, loss: float | None = None, outcome: str = "", **params: object
) -> orchestrator_pb2.Trial:
    metrics = struct({} if loss is None else {"loss": loss})
    return orchestrator_pb2.Trial(
        index=index,
        params=struct(dict(params)),
        state="finished" if outcome else "pending",
        outcome=outcome,
        metrics=metrics,
    )


def event(seq: int, kind: str, index: int | None, **data: object) -> Event:
    return Event(seq, kind, index, dict(data), 0.0, kind == "sweep_finished", "")


def plain(renderable: object) -> str:
    """As printed to a file: no colours, so every escape in it came from the data."""
    out = io.StringIO()
    Console(file=out, width=200, color_system=None, force_terminal=False).print(renderable)
    return out.getvalue()


@pytest.mark.parametrize("text", HOSTILE)
def test_clean_leaves_no_control_character(text: str) -> None:
    shown = display.clean(text)
    assert all(c.isprintable() for c in shown)
    assert shown.replace("\\", "") != ""


def test_events_keep_the_progress_and_the_best_trial() -> None:
    progress = display.Progress(sweep(trial(0, lr=0.1), trial(1, lr=0.01), trial(2, lr=0.001)))
    assert progress.apply(event(1, "trial_started", 0, runner="runner-1")) is None
    assert progress.trials[0].state == "running"
    progress.apply(event(2, "metric", 0, values={"step": 1, "loss": 0.5}))
    assert progress.trials[0].last_metric == {"step": 1, "loss": 0.5}
    # A finished trial's result is read from the service: apply asks for it once.
    assert progress.apply(event(3, "trial_finished", 0, outcome="succeeded")) == 0
    progress.finished(trial(0, 0.4, "succeeded", lr=0.1))
    assert progress.apply(event(4, "trial_finished", 1, outcome="failed", reason="boom")) == 1
    progress.finished(trial(1, 0.1, "failed", lr=0.01))  # failed: never the best
    best = progress.best()
    assert best is not None and best.index == 0
    assert progress.outcomes() == {"succeeded": 1, "failed": 1}
    assert "1 pending" in plain(progress.counts_text())
    progress.apply(event(5, "sweep_finished", None, status="done"))
    assert progress.finished_count() == 2


def test_a_trial_finished_before_the_watch_began_is_not_read_again() -> None:
    progress = display.Progress(sweep(trial(0, 0.3, "succeeded")))
    progress.apply(event(1, "trial_started", 0))
    assert progress.apply(event(2, "trial_finished", 0, outcome="succeeded")) is None


@pytest.mark.parametrize(("goal", "expected"), [("minimize", 1), ("maximize", 2)])
def test_the_best_follows_the_goal_and_skips_non_numbers(goal: str, expected: int) -> None:
    done = sweep(
        trial(0, None, "succeeded"),
        trial(1, 0.1, "succeeded"),
        trial(2, 0.9, "succeeded"),
        goal=goal,
    )
    best = display.Progress(done).best()
    assert best is not None and best.index == expected


@pytest.mark.parametrize("text", HOSTILE)
def test_what_a_trial_wrote_is_printed_inert(text: str) -> None:
    hostile = trial(0, 0.2, "failed", **{"p": text})
    hostile.reason = text
    hostile.runner = text
    done = sweep(hostile)
    progress = display.Progress(done)
    finished = event(1, "trial_finished", 0, outcome=text, reason=text)
    metric = event(2, "metric", 0, values={text: text})
    lines = [progress.line(finished), progress.line(metric)]
    shown = "".join(
        [plain(display.trials_table(done)), *map(plain, display.summary(done)), *map(str, lines)]
    )
    shown += plain(progress)
    assert not any(c in shown for c in "\x1b\x9b\x07\x08\r")
    if text.startswith("[bold"):
        assert "[bold red]markup[/bold red]" in shown  # shown as written, not as a style


def test_a_sweeps_table_shows_whole_ids() -> None:
    listed = sweep()
    listed.id = "0123456789abcdef0123456789abcdef0123"
    assert listed.id in plain(display.sweeps_table([listed], now=0))


def test_an_abridged_sweep_s_best_is_the_service_s_and_its_trials_are_read_alone() -> None:
    # Past the answer's budget the trials come without params and results; bestTrial whole.
    abridged = [trial(i, None, "succeeded") for i in range(3)]
    for t in abridged:
        t.abridged = True
    answer = sweep(*abridged)
    answer.best_trial.CopyFrom(trial(2, 0.5, "succeeded", lr=0.1))
    progress = display.Progress(answer)
    best = progress.best()
    assert best is not None and best.index == 2
    assert "best: trial 2 · loss 0.5 · lr=0.1" in plain(display.summary(answer)[1])
    assert any(
        line.lstrip().startswith("★ 2") for line in plain(display.trials_table(answer)).splitlines()
    )
    # Replayed, an abridged trial's end asks for its result; the whole best one's does not.
    assert progress.apply(event(1, "trial_finished", 0, outcome="succeeded")) == 0
    assert progress.apply(event(2, "trial_finished", 2, outcome="succeeded")) is None


def test_clean_is_quick_on_a_long_plain_log_and_keeps_its_lines() -> None:
    log = "step 1\tloss 0.5\n" * 1000 + "\x1b[31mred\n"
    shown = display.clean(log, keep_newlines=True)
    assert shown.count("\n") == 1001 and "\t" in shown
    assert shown.endswith("\\x1b[31mred\n")


def adaptive(*trials: orchestrator_pb2.Trial, budget: int = 10) -> orchestrator_pb2.Sweep:
    """A running adaptive search with early stopping, of `budget` trials, these asked."""
    shown = sweep(*trials)
    shown.spec.search.CopyFrom(orchestrator_pb2.Search(sampler="tpe", trials=budget))
    shown.spec.early_stopping.CopyFrom(orchestrator_pb2.EarlyStopping(rule="asha", metric="loss"))
    return shown


def pruned(index: int, step: int, value: float) -> orchestrator_pb2.Trial:
    found = trial(index, None, "pruned", lr=0.5)
    found.pruned_step, found.pruned_value = step, value
    found.reason = f"stopped by the asha rule at step {step} (loss {value})"
    return found


def test_a_pruned_trial_is_counted_in_its_own_colour_with_its_step() -> None:
    done = adaptive(trial(0, 0.2, "succeeded", lr=0.1), pruned(1, 3, 0.9), trial(2, lr=0.3))
    progress = display.Progress(done)
    counts = progress.counts_text()
    assert plain(counts).startswith("1 succeeded · 1 pruned · 8 pending")  # of its budget of 10
    (style,) = [span.style for span in counts.spans if counts.plain[span.start :].startswith("1 p")]
    assert style == display.OUTCOME_STYLES["pruned"] != display.OUTCOME_STYLES["failed"]
    table = plain(display.trials_table(done)).splitlines()
    assert "pruned at step" in table[0]
    (row,) = [line for line in table if line.lstrip().startswith("1 ")]
    assert "pruned" in row and " 3 " in row and "stopped by the asha rule at step 3" in row
    # Without a pruned trial, no column for it.
    assert "pruned at step" not in plain(display.trials_table(sweep(trial(0, 0.2, "succeeded"))))
    assert "tpe search, asha pruning" in plain(progress)


def test_a_sweeps_table_counts_pruned_trials_when_there_are_some() -> None:
    listed = sweep()
    assert "pruned" not in plain(display.sweeps_table([listed], now=0))
    listed.counts.pruned = 4
    header, row = plain(display.sweeps_table([listed], now=0)).splitlines()[:2]
    assert "pruned" in header and " 4 " in row


def test_the_events_of_an_adaptive_search_keep_its_progress() -> None:
    progress = display.Progress(adaptive(trial(0, lr=0.1), trial(1, lr=0.2)))
    assert progress.total == 10
    progress.apply(event(1, "trial_started", 1, runner="r1"))
    assert progress.apply(event(2, "trial_pruned", 1, step=3.0, value=0.9)) is None
    assert (progress.trials[1].pruned_step, progress.trials[1].pruned_value) == (3, 0.9)
    # Still running while its runner stops it: shown as being pruned.
    assert "pruned at step 3" in plain(progress)
    assert progress.line(event(2, "trial_pruned", 1, step=3.0, value=0.9)) == (
        "trial 1 pruned at step 3: loss=0.9"
    )
    stop = event(3, "sweep_target_reached", None, trial=0, value=0.25)
    assert progress.line(stop) == "sweep s1 reached its target: trial 0 loss=0.25"
    progress.apply(stop)
    # No more trials are asked for: the two there are, are the total.
    assert progress.stop_reason == "target_reached" and progress.total == 2
    assert "stopped early: its target was reached" in plain(progress)
    deadline = event(4, "sweep_deadline_reached", None, seconds=60.0)
    assert progress.line(deadline) == "sweep s1 passed its deadline after 60 s: stopping its trials"
    failed = event(5, "sweep_search_failed", None, error="ValueError: \x1b[2Jbad")
    line = progress.line(failed)
    assert line == "sweep s1: its sampler failed: ValueError: \\x1b[2Jbad"


def test_a_stopped_sweep_s_summary_says_why() -> None:
    done = adaptive(trial(0, 0.2, "succeeded", lr=0.1), trial(1, None, "cancelled"))
    done.state, done.stop_reason = "done", "deadline"
    lines = [plain(line).strip() for line in display.summary(done)]
    assert lines == [
        "sweep s1 done: 1 succeeded · 1 cancelled",
        "best: trial 0 · loss 0.2 · lr=0.1",
        "stopped early: its deadline passed",
    ]
    done.stop_reason = "\x1b]0;owned\x07"  # a reason this command does not know, shown inert
    assert "\x1b" not in plain(display.summary(done)[2])


def test_an_asked_trial_shows_the_parameters_its_sampler_chose() -> None:
    progress = display.Progress(adaptive())
    progress.apply(event(1, "trial_queued", 0, name="trial-0", params={"lr": 0.01}))
    progress.apply(event(2, "trial_started", 0, runner="r1"))
    assert progress.trials[0].params == {"lr": 0.01}
    assert "lr=0.01" in plain(progress)


def test_several_objectives_show_their_pareto_front() -> None:
    multi = sweep(trial(0, 0.2, "succeeded"), trial(1, 0.1, "succeeded"))
    multi.spec.ClearField("objective")
    multi.spec.objectives.add(metric="loss")
    multi.spec.objectives.add(metric="size\x1b[2J")
    assert (
        plain(display.summary(multi)[1]).strip() == "pareto front (loss and size\\x1b[2J): none yet"
    )
    multi.pareto_front.extend([0, 1])
    line = plain(display.summary(multi)[1]).strip()
    assert line.startswith("pareto front (loss and size") and line.endswith("trials 0, 1")
    assert "\x1b" not in line
