"""Which trial runs next, and where. Pure functions over what the store and the
runner links know; the store's dispatch query and the dispatcher call them."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass
class SweepQueue:
    """A running sweep's pending trials that may start now, in their order."""

    sweep_id: str
    created_at: float
    # Trials of the sweep in flight now.
    in_flight: int
    # The spec's maxParallel; 0: no cap.
    max_parallel: int = 0
    pending: list[str] = field(default_factory=list)


def fair_order(queues: Iterable[SweepQueue], limit: int) -> list[str]:
    """Up to `limit` trial ids, each from the sweep with the fewest trials in flight
    (counting those already picked; the older sweep among equals) that is under its
    maxParallel, so a small sweep is not starved behind a large one."""
    heap = [(q.in_flight, q.created_at, q.sweep_id, q) for q in queues if q.pending]
    heapq.heapify(heap)
    picked: list[str] = []
    while heap and len(picked) < limit:
        running, created_at, sweep_id, queue = heapq.heappop(heap)
        if queue.max_parallel and running >= queue.max_parallel:
            continue
        picked.append(queue.pending.pop(0))
        if queue.pending:
            heapq.heappush(heap, (running + 1, created_at, sweep_id, queue))
    return picked


def place(trials: Sequence[T], free: Mapping[str, int]) -> list[tuple[T, str]]:
    """Each trial, in order, to the runner with the most free slots (the first named
    among equals), while any has one; the trials left over wait."""
    left = {runner: slots for runner, slots in free.items() if slots > 0}
    placed = []
    for trial in trials:
        if not left:
            break
        runner = max(left, key=lambda name: left[name])
        placed.append((trial, runner))
        left[runner] -= 1
        if not left[runner]:
            del left[runner]
    return placed
