"""Adaptive search through the whole stack on known problems, as ratios (issue 11).

    PYTHONPATH=. .venv/bin/python bench/search.py [--trials 30] [--seeds 3] [--parallel 4]
        [--curve-trials 24] [--quick]

1. TPE against random on Branin (2-D, x in [-5, 10], y in [0, 15], optimum 0.397887):
   the best value after --trials trials, --parallel at a time, median over --seeds
   seeds, for Prism's "tpe" and "random" samplers, and their ratio (random's regret /
   TPE's, regret = best - 0.397887). Beside them the same searches with Optuna alone,
   in this process: sequential (TPESampler(seed) / RandomSampler(seed), same number of
   trials), and TPE with --parallel trials in flight (constant liar, the oldest told
   first, as Prism runs it), so the figure shows what Prism's distribution and
   sandboxing cost or keep: the ratio of Prism-TPE's regret to in-process TPE's, and
   the wall time of each. (Prism's sampler for trial n is seeded from (seed, n), so
   its TPE's first ten trials, drawn at random, are its random search's first ten.)
   A few seeds' medians stray far, so Optuna alone's median regret over
   REFERENCE_SEEDS seeds is printed too, as the yardstick.
2. ASHA against no pruning on synthetic learning curves with a known best
   configuration: loss(step) = final + (2.5 - final) * exp(-step / tau), 20 steps,
   each after a fixed sleep and printed as a PRISM_METRIC line. final is lowest, 0.1,
   at lr = 1e-2, momentum = 0.9; tau grows a little as lr shrinks (4.5 to 5.5), so
   curves cross a little, as real ones do, and an early rung can misjudge. The same
   sampler ("random", same seed: both runs see the same parameter sets) with and
   without {"earlyStopping": {"rule": "asha", "minResource": 1, "reductionFactor": 3}}.
   Reported: the trial-seconds spent (sum of the trials' durationSeconds, measured by
   the runner's host) and steps run, the best found by each, the ratio no-pruning /
   ASHA (medians over the seeds); whether ASHA kept the no-pruning best trial, else
   how far its best is above that one (the tolerance: 0.02 of loss). Beside them,
   Optuna alone with SuccessiveHalvingPruner on the same parameter sets, sequential, the curves
   evaluated without sleeping, counting steps; and a check that Prism pruned exactly
   what Optuna prunes when told the recorded metrics in the order Prism recorded them
   (its events): trials in parallel reach each rung in an order of their own, so
   Prism's prunings may differ from the sequential run's, never from that replay's.

The stack is real: Envoy, the orchestrator, three runner processes (four slots each),
SQLite, the engine, each trial a hardened container; on free loopback ports in a
temporary folder, stopped at the end, even on error. A warm-up sweep, not counted,
comes first; sweeps of the two arms are interleaved (their order alternating by seed),
so drift affects both alike. Timings are only as good as the host is quiet: the load
average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Api, engine
from prism.stack import GATEWAY, Layout, Stack
from sandbox.container import OWNER_LABEL
from sandbox.images import ensure_sandbox_image

BRANIN_OPTIMUM = 0.397887357729738
REFERENCE_SEEDS = 40
BRANIN_SPACE = {"x": {"uniform": [-5, 10]}, "y": {"uniform": [0, 15]}}
BRANIN_SCRIPT = """
import json, math, os
p = json.loads(os.environ["PRISM_PARAMS"])
x, y = p["x"], p["y"]
b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
print(json.dumps({"loss": (y - b * x * x + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10}))
"""

STEPS = 20
STEP_SECONDS = 0.1
CURVE_SPACE = {"lr": {"loguniform": [1e-4, 1]}, "momentum": {"uniform": [0, 1]}}
# The best loss at the last step: 0.143918, at lr = 0.0102, momentum = 0.9 (a grid of
# 4001 x 201 points; final alone is lowest, 0.1, at lr = 1e-2, momentum = 0.9).
CURVE_OPTIMUM = 0.143918
# ASHA's best may be above the no-pruning best by at most this much loss (the loss at the
# last step spans 0.144 to 3.71 over the space: this is 0.6 % of that).
CURVE_TOLERANCE = 0.02
# The curve, the same text in the trial and here (exec'd), so both evaluate one function.
CURVE = """
import math
def curve(lr, momentum, step):
    final = 0.1 + 0.5 * (math.log10(lr) + 2) ** 2 + 2 * (momentum - 0.9) ** 2
    tau = 4.5 - 0.25 * math.log10(lr)
    return final + (2.5 - final) * math.exp(-step / tau)
"""
CURVE_SCRIPT = (
    CURVE
    + f"""
import json, os, time
p = json.loads(os.environ["PRISM_PARAMS"])
for step in range(1, {STEPS} + 1):
    time.sleep({STEP_SECONDS})
    loss = curve(p["lr"], p["momentum"], step)
    print("PRISM_METRIC " + json.dumps({{"step": step, "loss": loss}}), flush=True)
print(json.dumps({{"loss": loss}}))
"""
)
MIN_RESOURCE, REDUCTION_FACTOR = 1, 3
ASHA = {
    "rule": "asha",
    "metric": "loss",
    "goal": "minimize",
    "stepKey": "step",
    "minResource": MIN_RESOURCE,
    "reductionFactor": REDUCTION_FACTOR,
}
_scope: dict[str, Any] = {}
exec(compile(CURVE, "curve", "exec"), _scope)
curve: Callable[[float, float, int], float] = _scope["curve"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def branin(x: float, y: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x * x + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def wall(shown: dict[str, Any]) -> float:
    """Create to finish, as the orchestrator recorded them."""
    return seconds(shown["finishTime"]) - seconds(shown["createTime"])


def best_loss(shown: dict[str, Any]) -> float:
    return float(shown["bestTrial"]["metrics"]["loss"])


def check_trials(shown: dict[str, Any], trials: int, *, pruning: bool = False) -> None:
    """Every trial ran and ended as it should; the answer's summaries agree with them."""
    outcomes = [t.get("outcome") for t in shown["trials"]]
    allowed = {"succeeded", "pruned"} if pruning else {"succeeded"}
    if len(outcomes) != trials or not set(outcomes) <= allowed:
        raise RuntimeError(f"sweep {shown['id']}: {len(outcomes)} trials, outcomes {outcomes}")
    succeeded = [
        float(t["metrics"]["loss"]) for t in shown["trials"] if t["outcome"] == "succeeded"
    ]
    if not succeeded:
        raise RuntimeError(f"sweep {shown['id']}: no trial succeeded")
    history = shown.get("history", [])
    problems = []
    if int(shown["counts"].get("pruned", 0)) != outcomes.count("pruned"):
        problems.append(f"counts.pruned {shown['counts']} for {outcomes.count('pruned')} pruned")
    if len(history) != len(succeeded) or float(history[-1]["bestValue"]) != min(succeeded):
        problems.append(f"history {history[-1:]} for {len(succeeded)} succeeded trials")
    if best_loss(shown) != min(succeeded):
        problems.append(f"bestTrial {best_loss(shown)}, the best succeeded {min(succeeded)}")
    if problems:
        raise RuntimeError(f"sweep {shown['id']}: " + "; ".join(problems))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


# --- 1. Branin -------------------------------------------------------------------


def branin_spec(sampler: str, trials: int, seed: int, parallel: int) -> dict[str, Any]:
    return {
        "task": f"bench search: branin {sampler} seed {seed}",
        "script": BRANIN_SCRIPT,
        "parameters": {"random": {"parameters": BRANIN_SPACE}},
        "objective": {"metric": "loss", "goal": "minimize"},
        "search": {"sampler": sampler, "trials": trials, "seed": seed},
        "maxParallel": parallel,
    }


def in_process(
    sampler: optuna.samplers.BaseSampler, trials: int, in_flight: int = 1
) -> tuple[float, float]:
    """Optuna alone on Branin, `in_flight` trials asked before the oldest is told (1:
    sequential): (best value, wall seconds)."""
    started = time.perf_counter()
    study = optuna.create_study(direction="minimize", sampler=sampler)
    space: dict[str, BaseDistribution] = {
        "x": FloatDistribution(-5, 10),
        "y": FloatDistribution(0, 15),
    }
    flying: collections.deque[optuna.Trial] = collections.deque()

    def tell_oldest() -> None:
        oldest = flying.popleft()
        study.tell(oldest, branin(oldest.params["x"], oldest.params["y"]))

    for _ in range(trials):
        flying.append(study.ask(space))
        if len(flying) == in_flight:
            tell_oldest()
    while flying:
        tell_oldest()
    assert not flying and len(study.trials) == trials
    return study.best_value, time.perf_counter() - started


@dataclass
class Arm:
    best: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def regret(self) -> float:
        return max(median(self.best) - BRANIN_OPTIMUM, 1e-12)


def bench_branin(api: Api, seeds: list[int], trials: int, parallel: int) -> dict[str, Arm]:
    names = ("prism tpe", "prism random", "optuna tpe", "optuna random", "optuna tpe parallel")
    arms = {name: Arm() for name in names}
    for i, seed in enumerate(seeds):
        order = ["tpe", "random"] if i % 2 == 0 else ["random", "tpe"]
        for sampler in order:
            shown = api.run(branin_spec(sampler, trials, seed, parallel))
            check_trials(shown, trials)
            got = best_loss(shown)
            # The best trial's value is the function's at its params.
            p = shown["bestTrial"]["params"]
            assert abs(branin(p["x"], p["y"]) - got) < 1e-9, (p, got)
            arms[f"prism {sampler}"].best.append(got)
            arms[f"prism {sampler}"].seconds.append(wall(shown))
            print(f"  seed {seed} prism {sampler:13}: best {got:.6f} in {wall(shown):.1f} s")
        for name, made, in_flight in (
            ("tpe", optuna.samplers.TPESampler(seed=seed), 1),
            ("random", optuna.samplers.RandomSampler(seed=seed), 1),
            ("tpe parallel", optuna.samplers.TPESampler(seed=seed, constant_liar=True), parallel),
        ):
            value, took = in_process(made, trials, in_flight)
            arms[f"optuna {name}"].best.append(value)
            arms[f"optuna {name}"].seconds.append(took)
            print(f"  seed {seed} optuna {name:12}: best {value:.6f} in {took:.2f} s")
    return arms


def reference(trials: int, parallel: int) -> dict[str, float]:
    """Optuna alone's median regret over REFERENCE_SEEDS seeds: how far a few seeds'
    medians may stray."""
    samplers: dict[str, tuple[Callable[[int], optuna.samplers.BaseSampler], int]] = {
        "tpe": (lambda seed: optuna.samplers.TPESampler(seed=seed), 1),
        "random": (lambda seed: optuna.samplers.RandomSampler(seed=seed), 1),
        "tpe parallel": (
            lambda seed: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
            parallel,
        ),
    }
    return {
        name: median(
            [
                in_process(make(seed), trials, in_flight)[0] - BRANIN_OPTIMUM
                for seed in range(1, REFERENCE_SEEDS + 1)
            ]
        )
        for name, (make, in_flight) in samplers.items()
    }


# --- 2. ASHA on learning curves ----------------------------------------------------


def curve_spec(trials: int, seed: int, parallel: int, *, asha: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": f"bench search: curves {'asha' if asha else 'no pruning'} seed {seed}",
        "script": CURVE_SCRIPT,
        "parameters": {"random": {"parameters": CURVE_SPACE}},
        "objective": {"metric": "loss", "goal": "minimize"},
        "search": {"sampler": "random", "trials": trials, "seed": seed},
        "maxParallel": parallel,
    }
    if asha:
        spec["earlyStopping"] = ASHA
    return spec


@dataclass
class CurveRun:
    trial_seconds: float
    steps: int
    best: float
    best_index: int
    pruned: int
    wall: float
    # Medians: a trial's start to exit less its 20 sleeps (ran to its end); a pruned
    # trial's start to exit less the sleeps up to the step it was pruned at.
    overhead: float
    overrun: float


def index(trial: dict[str, Any]) -> int:
    return int(trial.get("index", 0))


def rungs(last: int) -> list[int]:
    """The steps ASHA judges up to `last`: MIN_RESOURCE times a power of
    REDUCTION_FACTOR (its rungs, where it decides)."""
    found, step = [], MIN_RESOURCE
    while step <= last:
        found.append(step)
        step *= REDUCTION_FACTOR
    return found


def check_steps(shown: dict[str, Any]) -> None:
    """In an ASHA sweep, a trial that ran to its end was told every rung's step, a pruned
    one every rung's step up to the one it was pruned at, that one last, with its value."""
    for t in shown["trials"]:
        told = [(int(v["step"]), float(v["value"])) for v in t.get("intermediateValues", [])]
        if t["outcome"] == "pruned":
            expected = rungs(int(t["prunedStep"]))
            last_ok = bool(told) and told[-1][1] == float(t["prunedValue"])
        else:
            expected, last_ok = rungs(STEPS), True
        if [step for step, _ in told] != expected or not last_ok:
            raise RuntimeError(f"sweep {shown['id']} trial {index(t)}: told {told} of {t}")


def curve_run(shown: dict[str, Any], *, asha: bool) -> CurveRun:
    trials = shown["trials"]
    if asha:
        # The steps run: every step of a trial that ran to its end, up to the step it
        # was pruned at otherwise.
        steps = sum(int(t["prunedStep"]) if t["outcome"] == "pruned" else STEPS for t in trials)
    else:
        steps = STEPS * len(trials)
    seconds = [float(t.get("durationSeconds", 0.0)) for t in trials]
    ended = [
        s - STEPS * STEP_SECONDS
        for t, s in zip(trials, seconds, strict=True)
        if t["outcome"] == "succeeded"
    ]
    overrun = [
        s - int(t["prunedStep"]) * STEP_SECONDS
        for t, s in zip(trials, seconds, strict=True)
        if t["outcome"] == "pruned"
    ]
    return CurveRun(
        trial_seconds=sum(seconds),
        steps=steps,
        best=best_loss(shown),
        best_index=index(shown["bestTrial"]),
        pruned=int(shown["counts"].get("pruned", 0)),
        wall=wall(shown),
        overhead=median(ended) if ended else math.nan,
        overrun=median(overrun) if overrun else math.nan,
    )


def simulate(params: list[dict[str, float]]) -> tuple[int, float]:
    """Optuna alone with SuccessiveHalvingPruner on these parameter sets, in order,
    one trial after the other, no sleeping: (steps evaluated, best final loss).

    (Trials run side by side in lockstep would reach each rung in the same order, by
    index, so ASHA would decide exactly the same: only asynchronous arrival, as in
    Prism, changes what it prunes.)"""
    study = optuna.create_study(direction="minimize", pruner=sha_pruner())
    steps = 0
    for p in params:
        study.enqueue_trial(p)
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-4, 1, log=True)
        momentum = trial.suggest_float("momentum", 0, 1)
        for step in range(1, STEPS + 1):
            loss = curve(lr, momentum, step)
            steps += 1
            trial.report(loss, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, loss)
    return steps, study.best_value


