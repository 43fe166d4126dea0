"""Adaptive search: Optuna's samplers and pruners as a library, their state in the store.

One Optuna study per adaptive sweep, kept in a JournalStorage whose journal is the
store's `SearchLog` rows for that sweep (the `write` callable inserts them). Every
Optuna call runs on the store's thread inside the store transaction that records what
it decided, so the journal and the sweep's trials commit together or not at all: a
parameter set is asked for in the transaction that records the trial it becomes, a
result is told in the one that ends the trial, a pruning decision is taken in the one
that marks the trial pruned. After a crash the study is the journal replayed: the
same trials, values, intermediate values and sampler state (CMA-ES and QMC keep
theirs in the study) as before it.

What Optuna itself would keep in memory is made to follow from the journal too: the
sampler that asks for trial n is a new one seeded from (the sweep's seed, n), so what
it draws depends only on the seed and the results told before it, never on a process
having restarted; the pruners are given every setting Optuna would otherwise infer
from the first trials it sees (the rungs' resources).

A categorical parameter is asked for by the index of its choice, so any JSON value can
be a choice, and shown as the value.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages.journal import BaseJournalBackend, JournalStorage
from optuna.trial import TrialState

from orchestrator_svc.spec import Dist

optuna.logging.set_verbosity(logging.WARNING)
optuna.logging.disable_propagation()

P = ParamSpec("P")
T = TypeVar("T")


def _quiet(method: Callable[P, T]) -> Callable[P, T]:
    """Optuna's warnings (experimental samplers, independent sampling of what CMA-ES
    cannot model) are about choices the spec made on purpose: not shown."""

    @functools.wraps(method)
    def quiet(*args: P.args, **kwargs: P.kwargs) -> T:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return method(*args, **kwargs)

    return quiet


# Steps told to the median or percentile rule per trial, at most: what a trial prints
# past them is kept as metrics but not judged. Each judgement reads every other trial of
# the sweep on the store's one thread, so a trial printing its 10,000 metric lines must
# not buy 10,000 of them. (asha and hyperband are told only their rungs' steps, a few.)
MAX_REPORTS = 100

# (log number, the log) rows to add to the store, inside the caller's transaction.
Write = Callable[[int, list[dict[str, Any]]], None]


class SearchFailed(Exception):
    """The sampler could not give a trial's parameters."""


