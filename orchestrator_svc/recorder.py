"""Group commit for the metrics trials print while they run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prism import logs

log = logs.get("orchestrator.metrics")

# (execution id, the metric's values as compact JSON text)
MetricBatch = list[tuple[str, str]]
# Metrics one transaction writes, at most; and how many may wait for the store before
# the streams bringing more wait too.
MAX_BATCH_METRICS = 1000
MAX_PENDING_METRICS = 5000


class MetricRecorder:
    """Each batch of metrics is one transaction (one commit to disk), and while one
    batch is written the next gathers, so a trial printing thousands of metric lines
    costs a few commits, not one per line, and the store stays free for everyone
    else. ``recorded(execution_id)`` waits until every metric of that execution handed
    in so far is written, so a trial's start or end is recorded after its metrics,
    without waiting for anybody else's."""

    def __init__(self, write: Callable[[MetricBatch], Awaitable[None]]) -> None:
        self._write = write
        self._pending: MetricBatch = []
        self._added = 0
        self._written = 0
        # The number of each execution's last metric, while it is not yet written.
        self._last: dict[str, int] = {}
        self._ready = asyncio.Event()
        # Set (and replaced) after every batch.
        self._progress = asyncio.Event()

    def add(self, execution_id: str, values_json: str) -> None:
        self._pending.append((execution_id, values_json))
        self._added += 1
        self._last[execution_id] = self._added
        self._ready.set()

    async def recorded(self, execution_id: str) -> None:
        while self._last.get(execution_id, 0) > self._written:
            await self._progress.wait()

    async def room(self) -> None:
        """Wait while the metrics not yet written fill a batch's worth: a stream that
        floods faster than the store writes is read no faster, so no backlog grows
        in memory without bound."""
        while len(self._pending) >= MAX_PENDING_METRICS:
            await self._progress.wait()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            # At most a batch's worth per transaction, so other writes get their turn.
            batch = self._pending[:MAX_BATCH_METRICS]
            del self._pending[:MAX_BATCH_METRICS]
            try:
                await self._write(batch)
            except Exception as error:
                # A batch the store refuses is dropped alone; the trials go on.
                logs.unexpected(log, "recording metrics failed", error, metrics=len(batch))
            self._written += len(batch)
            self._last = {e: n for e, n in self._last.items() if n > self._written}
            self._progress.set()
            self._progress = asyncio.Event()
            if self._pending:
                self._ready.set()
