"""What the `prism` command shows of a sweep: its live progress, one line per event, and tables.

Every string a sweep's answers carry may have been written by a trial (its metric names and
values, its failure's text, its artifact names), so each goes through `clean` before it reaches
a terminal, and into rich only as `Text` (never parsed as markup): a trial cannot move the
cursor, retitle the window or restyle the table.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from google.protobuf import json_format
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from prism.client import Event
from prism.v1 import orchestrator_pb2

# Outcomes in the order counts are shown, with their style.
OUTCOME_STYLES = {
    "succeeded": "green",
    # Stopped by the sweep's early-stopping rule: on purpose, not a failure.
    "pruned": "blue",
    "failed": "red",
    "timed_out": "yellow",
    "oom_killed": "yellow",
    "output_limit": "yellow",
    "cancelled": "dim",
    "sandbox_error": "magenta",
    "runner_lost": "magenta",
}
# Why a sweep stopped before its last trial (its stop_reason), with its style.
STOP_REASONS = {
    "target_reached": ("its target was reached", "green"),
    "deadline": ("its deadline passed", "yellow"),
    "search_failed": ("its sampler failed", "red"),
}
# The events that stop a sweep, by the stop_reason they set.
STOP_EVENTS = {
    "sweep_target_reached": "target_reached",
    "sweep_deadline_reached": "deadline",
    "sweep_search_failed": "search_failed",
}
MAX_RUNNING_ROWS = 8
MAX_CELL = 60


def clean(text: str, *, keep_newlines: bool = False) -> str:
    """The text with every control character shown as an escape (`\\x1b`), newlines and
    tabs kept when asked: safe to print to a terminal."""
    if text.isprintable():  # the common case, at C speed (a log can be 16 MiB)
        return text
    if keep_newlines:
        return "\n".join(_escaped(line, "\t") for line in text.split("\n"))
    return _escaped(text, "")


def _escaped(line: str, kept: str) -> str:
    if line.isprintable() or (kept and line.replace(kept, " ").isprintable()):
        return line
    return "".join(
        c if (c.isprintable() or c in kept) else c.encode("unicode_escape").decode() for c in line
    )


def short(value: Any, limit: int = MAX_CELL) -> str:
    """A value on one line, cleaned, cut to `limit` characters."""
    text = clean(value if isinstance(value, str) else _compact(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _compact(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))  # the API's numbers are doubles: 2.0 was written 2
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def params_text(params: Mapping[str, Any]) -> str:
    return " ".join(f"{name}={_compact(value)}" for name, value in sorted(params.items()))


def metrics_text(values: Mapping[str, Any]) -> str:
    """Metric values, `step` first, then by name (the API's objects keep no order)."""
    ordered = sorted(values.items(), key=lambda item: (item[0] != "step", item[0]))
    return " ".join(f"{name}={_compact(value)}" for name, value in ordered)


def seconds_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02}:{second:02}" if hours else f"{minute}:{second:02}"


def struct(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)


@dataclass
class TrialView:
    index: int
    params: dict[str, Any]
    state: str = "pending"
    outcome: str = ""
    reason: str = ""
    runner: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    last_metric: dict[str, Any] = field(default_factory=dict)
    started: float | None = None  # time.monotonic() when seen starting
    known: bool = False  # its metrics and outcome were read from the service
    # Where the sweep's early-stopping rule stopped it (the trial may still be stopping).
    pruned_step: int | None = None
    pruned_value: float | None = None

    @classmethod
    def of(cls, trial: orchestrator_pb2.Trial) -> TrialView:
        view = cls(trial.index, struct(trial.params))
        view.update(trial)
        return view

    def update(self, trial: orchestrator_pb2.Trial) -> None:
        self.state, self.outcome, self.reason = trial.state, trial.outcome, trial.reason
        self.runner, self.metrics = trial.runner, struct(trial.metrics)
        if trial.HasField("pruned_step"):
            self.pruned_step, self.pruned_value = trial.pruned_step, trial.pruned_value
        # An abridged trial (a large sweep's answer) comes without its result: read it alone.
        self.known = trial.state == "finished" and not trial.abridged


