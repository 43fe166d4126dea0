"""Who hears of what the store recorded: a sweep's watchers wait for news of new
events, and callers wait for a sweep's end. Runs on the orchestrator's event loop."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable


class SweepNews:
    def __init__(self) -> None:
        # Set (and replaced) whenever events were appended: what watchers wait on.
        self._news = asyncio.Event()
        # One event per sweep someone waits on, kept while anyone does.
        self._ends: dict[str, asyncio.Event] = {}
        self._waiting: collections.Counter[str] = collections.Counter()

    def published(self) -> None:
        """Events were appended (or may have been): wake every watcher."""
        self._news.set()
        self._news = asyncio.Event()

    def news(self) -> asyncio.Event:
        """Set by the next publication: take it before reading events, then wait on it,
        so that nothing recorded between the read and the wait is missed."""
        return self._news

    def finished(self, sweep_id: str) -> None:
        """The sweep has its final state: wake whoever waits for it."""
        end = self._ends.get(sweep_id)
        if end is not None:
            end.set()

    async def wait_finished(
        self, sweep_id: str, within: float, finished: Callable[[], Awaitable[bool]]
    ) -> bool:
        """True once the sweep has finished, False if `within` seconds ran out first.
        `finished` reads whether it has already; any number of callers may wait on the
        same sweep."""
        end = self._ends.setdefault(sweep_id, asyncio.Event())
        self._waiting[sweep_id] += 1
        try:
            if await finished():
                return True
            async with asyncio.timeout(within):
                await end.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._waiting[sweep_id] -= 1
            if not self._waiting[sweep_id]:
                del self._waiting[sweep_id]
                del self._ends[sweep_id]