def sha_pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=MIN_RESOURCE, reduction_factor=REDUCTION_FACTOR
    )


def replay(events: list[dict[str, Any]], trials: int) -> dict[int, int]:
    """The step at which Optuna alone prunes each trial it prunes, told the metrics in
    the order the orchestrator recorded them (its events): what Prism's rule must have
    decided. As in Prism, only the rungs' steps are told, a step not above the
    trial's last one is not, nor is anything after the trial was pruned."""
    study = optuna.create_study(direction="minimize", pruner=sha_pruner())
    handles = [study.ask() for _ in range(trials)]
    last: dict[int, int] = {}
    pruned: dict[int, int] = {}
    for event in events:
        if event.get("kind") != "metric":
            continue
        index = int(event.get("trialIndex", 0))
        values = event["data"]["values"]
        step, loss = int(values["step"]), float(values["loss"])
        if index in pruned or step <= last.get(index, -1) or step not in rungs(step):
            continue
        last[index] = step
        handles[index].report(loss, step)
        if handles[index].should_prune():
            pruned[index] = step
            study.tell(handles[index], state=optuna.trial.TrialState.PRUNED)
    return pruned


@dataclass
class CurveArms:
    plain: list[CurveRun] = field(default_factory=list)
    asha: list[CurveRun] = field(default_factory=list)
    same_best: int = 0
    worst_gap: float = 0.0
    worst_relative: float = 0.0
    alone_steps: list[int] = field(default_factory=list)
    alone_best: list[float] = field(default_factory=list)
    # Seeds whose pruning decisions an in-process replay of the recorded metrics made too.
    replayed: int = 0


