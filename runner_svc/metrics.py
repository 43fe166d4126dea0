"""A runner's Prometheus metrics (README: Metrics): its slots, the trials in its
sandboxes, how each ended, how long a container took to start and how long a trial
waited for the image its requirements need.

Everything is observed as it happens, by the executor and the sandbox; the labels are
outcomes and image results only. The runner's name is no label: Prometheus's own
`instance` (or the scrape config's relabelling) tells runners apart.

Concurrency model: prometheus_client's metrics are thread-safe; the sandbox observes
container starts from its worker threads, everything else is observed on the loop.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from prism.metrics import new_registry
from prism.trial import Outcome

# The image a trial's requirements need: ready (built or found), refused (pip refused
# the trial's requirements: its own fault) or error (the engine, the base, the index).
IMAGE_RESULTS = ("ready", "refused", "error")

# About 0.3 s on an idle engine (ENVIRONMENT.md); seconds when it is loaded.
CONTAINER_START_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30)
# A cached image in milliseconds, a pip download and build in minutes.
IMAGE_BUCKETS = (0.01, 0.1, 1, 5, 10, 30, 60, 120, 300, 600, 1800)


class RunnerMetrics:
    def __init__(self) -> None:
        self.registry: CollectorRegistry = new_registry()
        self.slots = Gauge(
            "prism_runner_slots",
            "Trials this runner executes at once, at most.",
            registry=self.registry,
        )
        self.trials_running = Gauge(
            "prism_runner_trials_running",
            "Trials in a sandbox on this runner now.",
            registry=self.registry,
        )
        self.trials_finished = Counter(
            "prism_runner_trials_finished",
            "Trial executions this runner ran to an end and recorded, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.container_start = Histogram(
            "prism_runner_container_start_seconds",
            "How long a trial waited for its container to run: created then, or prepared ahead.",
            buckets=CONTAINER_START_BUCKETS,
            registry=self.registry,
        )
        self.requirements_image = Histogram(
            "prism_runner_requirements_image_seconds",
            "How long a trial with requirements waited for its image (a build, another "
            "trial's build of the same set, or the image found made), by result.",
            ["result"],
            buckets=IMAGE_BUCKETS,
            registry=self.registry,
        )
        for outcome in Outcome:
            self.trials_finished.labels(outcome=outcome.value)
        for result in IMAGE_RESULTS:
            self.requirements_image.labels(result=result)

    def container_started(self, seconds: float) -> None:
        self.container_start.observe(seconds)