class Progress:
    """A sweep as its watcher sees it: built from the sweep's answer, then kept up by its
    events; a rich renderable (the live display) that the refresh thread may draw while the
    watch applies events."""

    def __init__(self, sweep: orchestrator_pb2.Sweep) -> None:
        self.sweep_id, self.task, self.state = sweep.id, sweep.spec.task, sweep.state
        self.metric = sweep.spec.objective.metric
        # Several objectives: no best, a Pareto front (read from the service).
        self.objectives = [o.metric for o in sweep.spec.objectives]
        self.front = list(sweep.pareto_front)
        self.maximize = sweep.spec.objective.goal == "maximize"
        self.created = sweep.create_time.ToSeconds() if sweep.HasField("create_time") else None
        self.trials = {t.index: TrialView.of(t) for t in sweep.trials}
        if sweep.HasField("best_trial"):  # whole even when the others are abridged
            self.trials[sweep.best_trial.index] = TrialView.of(sweep.best_trial)
        self.stop_reason = sweep.stop_reason
        self.search = _search_text(sweep.spec)
        self.prune_metric = sweep.spec.early_stopping.metric or self.metric
        # An adaptive search's trials are asked for as it goes: its budget is the total,
        # until it stops.
        searching = sweep.spec.HasField("search") and sweep.state == "running"
        budget = sweep.spec.search.trials if searching and not sweep.stop_reason else 0
        self.total = max(sweep.counts.total or len(self.trials), budget)
        self._lock = threading.Lock()

    # Keeping up.

    def apply(self, event: Event) -> int | None:
        """Take in one event; the index of a trial that has just finished and whose result
        the watcher should read (`finished`), if any."""
        with self._lock:
            index = event.trial_index
            trial = None if index is None else self.trials.setdefault(index, TrialView(index, {}))
            if event.kind == "sweep_created":
                self.total = int(event.data.get("trials", self.total))
            elif event.kind in STOP_EVENTS:
                self.stop_reason = STOP_EVENTS[event.kind]
            if event.final or event.kind in STOP_EVENTS:
                # No more trials are asked for: the ones there are, are all there will be.
                self.total = len(self.trials) or self.total
            if event.final:
                self.state = event.sweep_state or self.state
            if trial is None:
                return None
            if event.kind == "trial_queued":
                # An adaptive search's trial: its parameters as the sampler chose them.
                params = event.data.get("params")
                if isinstance(params, dict) and not trial.params:
                    trial.params = params
            elif event.kind == "trial_started":
                trial.state, trial.started = "running", time.monotonic()
                trial.runner = str(event.data.get("runner", ""))
            elif event.kind in ("trial_requeued", "trial_retrying"):
                trial.state, trial.started = "pending", None
            elif event.kind == "metric":
                values = event.data.get("values")
                trial.last_metric = values if isinstance(values, dict) else {}
            elif event.kind == "trial_pruned":
                step, value = event.data.get("step"), event.data.get("value")
                trial.pruned_step = int(step) if _number(step) else None
                trial.pruned_value = float(value) if _number(value) else None
            elif event.kind == "trial_finished":
                trial.state = "finished"
                trial.outcome = str(event.data.get("outcome", ""))
                trial.reason = str(event.data.get("reason", ""))
                return None if trial.known else index
            return None

    def finished(self, trial: orchestrator_pb2.Trial) -> None:
        with self._lock:
            view = self.trials.setdefault(trial.index, TrialView.of(trial))
            view.update(trial)

    # Reading.

    def value(self, trial: TrialView) -> float | None:
        value = trial.metrics.get(self.metric) if self.metric else None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return None

    def best(self) -> TrialView | None:
        scored = [
            (value, t.index, t)
            for t in self.trials.values()
            if t.outcome == "succeeded" and (value := self.value(t)) is not None
        ]
        if not scored:
            return None
        pick = max if self.maximize else min
        return pick(scored, key=lambda s: (s[0], -s[1]) if self.maximize else (s[0], s[1]))[2]

    def outcomes(self) -> Counter[str]:
        return Counter(t.outcome for t in self.trials.values() if t.outcome)

    def finished_count(self) -> int:
        return sum(1 for t in self.trials.values() if t.state == "finished")

    def counts_text(self) -> Text:
        text = Text()
        running = sum(1 for t in self.trials.values() if t.state in ("running", "dispatched"))
        pending = self.total - self.finished_count() - running
        parts = [(f"{n} {o}", OUTCOME_STYLES.get(o, "")) for o, n in self._ordered()]
        parts += [(f"{running} running", "cyan")] if running else []
        parts += [(f"{pending} pending", "dim")] if pending > 0 else []
        for i, (part, style) in enumerate(parts):
            text.append(" · " if i else "")
            text.append(clean(part), style=style)
        return text

    def _ordered(self) -> list[tuple[str, int]]:
        counts = self.outcomes()
        known = [(o, counts[o]) for o in OUTCOME_STYLES if counts[o]]
        return known + sorted((o, n) for o, n in counts.items() if o not in OUTCOME_STYLES)

    def stop_text(self) -> Text:
        """Why the sweep stopped before its last trial; empty if it did not."""
        if not self.stop_reason:
            return Text("")
        why, style = STOP_REASONS.get(self.stop_reason, (short(self.stop_reason), ""))
        return Text(f"stopped early: {why}", style=style)

    def best_text(self) -> Text:
        if self.objectives:
            names = " and ".join(short(name) for name in self.objectives)
            if not self.front:
                return Text(f"pareto front ({names}): none yet", style="dim")
            shown = ", ".join(str(i) for i in self.front[:20])
            more = f" and {len(self.front) - 20} more" if len(self.front) > 20 else ""
            return Text(f"pareto front ({names}): trials {shown}{more}", style="bold green")
        if not self.metric:
            return Text("best: no objective (give the spec an objective metric)", style="dim")
        top = self.best()
        if top is None:
            return Text("best: none yet", style="dim")
        line = f"best: trial {top.index} · {self.metric} {_compact(self.value(top))}"
        return Text(clean(f"{line} · {params_text(top.params)}"), style="bold green")

    def __rich__(self) -> RenderableType:
        with self._lock:
            finished = self.finished_count()
            header = Text()
            header.append(f"sweep {self.sweep_id}", style="bold")
            header.append(f" · {short(self.task)} · {self.state}")
            if self.search:
                header.append(f" · {self.search}", style="dim")
            bar = Table.grid(padding=(0, 1))
            bar.add_row(
                ProgressBar(total=max(self.total, 1), completed=finished, width=40),
                Text(f"{finished}/{self.total} trials"),
                Text(seconds_text(time.time() - self.created) if self.created else ""),
            )
            parts: list[RenderableType] = [header, bar, self.counts_text(), self.best_text()]
            parts += [self.stop_text()] if self.stop_reason else []
            return Group(*parts, self._running())

    def _running(self) -> RenderableType:
        running = sorted(
            (t for t in self.trials.values() if t.state == "running"), key=lambda t: t.index
        )
        if not running:
            return Text("")
        table = Table(title=None, box=None, header_style="bold", pad_edge=False)
        for column in ("trial", "params", "runner", "time", "last metric"):
            table.add_column(column)
        now = time.monotonic()
        for t in running[:MAX_RUNNING_ROWS]:
            last = Text(short(metrics_text(t.last_metric)))
            if t.pruned_step is not None:  # stopping: its runner has been told
                last = Text(f"pruned at step {t.pruned_step}", style=OUTCOME_STYLES["pruned"])
            table.add_row(
                str(t.index),
                Text(short(params_text(t.params))),
                Text(short(t.runner, 20)),
                seconds_text(now - t.started) if t.started is not None else "",
                last,
            )
        if len(running) > MAX_RUNNING_ROWS:
            table.add_row("…", f"and {len(running) - MAX_RUNNING_ROWS} more")
        return table

    # One line per event, for a log or a pipe.

    def line(self, event: Event) -> str | None:
        """The event as one plain line (None for events not worth one)."""
        trial = f"trial {event.trial_index}"
        data = event.data
        if event.kind == "sweep_created":
            return f"sweep {self.sweep_id}: {self.total} trials"
        if event.kind == "trial_started":
            return f"{trial} started on {short(data.get('runner', '?'), 40)}"
        if event.kind == "metric":
            values = data.get("values")
            if not isinstance(values, dict):
                return None
            return f"{trial} {short(metrics_text(values), 200)}"
        if event.kind == "trial_finished":
            view = self.trials.get(event.trial_index or 0)
            value = None if view is None else self.value(view)
            shown = f" {self.metric}={_compact(value)}" if value is not None else ""
            failed = data.get("reason") and data.get("outcome") != "succeeded"
            reason = f": {short(data.get('reason', ''), 200)}" if failed else ""
            return f"{trial} {short(data.get('outcome', '?'), 20)}{shown}{reason}"
        if event.kind in ("trial_requeued", "trial_retrying"):
            return f"{trial} {event.kind.removeprefix('trial_')}: {short(data.get('reason', ''))}"
        if event.kind == "trial_pruned":
            reached = f"{short(self.prune_metric, 40)}={short(data.get('value', '?'))}"
            return f"{trial} pruned at step {short(data.get('step', '?'))}: {reached}"
        if event.kind == "sweep_target_reached":
            reached = f"{short(self.metric, 40)}={short(data.get('value', '?'))}"
            by = f"trial {short(data.get('trial', '?'))}"
            return f"sweep {self.sweep_id} reached its target: {by} {reached}"
        if event.kind == "sweep_deadline_reached":
            seconds = data.get("seconds")
            after = f" after {_compact(seconds)} s" if _number(seconds) else ""
            return f"sweep {self.sweep_id} passed its deadline{after}: stopping its trials"
        if event.kind == "sweep_search_failed":
            return f"sweep {self.sweep_id}: its sampler failed: {short(data.get('error', ''), 200)}"
        if event.final:
            return f"sweep {self.sweep_id} {event.sweep_state or event.kind}"
        return None