class _Journal(BaseJournalBackend):
    """The sweep's journal: what the store holds, and what is written to it now."""

    def __init__(self, logs: list[dict[str, Any]], write: Write) -> None:
        self._logs = logs
        self._write = write

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._write(len(self._logs), logs)
        self._logs.extend(logs)


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler, but it leaves the study alone once the grid is run (it
    stops the study, which only an optimize() loop may do); the budget, at most the
    grid, ends the asks."""

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        pass


def seed_for(seed: int, number: int) -> int:
    """The seed of the sampler asking for trial `number`."""
    digest = hashlib.sha256(f"{seed}/{number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _distribution(dist: Dist) -> BaseDistribution:
    if dist.kind == "choice":
        return CategoricalDistribution(tuple(range(len(dist.choices))))
    if dist.kind == "int":
        step = 1 if dist.log else int(dist.step or 1)
        return IntDistribution(int(dist.low), int(dist.high), log=dist.log, step=step)
    if dist.kind == "loguniform":
        return FloatDistribution(dist.low, dist.high, log=True)
    # With a step, Optuna moves high down onto the step's grid itself (in decimal).
    return FloatDistribution(dist.low, dist.high, step=dist.step)


@_quiet
def check_space(space: dict[str, Dist]) -> list[tuple[str, str]]:
    """(parameter name, why) for each parameter Optuna cannot search as given; checked
    when the spec is, so a sweep that is accepted has a space its sampler can use."""
    problems = []
    for name, dist in space.items():
        try:
            _distribution(dist)
        except (ValueError, ArithmeticError) as error:
            problems.append((name[:64], f"is not a space the sampler can search: {error}"))
    return problems


class Search:
    """One adaptive sweep's study.

    `spec` is the stored spec (search, objective, earlyStopping), `space` its parameter
    space, `logs` the journal as stored; `write` adds journal rows to the store."""

    @_quiet
    def __init__(
        self,
        sweep_id: str,
        spec: dict[str, Any],
        space: dict[str, Dist],
        logs: list[dict[str, Any]],
        write: Write,
    ) -> None:
        self._settings = spec["search"]
        self._space = space
        self._distributions = {name: _distribution(d) for name, d in space.items()}
        objectives = spec.get("objectives") or [spec["objective"]]
        goals = [objective.get("goal", "minimize") for objective in objectives]
        # The rule judges the one objective there is (never with several).
        self.goal = goals[0]
        self.rule: dict[str, Any] | None = spec.get("earlyStopping")
        storage = JournalStorage(_Journal(logs, write))
        pruner = self._pruner()
        if logs:
            self._study = optuna.load_study(study_name=sweep_id, storage=storage, pruner=pruner)
        else:
            self._study = optuna.create_study(
                study_name=sweep_id, storage=storage, directions=goals, pruner=pruner
            )
        # Per trial number: (the last step told, steps told).
        self._told: dict[int, tuple[int, int]] = {}
        for trial in self._study.get_trials(deepcopy=False):
            steps = trial.intermediate_values
            if steps:
                self._told[trial.number] = (max(steps), len(steps))

    def _sampler(self, number: int) -> optuna.samplers.BaseSampler:
        seed = int(self._settings.get("seed", 0))
        own = seed_for(seed, number)
        kind = self._settings["sampler"]
        if kind == "tpe":
            # The constant liar keeps parallel asks from landing on one point.
            return optuna.samplers.TPESampler(seed=own, constant_liar=True)
        if kind == "cmaes":
            return optuna.samplers.CmaEsSampler(
                seed=own,
                independent_sampler=optuna.samplers.RandomSampler(seed=own),
                warn_independent_sampling=False,
            )
        if kind == "qmc":
            # The sequence's scrambling stays the sweep's; where it is, the study keeps.
            return optuna.samplers.QMCSampler(
                seed=seed,
                scramble=True,
                independent_sampler=optuna.samplers.RandomSampler(seed=own),
                warn_asynchronous_seeding=False,
                warn_independent_sampling=False,
            )
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=own)
        if kind == "grid":
            # Trial n runs the n-th combination of the grid shuffled by the sweep's seed:
            # the same order for every sampler of the sweep.
            grid = {name: list(range(len(d.choices))) for name, d in self._space.items()}
            return _Grid(grid, seed=seed)
        return optuna.samplers.RandomSampler(seed=own)

    def _pruner(self) -> optuna.pruners.BasePruner:
        rule = self.rule
        if rule is None:
            return optuna.pruners.NopPruner()
        kind = rule["rule"]
        if kind in ("median", "percentile"):
            return optuna.pruners.PercentilePruner(
                50.0 if kind == "median" else float(rule["percentile"]),
                n_startup_trials=int(rule["startupTrials"]),
                n_warmup_steps=int(rule["warmupSteps"]),
                interval_steps=int(rule.get("intervalSteps", 1)),
            )
        if kind == "asha":
            return optuna.pruners.SuccessiveHalvingPruner(
                min_resource=int(rule["minResource"]),
                reduction_factor=int(rule["reductionFactor"]),
            )
        return optuna.pruners.HyperbandPruner(
            min_resource=int(rule["minResource"]),
            max_resource=int(rule["maxResource"]),
            reduction_factor=int(rule["reductionFactor"]),
        )

    @property
    def asked(self) -> int:
        return len(self._study.get_trials(deepcopy=False))

    @_quiet
    def ask(self, number: int) -> dict[str, Any]:
        """The parameters of trial `number`, the next one."""
        if number != self.asked:
            raise RuntimeError(f"asked for trial {number}, the study has {self.asked}")
        self._study.sampler = self._sampler(number)
        trial = self._study.ask(self._distributions)
        params = {}
        for name, dist in self._space.items():
            value = trial.params[name]
            params[name] = dist.choices[value] if dist.kind == "choice" else value
        return params

    @_quiet
    def tell(self, number: int, values: list[float] | None, *, pruned: bool = False) -> None:
        """Trial `number` ended: with its objectives' `values` (None: failed, whatever the
        reason), or pruned. A trial already told is left as it is."""
        self._study.sampler = self._sampler(number)
        if pruned:
            state, values = TrialState.PRUNED, None
        elif values is None:
            state = TrialState.FAIL
        else:
            state = TrialState.COMPLETE
        self._study.tell(number, values, state=state, skip_if_finished=True)

    def judges(self, number: int, step: int) -> bool:
        """Whether the rule judges trial `number` at `step`: asha and hyperband at the
        first step at or past each rung (minResource times a power of reductionFactor,
        where they decide: Ray's ASHA milestones), median and percentile at the first
        step at or past each intervalSteps from their warm-up. Either way a step above
        the last one judged."""
        rule = self.rule
        last = self._told.get(number, (-1, 0))[0]
        if rule is None or step <= last:
            return False
        if rule["rule"] in ("asha", "hyperband"):
            rung, factor = int(rule["minResource"]), int(rule["reductionFactor"])
            while rung <= last:
                rung *= factor
            return step >= rung
        warmup, interval = int(rule["warmupSteps"]), int(rule.get("intervalSteps", 1))
        boundary = (
            warmup if last < warmup else warmup + ((last - warmup) // interval + 1) * interval
        )
        return step >= boundary

    @_quiet
    def report(self, number: int, step: int, value: float) -> bool | None:
        """Tell the rule trial `number`'s `value` at `step`; True when it says to stop
        the trial, None when it was not told: a step the rule does not judge (see
        judges), one past MAX_REPORTS, a trial already ended."""
        if not self.judges(number, step):
            return None
        count = self._told.get(number, (-1, 0))[1]
        if count >= MAX_REPORTS:
            return None
        trial_id = self._study._storage.get_trial_id_from_study_id_trial_number(
            self._study._study_id, number
        )
        if self._study._storage.get_trial(trial_id).state != TrialState.RUNNING:
            return None
        trial = optuna.Trial(self._study, trial_id)
        if self.rule is not None and self.rule["goal"] != self.goal:
            value = -value  # the rule compares in the objective's direction
        trial.report(value, step)
        self._told[number] = (step, count + 1)
        return trial.should_prune()
