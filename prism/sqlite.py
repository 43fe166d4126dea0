"""SQLite through Peewee, the way both services use it.

Concurrency model: each store has one `DbThread`. Every write runs on its one
writer thread, so the event loop never blocks on SQLite, writes never contend
with each other, and no connection crosses threads. Reads that must not queue
behind the writes may run instead on a few reader threads (`DbThread.read`), each
with its own read-only connection: WAL lets them read while the writer writes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

import peewee

P = ParamSpec("P")
T = TypeVar("T")

# WAL keeps readers off the writer's back; synchronous=FULL makes every commit
# survive a power cut, not only a process kill: the durability promise depends
# on a written state change staying written.
PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "full",
    "foreign_keys": 1,
    "busy_timeout": 5000,
}


class SchemaError(RuntimeError):
    """The database file was made by a version of Prism with another schema."""


class DbThread:
    def __init__(
        self,
        db: peewee.SqliteDatabase,
        path: Path,
        models: Sequence[type[peewee.Model]],
        *,
        schema_version: int = 1,
        migrate: Callable[[int], bool] | None = None,
        readers: int = 0,
    ) -> None:
        self._db = db
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        self._pool.submit(self._open, path, models, schema_version, migrate).result()
        # Peewee keeps a connection per thread: each reader opens its own when it starts.
        # Without readers, `read` runs on the writer's thread.
        self._readers_count = readers
        self._readers = (
            concurrent.futures.ThreadPoolExecutor(
                readers, thread_name_prefix="sqlite-read", initializer=self._open_reader
            )
            if readers
            else self._pool
        )

    def _open(
        self,
        path: Path,
        models: Sequence[type[peewee.Model]],
        version: int,
        migrate: Callable[[int], bool] | None,
    ) -> None:
        """Open (or make) the file; one of an older schema is brought up to date by
        `migrate(found)` in the transaction that makes the new tables, if it can."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db.init(str(path), pragmas=PRAGMAS)
        self._db.connect()
        found = self._db.execute_sql("PRAGMA user_version").fetchone()[0]
        if self._db.get_tables() and found != version:
            with self._db.atomic():
                if migrate is not None and migrate(found):
                    self._db.create_tables(models)
                    self._db.execute_sql(f"PRAGMA user_version = {int(version)}")
                    return
            self._db.close()
            raise SchemaError(
                f"{path} has schema version {found}, this version of Prism uses {version}: "
                "move the file away to start afresh"
            )
        with self._db.atomic():
            self._db.create_tables(models)
            self._db.execute_sql(f"PRAGMA user_version = {int(version)}")

    def _open_reader(self) -> None:
        self._db.connect()
        # Read-only: a write by mistake on a reader fails instead of racing the writer.
        self._db.execute_sql("PRAGMA query_only = 1")

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read on a reader thread, beside the writes, never behind them. It sees
        every write committed before it began; several queries that must agree go in one
        transaction (`db.atomic()`), which reads one snapshot."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        if self._readers is not self._pool:
            # Each reader closes its own connection: the barrier holds every one of them
            # (started now if it was not) until all have.
            everyone = threading.Barrier(self._readers_count)

            def close_reader() -> None:
                self._db.close()
                everyone.wait()

            for done in [self._readers.submit(close_reader) for _ in range(self._readers_count)]:
                done.result()
            self._readers.shutdown()
        self._pool.submit(self._db.close).result()
        self._pool.shutdown()