def summary(sweep: orchestrator_pb2.Sweep) -> list[Text]:
    """A finished (or running) sweep in a few lines: its counts by outcome, its best trial
    and why it stopped early, if it did."""
    progress = Progress(sweep)
    head = Text(f"sweep {sweep.id} {sweep.state}: ", style="bold")
    lines = [head + progress.counts_text(), progress.best_text()]
    return [*lines, progress.stop_text()] if sweep.stop_reason else lines


def _search_text(spec: orchestrator_pb2.SweepSpec) -> str:
    """An adaptive search's sampler and early-stopping rule, in a few words."""
    if not spec.HasField("search"):
        return ""
    text = f"{short(spec.search.sampler or 'tpe', 20)} search"
    if spec.HasField("early_stopping"):
        text += f", {short(spec.early_stopping.rule, 20)} pruning"
    return text


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def trials_table(sweep: orchestrator_pb2.Sweep) -> Table:
    """Every trial of the sweep, the best one marked."""
    progress = Progress(sweep)
    best = progress.best()
    names = sorted({name for t in progress.trials.values() for name in t.params})
    table = Table(header_style="bold", box=None, pad_edge=False)
    table.add_column("trial", justify="right")
    table.add_column("outcome")
    for name in names:
        table.add_column(Text(short(name, 24)), justify="right")
    if progress.metric:
        table.add_column(Text(short(progress.metric, 24)), justify="right")
    pruning = any(t.pruned_step is not None for t in progress.trials.values())
    if pruning:
        table.add_column("pruned at step", justify="right")
    table.add_column("time", justify="right")
    table.add_column("runner")
    table.add_column("reason")
    durations = {t.index: t.duration_seconds for t in sweep.trials}
    for t in sorted(progress.trials.values(), key=lambda t: t.index):
        status = t.outcome or t.state
        row: list[Any] = [
            f"★ {t.index}" if t is best else str(t.index),
            Text(short(status, 20), style=OUTCOME_STYLES.get(t.outcome, "")),
        ]
        row += [Text(short(t.params.get(n, ""), 24)) for n in names]
        if progress.metric:
            value = progress.value(t)
            row.append("" if value is None else _compact(value))
        if pruning:
            row.append("" if t.pruned_step is None else str(t.pruned_step))
        seconds = durations.get(t.index, 0.0)
        row += [f"{seconds:.1f}s" if seconds else "", Text(short(t.runner, 20))]
        row.append(Text(short(t.reason, 80) if t.outcome != "succeeded" else ""))
        table.add_row(*row, style="bold" if t is best else None)
    return table


def sweeps_table(sweeps: Iterable[orchestrator_pb2.Sweep], now: float) -> Table:
    """The sweeps, one a row; a column of pruned trials when any sweep has some."""
    sweeps = list(sweeps)
    pruning = any(sweep.counts.pruned for sweep in sweeps)
    table = Table(header_style="bold", box=None, pad_edge=False)
    table.add_column("id", no_wrap=True)
    for column in ("state", "trials", "succeeded", *(["pruned"] if pruning else []), "age"):
        right = column in ("trials", "succeeded", "pruned")
        table.add_column(
            column, justify="right" if right else "left", no_wrap=True, min_width=len(column)
        )
    table.add_column("task", overflow="ellipsis", no_wrap=True)
    for sweep in sweeps:
        counts = sweep.counts
        age = now - sweep.create_time.ToSeconds() if sweep.HasField("create_time") else 0
        table.add_row(
            sweep.id,
            Text(sweep.state, style={"done": "green", "error": "red"}.get(sweep.state, "")),
            f"{counts.finished}/{counts.total}",
            str(counts.succeeded),
            *([str(counts.pruned)] if pruning else []),
            _age(age),
            Text(short(sweep.spec.task)),
        )
    return table


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"
