"""The status reads (a sweep, its Prism-compatible status, one trial) answered from a
cache of built answers, on the store's reader threads.

Why: each of these reads used to queue on the store's one thread behind every write
and build its answer again through Peewee (about a millisecond of CPU a read, for a
sweep of three trials), so reads bounded each other and delayed the writes. Here a
read of an unchanged sweep costs one primary-key lookup on a reader connection, and
one of a finished sweep none.

Freshness: an answer is kept with the version of the sweep it was built from, its
`last_seq`, read in the same transaction as the rest. Every change to a sweep or to
one of its trials appends an event in the transaction that makes it
(orchestrator_svc.store), and so bumps `last_seq`: a read that begins after a write
committed reads the new `last_seq`, misses, and builds again. A finished sweep never
changes again (none of its trials is in flight, and every write checks that first),
so its answers are served without a lookup.

Memory: at most `max_bytes` of answers, each counted as its serialised size plus a
fixed cost, the least recently used dropped first; an answer of more than an eighth of
that is never kept.

Concurrency model: the cache is used on the event loop only; lookups and builds run on
the store's reader threads (prism.sqlite.DbThread.read). A kept answer is shared by
every call that gets it: nobody may change it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from google.protobuf.message import Message

from orchestrator_svc import store, sweeps, views
from prism.errors import NotFound
from prism.sqlite import DbThread
from prism.v1 import orchestrator_pb2

# Answers kept, in bytes, at most (a sweep of three trials takes about 2 KiB).
MAX_BYTES = 32 * 2**20
# What an answer costs beyond its serialised bytes: its key, its entry, the objects.
ENTRY_BYTES = 512


@dataclass(frozen=True)
class Answer:
    # The sweep's last_seq when the answer was built.
    version: int
    finished: bool
    message: Message
    size: int


def answer(version: int, finished: bool, message: Message) -> Answer:
    return Answer(version, finished, message, message.ByteSize() + ENTRY_BYTES)


class AnswerCache:
    """Answers by key, least recently used dropped first beyond `max_bytes`."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._kept: collections.OrderedDict[Hashable, Answer] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, key: Hashable) -> Answer | None:
        found = self._kept.get(key)
        if found is not None:
            self._kept.move_to_end(key)
        return found

    def put(self, key: Hashable, new: Answer) -> None:
        """Keep `new`, unless a newer answer is kept already (two reads that missed
        together may finish in any order)."""
        old = self._kept.get(key)
        if old is not None and old.version > new.version:
            return
        self._drop(key)
        if new.size > self.max_bytes // 8:
            return
        self._kept[key] = new
        self.bytes += new.size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._kept)))

    def _drop(self, key: Hashable) -> None:
        old = self._kept.pop(key, None)
        if old is not None:
            self.bytes -= old.size


# Peewee takes fifty times as long as SQLite to build and read this query; it runs
# on every read of a sweep that has not finished.
_VERSION = (
    f'SELECT "{store.Sweep.last_seq.column_name}", "{store.Sweep.finished_at.column_name}" '
    f'FROM "{store.Sweep._meta.table_name}" WHERE "{store.Sweep.id.column_name}" = ?'  # type: ignore[attr-defined]
)


def version(sweep_id: str) -> int | None:
    """The sweep's last_seq; None for an unknown sweep."""
    row = store.db.execute_sql(_VERSION, (sweep_id,)).fetchone()
    return None if row is None else int(row[0])


def _sweep(sweep_id: str) -> Answer | None:
    with store.db.atomic():  # one snapshot: the version is that of what is shown
        found = store.sweep_answer(sweep_id, first=views.SWEEP_TRIALS)
        if found is None:
            return None
        artifacts = store.artifacts_by_trial([t.id for t in found.trials])
    row = found.sweep
    shown = views.sweep(row, found, artifacts)
    return answer(row.last_seq, row.finished_at is not None, shown)


def _status(sweep_id: str) -> Answer | None:
    with store.db.atomic():
        found = store.sweep_with_trials(sweep_id, output_budget=sweeps.OUTPUT_BUDGET_CHARS)
    if found is None:
        return None
    row, trials = found
    return answer(row.last_seq, row.finished_at is not None, sweeps.status(row, trials))


def _trial(sweep_id: str, index: int) -> Answer | None:
    with store.db.atomic():
        row = store.sweep(sweep_id)
        trial = None if row is None else store.trial_at(sweep_id, index)
        if row is None or trial is None:
            return None
        artifacts = store.artifacts(trial.id)
    return answer(row.last_seq, row.finished_at is not None, views.trial(trial, artifacts))


class Answers:
    """The status reads, from the cache while their sweep has not changed."""

    def __init__(self, db: DbThread, cache: AnswerCache | None = None) -> None:
        self._db = db
        self.cache = AnswerCache() if cache is None else cache

    async def sweep(self, sweep_id: str) -> orchestrator_pb2.Sweep:
        """GetSweep's answer."""
        found = await self._answer(("sweep", sweep_id), sweep_id, _sweep, sweep_id)
        if found is None:
            raise NotFound(f"no sweep {sweep_id[:100]!r}")
        return found  # type: ignore[return-value]

    async def status(self, sweep_id: str) -> orchestrator_pb2.SweepStatus:
        """GetSweepStatus's answer (GET /sweeps/{id})."""
        found = await self._answer(("status", sweep_id), sweep_id, _status, sweep_id)
        if found is None:
            raise NotFound(f"no sweep {sweep_id[:100]!r}")
        return found  # type: ignore[return-value]

    async def trial(self, sweep_id: str, index: int) -> orchestrator_pb2.Trial:
        """GetTrial's answer."""
        found = await self._answer(("trial", sweep_id, index), sweep_id, _trial, sweep_id, index)
        if found is None:
            raise NotFound(f"no trial {index} in sweep {sweep_id[:100]!r}")
        return found  # type: ignore[return-value]

    async def _answer(
        self,
        key: Hashable,
        sweep_id: str,
        build: Callable[..., Answer | None],
        *args: object,
    ) -> Message | None:
        kept = self.cache.get(key)
        if kept is not None and (
            kept.finished or await self._db.read(version, sweep_id) == kept.version
        ):
            return kept.message
        built = await self._db.read(build, *args)
        if built is None:
            return None
        self.cache.put(key, built)
        return built.message
