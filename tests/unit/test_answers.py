"""The status reads' cache (orchestrator_svc.answers) on a throwaway SQLite file, with
the store's writer and reader threads as the service has them: after every kind of
write, each read answers what a read with nothing cached answers; an unchanged sweep
is answered from the cache; and the cache never holds more than its bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import peewee
import pytest
from google.protobuf.message import Message

from orchestrator_svc import answers, domain, store
from orchestrator_svc.answers import Answer, AnswerCache, Answers
from prism.errors import NotFound
from prism.sqlite import DbThread
from prism.trial import Artifact, Outcome, TrialResult
from prism.v1 import orchestrator_pb2

T = TypeVar("T")
LOST = TrialResult(outcome=Outcome.RUNNER_LOST, reason="gone")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[DbThread]:
    thread = DbThread(
        store.db, tmp_path / "orchestrator.db", store.MODELS,
        schema_version=store.SCHEMA_VERSION, readers=2,
    )  # fmt: skip
    yield thread
    thread.close()
    store.db.init(None)


def run(db: DbThread, scenario: Callable[[], Awaitable[T]]) -> T:
    async def within() -> T:
        async with asyncio.timeout(30):
            return await scenario()

    return asyncio.run(within())


def create(sweep_id: str, trials: int = 3, **spec: Any) -> str:
    planned = [domain.PlannedTrial(f"trial-{i}", "print(1)", {"i": i}) for i in range(trials)]
    return store.create_sweep(sweep_id, "task", {"task": "task", **spec}, planned)


def start(trial_id: str) -> str:
    assigned = store.assign(trial_id, "r1")
    assert assigned is not None
    store.mark_started(assigned.execution_id)
    return assigned.execution_id


def succeed(execution_id: str, loss: float) -> None:
    result = TrialResult(
        outcome=Outcome.SUCCEEDED,
        reason="",
        stdout=f'{{"loss": {loss}}}\n',
        result={"loss": loss},
        artifacts=(Artifact("model.txt", b"weights"),),
    )
    store.finish_trial(execution_id, result)


async def reads(cached: Answers, sweep_id: str) -> list[Message]:
    return [
        await cached.sweep(sweep_id),
        await cached.status(sweep_id),
        *[await cached.trial(sweep_id, i) for i in range(3)],
    ]


def test_a_read_after_any_write_answers_what_a_read_with_nothing_cached_does(
    db: DbThread,
) -> None:
    sweep_id = "s1"
    writes: list[tuple[str, Callable[[], object]]] = [
        ("created", lambda: create(sweep_id, objective={"metric": "loss", "goal": "minimize"})),
        ("dispatched", lambda: store.assign(f"{sweep_id}/0", "r1")),
        ("started", lambda: store.mark_started(f"{sweep_id}/0")),
        ("metrics", lambda: store.record_metrics([(f"{sweep_id}/0", '{"loss": 0.5}')])),
        ("finished", lambda: succeed(f"{sweep_id}/0", 0.25)),
        ("second started", lambda: start(f"{sweep_id}/1")),
        ("handed back", lambda: store.hand_back(f"{sweep_id}/1", "the runner stops")),
        ("second again", lambda: start(f"{sweep_id}/1")),
        ("lost", lambda: store.finish_trial(f"{sweep_id}/1@2", LOST)),
        ("cancelled", lambda: store.cancel_sweep(sweep_id)),
    ]

    async def scenario() -> None:
        cached = Answers(db)
        for what, write in writes:
            if what != "created":
                before = await reads(cached, sweep_id)
                assert await reads(cached, sweep_id) == before  # kept, and served again
                assert all(
                    a is b for a, b in zip(before, await reads(cached, sweep_id), strict=True)
                )
            await db(write)
            fresh = await reads(Answers(db), sweep_id)
            assert await reads(cached, sweep_id) == fresh, f"a stale answer after: {what}"

    run(db, scenario)


def test_what_a_finished_sweep_shows_is_served_from_the_cache(db: DbThread) -> None:
    def finished() -> None:
        create("done", trials=1)
        succeed(start("done/0"), 0.5)

    async def scenario() -> tuple[orchestrator_pb2.Sweep, orchestrator_pb2.Sweep]:
        await db(finished)
        cached = Answers(db)
        first = await cached.sweep("done")
        return first, await cached.sweep("done")

    first, again = run(db, scenario)
    assert first.state == domain.SWEEP_DONE and first.trials[0].outcome == "succeeded"
    assert again is first


def test_unknown_sweeps_and_trials_are_not_found_and_not_kept(db: DbThread) -> None:
    async def scenario() -> list[str]:
        cached = Answers(db)
        errors = []
        for read in (
            lambda: cached.sweep("nope"),
            lambda: cached.status("nope"),
            lambda: cached.trial("nope", 0),
        ):
            with pytest.raises(NotFound) as raised:
                await read()
            errors.append(str(raised.value))
        await db(create, "later", 1)
        with pytest.raises(NotFound, match="no trial 5 in sweep 'later'"):
            await cached.trial("later", 5)
        assert len(cached.cache) == 0
        # Made after a read that found nothing: found now.
        assert (await cached.sweep("later")).id == "later"
        return errors

    assert run(db, scenario) == ["no sweep 'nope'"] * 2 + ["no trial 0 in sweep 'nope'"]


def test_the_readers_cannot_write(db: DbThread) -> None:
    async def scenario() -> None:
        with pytest.raises(peewee.OperationalError, match="readonly"):
            await db.read(create, "s", 1)

    run(db, scenario)


def test_reading_many_sweeps_keeps_the_cache_within_its_bytes(db: DbThread) -> None:
    def many() -> None:
        for n in range(60):
            create(f"s{n:02}")

    async def scenario() -> Answers:
        await db(many)
        cached = Answers(db, AnswerCache(max_bytes=20_000))
        for n in range(60):
            await reads(cached, f"s{n:02}")
            assert cached.cache.bytes <= 20_000
        return cached

    cached = run(db, scenario)
    assert 0 < len(cached.cache) < 60


def kept(size: int, version: int = 1) -> Answer:
    message = orchestrator_pb2.SweepStatus(task="x" * size)
    return answers.answer(version, False, message)


def test_the_least_recently_used_answer_goes_first() -> None:
    one = kept(100)
    cache = AnswerCache(max_bytes=8 * one.size)  # eight fit, each at the largest kept
    for key in "abcdefgh":
        cache.put(key, kept(100))
    assert cache.get("a") is not None  # b is now the least recently used
    cache.put("i", kept(100))
    assert cache.get("b") is None
    assert all(cache.get(key) is not None for key in "acdefghi")
    assert cache.bytes == 8 * one.size


def test_an_answer_too_large_is_not_kept_and_drops_an_older_one() -> None:
    cache = AnswerCache(max_bytes=8 * kept(1000).size)
    cache.put("a", kept(100, version=1))
    cache.put("a", kept(2000, version=2))
    assert cache.get("a") is None and cache.bytes == 0


def test_an_older_answer_never_replaces_a_newer_one() -> None:
    cache = AnswerCache()
    newer = kept(10, version=5)
    cache.put("a", newer)
    cache.put("a", kept(10, version=4))
    assert cache.get("a") is newer
    cache.put("a", replaced := kept(10, version=6))
    assert cache.get("a") is replaced and len(cache) == 1
    assert cache.bytes == replaced.size