def bench_curves(api: Api, seeds: list[int], trials: int, parallel: int) -> CurveArms:
    arms = CurveArms()
    for i, seed in enumerate(seeds):
        shown: dict[bool, dict[str, Any]] = {}
        for asha in (False, True) if i % 2 == 0 else (True, False):
            shown[asha] = api.run(curve_spec(trials, seed, parallel, asha=asha))
            check_trials(shown[asha], trials, pruning=asha)
            if asha:
                check_steps(shown[asha])
        params = {
            asha: [t["params"] for t in sorted(shown[asha]["trials"], key=index)] for asha in shown
        }
        if params[True] != params[False]:
            raise RuntimeError(f"seed {seed}: the two runs were given different parameter sets")
        plain, asha_run = curve_run(shown[False], asha=False), curve_run(shown[True], asha=True)
        arms.plain.append(plain)
        arms.asha.append(asha_run)
        arms.same_best += plain.best_index == asha_run.best_index
        arms.worst_gap = max(arms.worst_gap, asha_run.best - plain.best)
        arms.worst_relative = max(arms.worst_relative, (asha_run.best - plain.best) / plain.best)
        steps, value = simulate(params[False])
        arms.alone_steps.append(steps)
        arms.alone_best.append(value)
        for name, run in (("no pruning", plain), ("asha", asha_run)):
            print(
                f"  seed {seed} prism {name:10}: {run.trial_seconds:6.1f} trial-s, "
                f"{run.steps:4} steps, {run.pruned:2} pruned, best {run.best:.4f} "
                f"(trial {run.best_index}), wall {run.wall:.1f} s"
            )
        print(f"  seed {seed} optuna alone: {steps} steps of {STEPS * trials}, best {value:.4f}")
        decided = {
            index(t): int(t["prunedStep"]) for t in shown[True]["trials"] if "prunedStep" in t
        }
        expected = replay(api.events(shown[True]["id"]), trials)
        if decided == expected:
            arms.replayed += 1
        else:
            print(
                f"  seed {seed} MISMATCH: Prism pruned (trial: step) {decided}, "
                f"Optuna told the same metrics in the same order {expected}"
            )
    return arms


