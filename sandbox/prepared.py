"""Containers made ahead of demand and removed behind it, off the trials' critical path.

A trial's container is created before its trial is known: its hardening, limits and
image are all in the creation, and its trial (script, parameters, the run's key) reaches
it on stdin once it runs. So while trials run, a thread of the runner creates the next
ones' containers, and another removes the finished ones. Each container still serves
exactly one trial and is then removed.

What is prepared follows demand: the kind (image and limits) of the latest trial is
made ahead, up to ``ahead`` containers in all; a prepared container of another kind is
removed to make room. Removals wait in a queue of at most ``behind``; past that the
caller removes its container itself, so the containers that exist at once stay bounded
by the trials running, ``ahead`` and ``behind``.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Hashable

from prism import logs

log = logs.get("sandbox.prepared")


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
        self._ready: dict[Hashable, collections.deque[str]] = {}
        self._wanted: Hashable | None = None
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
            self._wanted = kind
            ready = self._ready.get(kind)
            container = ready.popleft() if ready else None
            self._changed.notify_all()
        if container is not None:
            return container, True
        return self._create(kind), False

    def discard(self, container_id: str) -> None:
        """The container has served its trial: removed behind, or now when the queue
        of removals is full or closed."""
        try:
            if self._removals is not None and not self._closed:
                self._removals.put_nowait(container_id)
                return
        except queue.Full:
            pass
        self._remove(container_id)

    def held(self) -> set[str]:
        """The containers prepared and not yet taken."""
        with self._changed:
            return {c for ready in self._ready.values() for c in ready}

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
        # A discard racing the close may have queued behind the end.
        while self._removals is not None and not self._removals.empty():
            if (container_id := self._removals.get_nowait()) is not None:
                left.append(container_id)
        for container_id in left:
            self._remove(container_id)

    def _count(self) -> int:
        return sum(len(ready) for ready in self._ready.values())

    def _needed(self) -> bool:
        wanted = self._ready.get(self._wanted, ())
        return self._wanted is not None and len(wanted) < self._ahead

    def _prepare(self) -> None:
        while True:
            with self._changed:
                while not (self._closed or self._needed()):
                    self._changed.wait()
                if self._closed:
                    return
                kind = self._wanted
                # Room for the wanted kind: the others' prepared containers go first.
                stale = []
                for other, ready in self._ready.items():
                    while other != kind and ready and self._count() >= self._ahead:
                        stale.append(ready.popleft())
            for container_id in stale:
                self.discard(container_id)
            try:
                container_id = self._create(kind)
            except Exception as error:  # the engine's trouble shows in the trials' own runs
                log.warning("could not prepare a container", error=str(error))
                # Tried again on the next demand, not in a loop while the engine is down.
                with self._changed:
                    if self._wanted == kind:
                        self._wanted = None
                continue
            with self._changed:
                if not self._closed:
                    self._ready.setdefault(kind, collections.deque()).append(container_id)
                    continue
            self._remove(container_id)
            return

    def _remove_behind(self) -> None:
        assert self._removals is not None
        while (container_id := self._removals.get()) is not None:
            try:
                self._remove(container_id)
            except Exception as error:  # the remover must outlive one failure
                logs.unexpected(log, "removing a container failed", error)
