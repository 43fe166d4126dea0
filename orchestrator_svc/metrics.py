"""The orchestrator's Prometheus metrics (README: Metrics).

Two kinds. What the store holds (sweeps by state, trials by state and outcome, the
queue) is counted from the store when a scrape comes, so it is right after any restart
and needs no bookkeeping beside the store's own; finished trials are a counter that way
too, since the store's count of them never goes down. What only passes by (how long a
dispatch waited, how long a trial ran, metric batches written) is observed as it
happens. Runners' up/down and what is in flight on each are read from their links.

Labels are few and bounded: states, outcomes, and runner names (the operator's
configuration); never a sweep id or anything a trial wrote.

Concurrency model: everything runs on the orchestrator's event loop; `refresh` awaits
the store's thread before each scrape (prism.metrics).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator_svc import domain, store
from prism import logs
from prism.metrics import new_registry
from prism.sqlite import DbThread
from prism.trial import Outcome, TrialResult

log = logs.get("orchestrator.metrics")

TRIAL_STATES = (domain.PENDING, domain.DISPATCHED, domain.RUNNING, domain.FINISHED)
SWEEP_STATES = (domain.SWEEP_RUNNING, domain.SWEEP_DONE, domain.SWEEP_ERROR, domain.SWEEP_CANCELLED)
OUTCOMES = tuple(outcome.value for outcome in Outcome)

# From a free slot's few milliseconds to a queue that waits for hours.
DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# Up to the longest wall limit a trial may have (prism.limits: an hour).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# One transaction of up to 1,000 metric events, committed to disk.
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class RunnerState(Protocol):
    """What the metrics read of a runner's link (orchestrator_svc.link.RunnerLink)."""

    @property
    def name(self) -> str | None: ...  # None: a discovered runner not yet named

    @property
    def up(self) -> bool: ...

    @property
    def in_flight(self) -> set[str]: ...


class OrchestratorMetrics:
    def __init__(self) -> None:
        self.registry: CollectorRegistry = new_registry()
        self.dispatch_latency = Histogram(
            "prism_dispatch_latency_seconds",
            "How long a trial waited, once it could run, until it was sent to a runner.",
            buckets=DISPATCH_BUCKETS,
            registry=self.registry,
        )
        self.trial_duration = Histogram(
            "prism_trial_duration_seconds",
            "How long each trial execution ran, as its runner measured it, by the outcome "
            "the runner reported.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.metrics_recorded = Counter(
            "prism_trial_metrics_recorded_total",
            "PRISM_METRIC lines of trials written to the store.",
            registry=self.registry,
        )
        self.metrics_dropped = Counter(
            "prism_trial_metrics_dropped_total",
            "PRISM_METRIC lines of trials dropped because the store refused their batch.",
            registry=self.registry,
        )
        self.metric_batch_write = Histogram(
            "prism_trial_metric_batch_write_seconds",
            "How long writing one batch of trials' metrics to the store took.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.trial_duration.labels(outcome=outcome)
        self._state = _StateCollector()
        self.registry.register(self._state)
        self._db: DbThread | None = None

    def watch(self, db: DbThread, runners: Callable[[], Iterable[RunnerState]]) -> None:
        """Count from this store, and show these runners, from now on."""
        self._db = db
        self._state.runners = runners

    async def refresh(self) -> None:
        """Read the store's counts for the scrape about to be rendered. A store that
        fails leaves its families out of this scrape (and logs why); the rest shows."""
        if self._db is None:
            return
        try:
            self._state.counts = await self._db(store.counts)
        except Exception as error:
            self._state.counts = None
            logs.unexpected(log, "counting the store for the metrics failed", error)

    # What the dispatcher observes as it happens.

    def dispatched(self, ready_since: float) -> None:
        """A trial that could run since `ready_since` (epoch seconds) was sent now."""
        self.dispatch_latency.observe(max(0.0, time.time() - ready_since))

    def trial_ran(self, result: TrialResult) -> None:
        self.trial_duration.labels(outcome=result.outcome.value).observe(result.duration_seconds)


class _StateCollector(Collector):
    """The families read at scrape time: the store's counts as last refreshed, and
    each runner's link as it is now."""

    def __init__(self) -> None:
        self.counts: store.Counts | None = None
        self.runners: Callable[[], Iterable[RunnerState]] = lambda: ()

    def describe(self) -> Iterable[Metric]:
        # Registered without being collected first: its families come and go.
        return ()

    def collect(self) -> Iterator[Metric]:
        counts = self.counts
        if counts is not None:
            sweeps = GaugeMetricFamily(
                "prism_sweeps", "Sweeps in the store, by state.", labels=["state"]
            )
            for state in SWEEP_STATES:
                sweeps.add_metric([state], counts.sweeps.get(state, 0))
            yield sweeps
            trials = GaugeMetricFamily(
                "prism_trials", "Trials in the store, by state.", labels=["state"]
            )
            for state in TRIAL_STATES:
                n = sum(v for (s, _), v in counts.trials.items() if s == state)
                trials.add_metric([state], n)
            yield trials
            finished = CounterMetricFamily(
                "prism_trials_finished",
                "Trials finished, by outcome: the store's count, so it survives restarts.",
                labels=["outcome"],
            )
            for outcome in OUTCOMES:
                finished.add_metric([outcome], counts.trials.get((domain.FINISHED, outcome), 0))
            yield finished
            yield GaugeMetricFamily(
                "prism_queue_depth",
                "Pending trials that could be dispatched now, waiting for a free runner slot "
                "(retries still in their backoff are not counted).",
                value=counts.ready,
            )
        up = GaugeMetricFamily(
            "prism_runner_up",
            "1 while the runner is connected and has answered for its trials, else 0.",
            labels=["runner"],
        )
        in_flight = GaugeMetricFamily(
            "prism_runner_trials_in_flight",
            "Trial executions sent to the runner that it has not finished.",
            labels=["runner"],
        )
        for runner in self.runners():
            if runner.name is None:
                continue
            up.add_metric([runner.name], 1 if runner.up else 0)
            in_flight.add_metric([runner.name], len(runner.in_flight))
        yield up
        yield in_flight
