"""Doubles of the runner's outer edges for the fast tests: a sandbox without Docker
and an images helper without builds.

They keep what the executor can tell of the real ones (the `Sandbox` and `Images`
protocols of runner_svc.executor): run() blocks, so it must be called on a worker
thread; metrics come while it runs, from a thread, never after; a cancel stops a run
in progress and leaves alone a trial that is not running (yet); one trial id runs at
most once at a time; a build may keep a trial waiting for as long as it takes.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from prism.trial import Outcome, TrialResult, not_run
from runner_svc.images import ImageUnavailable
from sandbox import Limits, MetricCallback

# The longest a run waits for its release: a test that forgets one fails, not hangs.
WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class RunCall:
    trial_id: str
    script: str
    params_json: str
    limits: Limits
    image: str | None


class FakeSandbox:
    """Runs a trial's script as steps, one a line, in order:

    - ``metrics N``: report N metrics, ``{"step": 0}`` to ``{"step": N-1}``;
    - ``block``: wait until the test calls ``release(trial_id)`` (or the trial is
      cancelled);
    - ``exit N``: end with exit code N: ``succeeded`` for 0, else ``failed``;
    - ``raise``: raise, as a broken sandbox would.

    A script that reaches its end exits with 0; a trial that succeeds has its
    parameters as its result. ``calls`` records every run, ``cancels`` every cancel,
    ``peak`` the most runs in progress at once."""

    def __init__(self) -> None:
        self.calls: list[RunCall] = []
        self.cancels: list[str] = []
        self.peak = 0
        self._changed = threading.Condition()
        self._running: set[str] = set()
        self._cancelled: set[str] = set()
        # Released by the test, whether they are blocked yet or not.
        self._released: set[str] = set()
        # Cleared by a test to hold each run between its thread's start and the moment
        # the sandbox knows it (the real one takes a little while there too).
        self.starting = threading.Event()
        self.starting.set()

    def run(
        self,
        trial_id: str,
        script: str,
        params_json: str,
        limits: Limits,
        *,
        image: str | None = None,
        on_metric: MetricCallback | None = None,
    ) -> TrialResult:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise AssertionError("Sandbox.run blocks: it must be called on a worker thread")
        if not self.starting.wait(WAIT_SECONDS):
            raise AssertionError(f"trial {trial_id} was never let start")
        with self._changed:
            if trial_id in self._running:
                return not_run(
                    Outcome.SANDBOX_ERROR, f"trial {trial_id} is already running in this sandbox"
                )
            self._running.add(trial_id)
            self.calls.append(RunCall(trial_id, script, params_json, limits, image))
            self.peak = max(self.peak, len(self._running))
            self._changed.notify_all()
        try:
            code = self._steps(trial_id, script, on_metric)
            with self._changed:
                if trial_id in self._cancelled:
                    return not_run(Outcome.CANCELLED, "cancelled")
            if code != 0:
                return TrialResult(
                    outcome=Outcome.FAILED, reason=f"exited with code {code}", exit_code=code
                )
            return TrialResult(
                outcome=Outcome.SUCCEEDED,
                reason="exited with code 0",
                exit_code=0,
                result=json.loads(params_json or "{}"),
            )
        finally:
            with self._changed:
                self._running.discard(trial_id)
                self._cancelled.discard(trial_id)
                self._changed.notify_all()

    def _steps(self, trial_id: str, script: str, on_metric: MetricCallback | None) -> int:
        for line in script.splitlines():
            step, _, argument = line.strip().partition(" ")
            if step == "metrics":
                for i in range(int(argument)):
                    if on_metric is not None:
                        on_metric({"step": i})
            elif step == "block":
                with self._changed:
                    if not self._changed.wait_for(
                        lambda: trial_id in (self._released | self._cancelled), WAIT_SECONDS
                    ):
                        raise AssertionError(f"trial {trial_id} was never released")
                    if trial_id in self._cancelled:
                        return -1
            elif step == "exit":
                return int(argument)
            elif step == "raise":
                raise RuntimeError("the fake sandbox broke")
            elif step:
                raise AssertionError(f"the fake sandbox has no step {line!r}")
        return 0

    def cancel(self, trial_id: str) -> bool:
        """As the real one: stops a run in progress (it ends ``cancelled``); False,
        doing nothing, when the trial is not running here."""
        with self._changed:
            self.cancels.append(trial_id)
            if trial_id not in self._running:
                return False
            self._cancelled.add(trial_id)
            self._changed.notify_all()
            return True

    def release(self, trial_id: str) -> None:
        """Let the trial's ``block`` step pass, now or when it gets there."""
        with self._changed:
            self._released.add(trial_id)
            self._changed.notify_all()

    def wait_running(self, trial_id: str) -> None:
        """Block until the trial's run is in progress (call it on a worker thread)."""
        with self._changed:
            if not self._changed.wait_for(lambda: trial_id in self._running, WAIT_SECONDS):
                raise AssertionError(f"trial {trial_id} never started running")

    @property
    def running(self) -> set[str]:
        with self._changed:
            return set(self._running)


class FakeImages:
    """Makes an image for each set of requirements at once, unless the test holds the
    builds (``hold()``, then ``release()``), as a long pip build keeps its trials
    waiting. A requirement named ``refused`` fails the build as pip would, the trial's
    own fault: ``failed``."""

    def __init__(self) -> None:
        self.requested: list[tuple[str, ...]] = []
        self._built = asyncio.Event()
        self._built.set()

    def hold(self) -> None:
        self._built.clear()

    def release(self) -> None:
        self._built.set()

    async def image_for(self, requirements: Sequence[str]) -> str:
        self.requested.append(tuple(requirements))
        await self._built.wait()
        if "refused" in requirements:
            raise ImageUnavailable(Outcome.FAILED, "pip could not find the requirement refused")
        return "prism-sandbox:with-" + "-".join(sorted(requirements))
