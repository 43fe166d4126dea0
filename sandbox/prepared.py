"""Containers made ahead of demand and removed behind it, off the trials' critical path.

A trial's container is created before its trial is known: its hardening, limits and
image are all in the creation, and its trial (script, parameters, the run's key) reaches
it on stdin once it runs. So while trials run, a thread of the runner creates the next
ones' containers, and another removes the finished ones. Each container still serves
exactly one trial and is then removed.

What is prepared follows demand: up to ``ahead`` containers in all, shared among the
kinds (image and limits) taken within the last RECENT_SECONDS, so sweeps of different
limits on one runner each keep their share instead of evicting each other's. A
prepared container of a kind no longer taken is removed to make room. Removals wait in
a queue of at most ``behind``; past that the caller removes its container itself, so
the containers that exist at once stay bounded by the trials running, ``ahead`` and
``behind``.
"""

from __future__ import annotations

import collections
import math
import queue
import threading
import time
from collections.abc import Callable, Hashable

from prism import logs

log = logs.get("sandbox.prepared")

# A kind taken within this many seconds has its share of what is prepared.
RECENT_SECONDS = 30.0


class Prepared:
    """Containers prepared ahead (by kind) and removed behind, each on a thread of its own."""

    def __init__(
        self,
        create: Callable[[Hashable], str],
        remove: Callable[[str], None],
        *,
        ahead: int,
        behind: int,
    ) -> None:
        if ahead < 0 or behind < 0:
            raise ValueError("ahead and behind must not be negative")
        self._create = create
        self._remove = remove
        self._ahead = ahead
        self._changed = threading.Condition()
        # Prepared, by kind (a kind with none has no entry).
        self._ready: dict[Hashable, collections.deque[str]] = {}
        self._prepared = 0
        # When each kind was last taken, for the recent ones.
        self._taken_at: dict[Hashable, float] = {}
        # Handed to a trial and not yet discarded.
        self._in_use: set[str] = set()
        self._closed = False
        # None: removed by the caller, at once.
        self._removals: queue.Queue[str | None] | None = None
        self._threads = []
        if ahead:
            self._threads.append(threading.Thread(target=self._prepare, name="prepare containers"))
        if behind:
            self._removals = queue.Queue(maxsize=behind)
            remover = threading.Thread(target=self._remove_behind, name="remove containers")
            self._threads.append(remover)
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def take(self, kind: Hashable) -> tuple[str, bool]:
        """A container of ``kind`` for one trial, and whether it was prepared ahead;
        created now when none is ready. Raises what creating raises."""
        with self._changed:
            self._taken_at[kind] = time.monotonic()
            container = self._pop(kind)
            if container is not None:
                self._in_use.add(container)
            self._changed.notify_all()
        if container is not None:
            return container, True
        container = self._create(kind)
        with self._changed:
            self._in_use.add(container)
        return container, False

    def discard(self, container_id: str, *, now: bool = False) -> None:
        """The container has served its trial: removed behind, or here and now when
        asked to, or when the queue of removals is full or closed."""
        with self._changed:
            self._in_use.discard(container_id)
            try:
                if self._removals is not None and not self._closed and not now:
                    self._removals.put_nowait(container_id)
                    return
            except queue.Full:
                pass
        self._remove(container_id)

    def ready(self) -> set[str]:
        """The containers prepared and not yet taken."""
        with self._changed:
            return {c for ready in self._ready.values() for c in ready}

    def held(self) -> set[str]:
        """The containers prepared, and those handed to a trial and not yet discarded."""
        with self._changed:
            return self.ready() | self._in_use

    def close(self) -> None:
        """Stop preparing, remove what was prepared and what waits for removal."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._removals is not None:
            self._removals.put(None)
        for thread in self._threads:
            thread.join()
        with self._changed:
            left = [c for ready in self._ready.values() for c in ready]
            self._ready.clear()
            self._prepared = 0
        while self._removals is not None and not self._removals.empty():
            if (container_id := self._removals.get_nowait()) is not None:
                left.append(container_id)
        for container_id in left:
            self._remove(container_id)

    def _pop(self, kind: Hashable) -> str | None:
        ready = self._ready.get(kind)
        if not ready:
            return None
        self._prepared -= 1
        container = ready.popleft()
        if not ready:
            del self._ready[kind]
        return container

    def _next(self) -> tuple[Hashable | None, list[str]]:
        """The kind to prepare one more of (None: none now), and prepared containers to
        remove first: those of kinds no longer taken, and a kind's excess over its share
        while another kind is short of its own."""
        now = time.monotonic()
        for kind, at in list(self._taken_at.items()):
            if now - at > RECENT_SECONDS:
                del self._taken_at[kind]
        share = math.ceil(self._ahead / max(len(self._taken_at), 1))
        # What kinds no longer taken hold goes, and a kind's excess over its share once
        # another kind falls short of its own.
        short = any(len(self._ready.get(k, ())) < share for k in self._taken_at)
        stale: list[str] = []
        for kind in list(self._ready):
            keep = share if kind in self._taken_at else 0
            while len(self._ready.get(kind, ())) > keep and (keep == 0 or short):
                stale.append(self._ready[kind][0])
                self._pop(kind)
        if not self._taken_at or self._prepared >= self._ahead:
            return None, stale
        # The most recently taken first.
        for kind in sorted(self._taken_at, key=self._taken_at.__getitem__, reverse=True):
            if len(self._ready.get(kind, ())) < share:
                return kind, stale
        return None, stale

    def _prepare(self) -> None:
        while True:
            with self._changed:
                kind, stale = self._next()
                while not self._closed and kind is None and not stale:
                    # Woken by a take, or in time to notice kinds no longer taken.
                    self._changed.wait(RECENT_SECONDS)
                    kind, stale = self._next()
                if self._closed:
                    break
            for container_id in stale:
                self.discard(container_id)
            if kind is None:
                continue
            try:
                container_id = self._create(kind)
            except Exception as error:  # the engine's trouble shows in the trials' own runs
                log.warning("could not prepare a container", error=str(error))
                # Tried again on the next demand, not in a loop while the engine is down.
                with self._changed:
                    self._taken_at.pop(kind, None)
                continue
            with self._changed:
                if not self._closed:
                    self._ready.setdefault(kind, collections.deque()).append(container_id)
                    self._prepared += 1
                    continue
            self._remove(container_id)
            return
        for container_id in stale:
            self._remove(container_id)

    def _remove_behind(self) -> None:
        assert self._removals is not None
        while (container_id := self._removals.get()) is not None:
            try:
                self._remove(container_id)
            except Exception as error:  # the remover must outlive one failure
                logs.unexpected(log, "removing a container failed", error)