# --- The stack and the report -------------------------------------------------------


def report(
    args: argparse.Namespace,
    seeds: list[int],
    branin_arms: dict[str, Arm],
    wide: dict[str, float],
    curves: CurveArms,
    took: float,
) -> None:
    tpe, rnd = branin_arms["prism tpe"], branin_arms["prism random"]
    otpe, ornd = branin_arms["optuna tpe"], branin_arms["optuna random"]
    ptpe = branin_arms["optuna tpe parallel"]
    n, full = len(seeds), STEPS * args.curve_trials
    plain_s = median([r.trial_seconds for r in curves.plain])
    asha_s = median([r.trial_seconds for r in curves.asha])
    asha_steps = median([float(r.steps) for r in curves.asha])
    alone_steps = median([float(k) for k in curves.alone_steps])
    plain_best, asha_best = (median([r.best for r in runs]) for runs in (curves.plain, curves.asha))
    overhead = median([r.overhead for r in curves.plain])
    overrun = median([r.overrun for r in curves.asha if not math.isnan(r.overrun)] or [math.nan])
    plain_wall, asha_wall = (median([r.wall for r in runs]) for runs in (curves.plain, curves.asha))
    branin_title = f"1. Branin, best of {args.trials} trials, maxParallel {args.parallel}"
    curves_title = f"2. Curves, {args.curve_trials} trials x {STEPS} steps x {STEP_SECONDS} s"
    tolerance = f"{curves.worst_relative:.1%} of it; tolerance {CURVE_TOLERANCE}"
    rows = [
        (f"{branin_title} (medians of {n} seeds)", "", ""),
        ("Prism TPE: best", f"{median(tpe.best):.6f}", f"regret {tpe.regret:.2e}"),
        ("Prism random: best", f"{median(rnd.best):.6f}", f"regret {rnd.regret:.2e}"),
        ("ratio random regret / TPE regret (Prism)", f"{rnd.regret / tpe.regret:.2f}", "> 1"),
        ("Optuna in-process TPE: best", f"{median(otpe.best):.6f}", f"regret {otpe.regret:.2e}"),
        ("Optuna in-process random: best", f"{median(ornd.best):.6f}", f"regret {ornd.regret:.2e}"),
        ("ratio random regret / TPE regret (in-process)", f"{ornd.regret / otpe.regret:.2f}", ""),
        ("ratio Prism-TPE regret / in-process TPE regret", f"{tpe.regret / otpe.regret:.2f}", "~1"),
        (
            f"Optuna in-process TPE, {args.parallel} in flight: best",
            f"{median(ptpe.best):.6f}",
            f"regret {ptpe.regret:.2e}",
        ),
        (
            f"ratio Prism-TPE regret / in-process {args.parallel} in flight",
            f"{tpe.regret / ptpe.regret:.2f}",
            "~1",
        ),
        (
            f"in-process regret, {REFERENCE_SEEDS} seeds: TPE",
            f"{wide['tpe']:.2e}",
            f"random {wide['random']:.2e}, {args.parallel} in flight {wide['tpe parallel']:.2e}",
        ),
        ("wall, Prism TPE sweep", f"{median(tpe.seconds):.1f} s", "create to finish"),
        ("wall, Prism random sweep", f"{median(rnd.seconds):.1f} s", ""),
        ("wall, in-process TPE", f"{median(otpe.seconds):.3f} s", "sequential"),
        ("wall, in-process random", f"{median(ornd.seconds):.3f} s", ""),
        (f"{curves_title} (medians of {n} seeds)", "", ""),
        ("Prism no pruning: trial-seconds", f"{plain_s:.1f} s", f"{full} steps"),
        ("Prism ASHA: trial-seconds", f"{asha_s:.1f} s", f"{asha_steps:.0f} steps run"),
        ("ratio trial-seconds no pruning / ASHA", f"{ratio(plain_s, asha_s):.2f}", "> 1"),
        ("ratio steps no pruning / ASHA (Prism)", f"{ratio(full, asha_steps):.2f}", ""),
        ("ratio steps, Optuna alone (sequential)", f"{ratio(full, alone_steps):.2f}", ""),
        ("Prism no pruning: best", f"{plain_best:.4f}", f"optimum {CURVE_OPTIMUM}"),
        ("Prism ASHA: best", f"{asha_best:.4f}", ""),
        ("Optuna alone: best", f"{median(curves.alone_best):.4f}", ""),
        ("ASHA kept the no-pruning best trial", f"{curves.same_best}/{n} seeds", ""),
        ("ASHA best above no-pruning best, at most", f"{curves.worst_gap:.4f}", tolerance),
        ("Prism's prunings = Optuna's, same metrics", f"{curves.replayed}/{n} seeds", "replayed"),
        ("trial start to exit less its sleeps", f"{overhead:.2f} s", "no pruning"),
        ("pruned trial ran on past its pruning step", f"{overrun:.2f} s", "ASHA"),
        ("wall, Prism no pruning sweep", f"{plain_wall:.1f} s", "create to finish"),
        ("wall, Prism ASHA sweep", f"{asha_wall:.1f} s", ""),
    ]
    width = max(len(r[0]) for r in rows if r[1])
    print()
    for name, value, note in rows:
        if not value:
            print(f"\n{name}")
        else:
            print(f"  {name:<{width}}  {value:>14}  {note}".rstrip())
    print()
    verdict = "within" if curves.worst_gap <= CURVE_TOLERANCE else "OUTSIDE"
    print(
        f"ASHA's best is {verdict} {CURVE_TOLERANCE} (loss) of the no-pruning best in every seed."
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"total {took:.0f} s on {os.cpu_count()} cores; load average at the end {load}")
    print(
        f"reproduce: PYTHONPATH=. .venv/bin/python bench/search.py --trials {args.trials} "
        f"--seeds {args.seeds} --parallel {args.parallel} --curve-trials {args.curve_trials}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=None, help="Branin trials (30)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds, each a round (3)")
    parser.add_argument("--parallel", type=int, default=4, help="maxParallel (4)")
    parser.add_argument("--curve-trials", type=int, default=None, help="curve trials (24)")
    parser.add_argument(
        "--quick", action="store_true", help="a smaller run: 20 trials, 2 seeds, 12 curves"
    )
    args = parser.parse_args()
    quick = {"trials": 20, "seeds": 2, "curve_trials": 12}
    full = {"trials": 30, "seeds": 3, "curve_trials": 24}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    seeds = list(range(1, args.seeds + 1))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} cores; load average at the start {load} (timings need a quiet host)")
    started = time.perf_counter()
    with closing(engine()) as client, tempfile.TemporaryDirectory() as tmp:
        image = ensure_sandbox_image(client)
        layout = Layout.on_free_ports(
            Path(tmp), image, extra_env={"PRISM_RUNNER_DRAIN_SECONDS": "2"}
        )
        stack = Stack(layout)
        try:
            stack.up()
            api = Api(layout.address(GATEWAY), stack.api_token())
            # Warm-up, not counted: the first containers, the samplers' first asks.
            api.run(branin_spec("tpe", 3 * args.parallel, 0, args.parallel))
            print(f"1. Branin: {args.trials} trials, maxParallel {args.parallel}, seeds {seeds}")
            branin_arms = bench_branin(api, seeds, args.trials, args.parallel)
            print(f"2. Curves: {args.curve_trials} trials of {STEPS} steps x {STEP_SECONDS} s")
            curves = bench_curves(api, seeds, args.curve_trials, args.parallel)
            wide = reference(args.trials, args.parallel)
        finally:
            stack.down()
            for runner in layout.runners:  # only this stack's runners' containers
                for container in client.containers.list(
                    all=True, filters={"label": f"{OWNER_LABEL}={runner}"}
                ):
                    container.remove(force=True)
    report(args, seeds, branin_arms, wide, curves, time.perf_counter() - started)


if __name__ == "__main__":
    main()
