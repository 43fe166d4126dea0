"""Dispatch: trials go to runners, what the runners report is recorded.

The Dispatcher holds one RunnerLink per runner (orchestrator_svc.link) and is
what those links report to. It records every change through the store, tells
SweepNews after each write, and runs two loops: dispatch (the scheduler picks
which trial goes where) and leases (retries come due, a runner away too long
loses its trials).

Concurrency model: everything here runs on the orchestrator's event loop; the
store is reached through its DbThread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from orchestrator_svc import discovery, domain, scheduler, store
from orchestrator_svc.config import Settings
from orchestrator_svc.link import RunnerLink
from orchestrator_svc.metrics import OrchestratorMetrics
from orchestrator_svc.news import SweepNews
from orchestrator_svc.recorder import MetricBatch, MetricRecorder
from orchestrator_svc.spec import Plan
from prism import logs
from prism.sqlite import DbThread
from prism.trial import Outcome, TrialResult, not_run

log = logs.get("orchestrator.dispatch")
T = TypeVar("T")


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        db: DbThread,
        news: SweepNews,
        prometheus: OrchestratorMetrics | None = None,
    ) -> None:
        self.settings = settings
        # The service's Prometheus metrics (not the trials' own, which `metrics` records).
        self.prometheus = prometheus or OrchestratorMetrics()
        self._db = db
        self._news = news
        # The links: one per configured runner, or one per address discovery found
        # (see orchestrator_svc.discovery), each run by its task until retired.
        self.links: list[RunnerLink] = []
        self._link_tasks: dict[RunnerLink, asyncio.Task[None]] = {}
        # Runners holding trials that no link goes by, since when (a replica scaled away
        # or not back yet): like a link down, they lose their trials in time.
        self._absent: dict[str, float] = {}
        # The runners holding trials when this process started.
        self._holders: set[str] = set()
        self.metrics = MetricRecorder(self._record_metrics)
        self._kicked = asyncio.Event()
        # Whether an adaptive sweep may be open: its samplers are asked for trials on
        # each dispatch while one is (orchestrator_svc.store.ask_trials), and a planned
        # sweep's dispatch is spared the call otherwise.
        self._searching = True
        # Adaptive sweeps submitted so far: a pass that found none open tells only if no
        # sweep was submitted while it looked.
        self._submitted = 0
        # Set when a runner has answered for its trials (reconcile waits on it).
        self._answered = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        finished = await self._write(store.finish_complete_sweeps)
        if finished:
            log.info("finished sweeps completed before a crash", sweeps=finished)
        if self.settings.discover is None:
            configured = [name for name, _ in self.settings.runners]
            requeued = await self._write(store.release_unknown_runners, configured)
            if requeued:
                log.info("trials of runners no longer configured queued again", trials=requeued)
        self._holders = await self._db(store.holders)
        for name, address in self.settings.runners:
            self._add_link(name, address)
        self._tasks.append(asyncio.create_task(self.metrics.run()))
        self._tasks.append(asyncio.create_task(self._dispatch_loop()))
        self._tasks.append(asyncio.create_task(self._lease_loop()))
        if self.settings.discover is not None:
            self._tasks.append(asyncio.create_task(self._discovery_loop(*self.settings.discover)))
        self.kick()

    async def reconcile(self, within: float) -> list[str]:
        """Wait until every runner holding trials answered for them; return the names
        of those that did not `within` seconds (a discovered one may not even be found)."""

        def silent() -> list[str]:
            answered = {link.name for link in self.links if link.reconciled.is_set()}
            return sorted(self._holders - answered)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while silent():
                    self._answered.clear()
                    await self._answered.wait()
        return silent()

    # The links.

    def _add_link(self, name: str | None, address: str) -> RunnerLink:
        link = RunnerLink(
            name,
            address,
            token=self.settings.runner_token,
            silence_seconds=self.settings.runner_silence_seconds,
            reports=self,
        )
        if name is not None and name not in self._holders:
            link.reconciled.set()  # nothing to ask this runner about
        self.links.append(link)
        self._link_tasks[link] = asyncio.create_task(self._run_link(link))
        return link

    async def _run_link(self, link: RunnerLink) -> None:
        try:
            await link.run()
        finally:  # retired: its last stream ended
            self.links.remove(link)
            self._link_tasks.pop(link, None)
            if link.name is not None:
                self._absent.setdefault(link.name, link.down_since or time.monotonic())
            await link.close()
            log.info("runner gone", runner=link.name, address=link.address)

    def _retire(self, link: RunnerLink) -> None:
        """Its address is gone: a stream open now may finish (a draining runner reports
        on it what it finishes and hands back); without one, it ends at once."""
        link.retire()
        if not link.connected:
            self._link_tasks[link].cancel()

    async def _discovery_loop(self, host: str, port: int) -> None:
        """Every few seconds: a link for each new address of the name, and each link
        whose address is gone retired."""
        unknown = False
        while True:
            try:
                found = await discovery.resolve(host, port)
            except Exception as error:  # a bug must not end discovery for good
                logs.unexpected(log, "resolving the runners' name failed", error, name=host)
                found = None
            if found is None:
                if not unknown:
                    log.warning("runners' name does not resolve; keeping those known", name=host)
                unknown = True
            else:
                unknown = False
                known = {link.address for link in self.links if not link.retired}
                for address in sorted(found - known):
                    log.info("runner found", address=address)
                    self._add_link(None, address)
                for link in [k for k in self.links if not k.retired and k.address not in found]:
                    self._retire(link)
            await asyncio.sleep(self.settings.discovery_seconds)

    def claim(self, runner: str, link: RunnerLink) -> bool:
        """Only one link's stream goes by a name at a time; a link not holding it now
        gives it up (and asks again on its next stream). The name keeps its clock: down
        since the earliest its runner was last heard of, by any link."""
        since = [self._absent.pop(runner, None), link.down_since]
        for other in self.links:
            if other is not link and other.name == runner:
                if other.holding:
                    if since[0] is not None:
                        self._absent[runner] = since[0]
                    return False
                other.name = None
                since.append(other.down_since)
        known = [t for t in since if t is not None]
        link.down_since = min(known) if known else time.monotonic()
        if runner not in self._holders:
            link.reconciled.set()  # else it is, once it answered for them on its stream
        return True

    def kick(self) -> None:
        self._kicked.set()

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """A store call that may append events; watchers hear of it, and the runners of
        the trials it stopped (pruned, or of a sweep that stopped) are told to stop them."""
        try:
            return await self._db(fn, *args)
        finally:
            self._news.published()
            stops = store.take_stops()
            if stops:
                links = self._named()
                for runner, execution_id in stops:
                    if runner in links:
                        links[runner].cancel(execution_id)

    async def submit(self, plan: Plan, request_id: str = "") -> str:
        """Record a planned sweep and start it; a used request id returns the
        sweep that request made, recording nothing."""
        sweep_id = await self._write(
            store.create_sweep, str(uuid.uuid4()), plan.task, plan.spec, plan.trials, request_id
        )
        if "search" in plan.spec:
            self._searching, self._submitted = True, self._submitted + 1
        log.info("sweep created", sweep=sweep_id, trials=len(plan.trials))
        self.kick()
        return sweep_id

    async def cancel(self, sweep_id: str) -> None:
        """Cancel a running sweep: what has not started ends at once; each runner
        holding one of its trials is told to stop it (or will be, on reconnect).
        A caller that goes away meanwhile does not cut this short."""
        await asyncio.shield(asyncio.create_task(self._cancel(sweep_id)))

    async def _cancel(self, sweep_id: str) -> None:
        status, in_flight = await self._write(store.cancel_sweep, sweep_id)
        links = {link.name: link for link in self.links if link.name is not None}
        for runner, execution_id in in_flight:
            if runner in links:
                links[runner].cancel(execution_id)
        log.info("sweep cancelled", sweep=sweep_id, stopping=len(in_flight))
        if status is not None:
            self._finished(sweep_id, status)

    def _finished(self, sweep_id: str, status: str) -> None:
        log.info("sweep finished", sweep=sweep_id, status=status)
        self._news.finished(sweep_id)

    async def record(self, execution_id: str, result: TrialResult) -> None:
        """Record an execution's end. A result the store refuses, for whatever reason,
        ends that trial alone as sandbox_error: the stream it came on, the runner and
        every other trial go on. (Should the store refuse even that, it is failing as
        a whole, and the link reconnects once it raises.)"""
        try:
            status = await self._write(store.finish_trial, execution_id, result)
        except Exception as error:
            error_id = logs.unexpected(
                log, "recording a result failed", error, execution=execution_id
            )
            result = not_run(
                Outcome.SANDBOX_ERROR,
                f"the orchestrator could not record the trial's result (error id {error_id})",
            )
            status = await self._write(store.finish_trial, execution_id, result)
        log.info("trial finished", execution=execution_id, outcome=result.outcome)
        self.kick()  # a slot is free
        if status is not None:
            trial_id, _ = domain.split_execution_id(execution_id)
            self._finished(domain.sweep_of(trial_id), status)

    # What the links report (orchestrator_svc.link.RunnerReports).

    async def held_by(self, runner: str) -> tuple[list[store.Dispatchable], list[str]]:
        return await self._db(store.held_by, runner)

    def runner_up(self, runner: str) -> None:
        self._answered.set()
        self.kick()

    async def trial_started(self, execution_id: str) -> None:
        await self.metrics.recorded(execution_id)
        await self._write(store.mark_started, execution_id)

    async def trial_metrics(self, execution_id: str, values_json: tuple[str, ...]) -> None:
        for values in values_json:
            self.metrics.add(execution_id, values)
        await self.metrics.room()

    async def trial_finished(self, execution_id: str, result: TrialResult) -> None:
        self.prometheus.trial_ran(result)
        await self.metrics.recorded(execution_id)
        await self.record(execution_id, result)

    async def trial_returned(self, execution_id: str, reason: str) -> None:
        # Its metrics are real: written while it is still the current execution.
        await self.metrics.recorded(execution_id)
        status = await self._write(store.hand_back, execution_id, reason)
        log.info("trial handed back", execution=execution_id, reason=reason)
        self.kick()  # it is pending again, and a slot is free
        if status is not None:
            trial_id, _ = domain.split_execution_id(execution_id)
            self._finished(domain.sweep_of(trial_id), status)

    async def _record_metrics(self, batch: MetricBatch) -> None:
        try:
            with self.prometheus.metric_batch_write.time():
                await self._write(store.record_metrics, batch)
        except Exception:
            self.prometheus.metrics_dropped.inc(len(batch))
            raise
        self.prometheus.metrics_recorded.inc(len(batch))

    # The loops.

    async def _lease_loop(self) -> None:
        """Every second: retries whose backoff has passed get dispatched, and a
        runner away longer than runner_lost_seconds loses its trials: each ends
        runner_lost, or, with retries left, goes back to the queue for another
        runner. A late report from the lost execution is then stale and
        ignored, so only one result is ever kept."""
        lost_after = self.settings.runner_lost_seconds
        while True:
            await asyncio.sleep(min(1.0, lost_after / 4))
            # Retries whose backoff has passed are dispatchable now.
            self.kick()
            try:
                for sweep_id, status in await self._write(store.stop_overdue):
                    log.info("sweep deadline reached", sweep=sweep_id)
                    if status is not None:
                        self._finished(sweep_id, status)
            except Exception as error:
                logs.unexpected(log, "stopping sweeps past their deadline failed", error)
            try:
                for runner in await self._lost(lost_after):
                    for item in await self._db(store.in_flight, runner):
                        # Checked again before each: the runner may be back (a link
                        # claimed its name and re-sent its trials) during the last write.
                        if not self._away(runner, lost_after):
                            break
                        execution_id = item.trial.execution_id
                        await self.record(
                            execution_id,
                            not_run(
                                Outcome.RUNNER_LOST,
                                f"runner {runner} was unreachable for {lost_after:g} s",
                            ),
                        )
                        # Told to stop it, by whichever link goes by the name now.
                        holder = self._named().get(runner)
                        if holder is not None:
                            holder.give_up(execution_id)
            except Exception as error:
                logs.unexpected(log, "marking the trials of a lost runner failed", error)

    def _named(self) -> dict[str, RunnerLink]:
        return {link.name: link for link in self.links if link.name is not None}

    def _away(self, runner: str, lost_after: float) -> bool:
        """Has nobody answered for `runner` these `lost_after` seconds: its link down that
        long, or no link going by its name for that long?"""
        link = self._named().get(runner)
        since = self._absent.get(runner) if link is None else link.down_since
        return since is not None and time.monotonic() - since >= lost_after

    async def _lost(self, lost_after: float) -> list[str]:
        """The runners away for `lost_after` seconds: each link down that long, and each
        name holding trials that no link has gone by for that long."""
        now = time.monotonic()
        named = self._named()
        if self.settings.discover is not None or self._absent:
            holders = await self._db(store.holders)
            absent = holders - self._named().keys()
            for name in absent:
                self._absent.setdefault(name, now)
            self._absent = {n: t for n, t in self._absent.items() if n in absent}
        return [name for name in [*named, *self._absent] if self._away(name, lost_after)]

    async def _dispatch_loop(self) -> None:
        while True:
            await self._kicked.wait()
            self._kicked.clear()
            try:
                await self._dispatch_pending()
            except Exception as error:
                logs.unexpected(log, "dispatch failed; retrying", error)
                await asyncio.sleep(1.0)
                self.kick()

    async def _dispatch_pending(self) -> None:
        free = sum(max(0, link.free) for link in self.links if link.up)
        # Adaptive sweeps ask their samplers for trials now, as late as can be, so each
        # is asked knowing every result told so far.
        if free > 0 and self._searching:
            submitted = self._submitted
            try:
                if await self._write(store.ask_trials, free) is None:
                    self._searching = submitted != self._submitted
            except Exception as error:  # the planned sweeps' trials go out all the same
                logs.unexpected(log, "asking the samplers for trials failed", error)
        for item in await self._db(store.dispatchable, free):
            # Placed one at a time, on the links as they are now: a stream may have
            # closed, or a runner come back with fewer slots, during the last write.
            links = {link.name: link for link in self.links if link.up and link.name}
            placed = scheduler.place([item], {name: link.free for name, link in links.items()})
            if not placed:
                return  # a runner connecting or a trial finishing kicks the loop again
            [(_, runner)] = placed
            trial = await self._write(store.assign, item.trial.id, runner)
            if trial is None:
                continue
            if not links[runner].dispatch(store.Dispatchable(trial, item.source, item.spec)):
                # The stream closed during the write: nothing was sent, so
                # the trial may safely go to another runner.
                await self._write(store.unassign, trial.id, runner, "stream closed before send")
                self.kick()
            else:
                self.prometheus.dispatched(item.ready_since)

    async def close(self) -> None:
        tasks = [*self._tasks, *self._link_tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
