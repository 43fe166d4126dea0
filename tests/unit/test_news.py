"""Waiting for a sweep's end and for news of its events (orchestrator_svc.news)."""

from __future__ import annotations

import asyncio

from orchestrator_svc.news import SweepNews


def test_every_waiter_of_a_sweep_hears_of_its_end() -> None:
    async def scenario() -> list[bool]:
        news = SweepNews()

        async def not_yet() -> bool:
            return False

        waiters = [asyncio.create_task(news.wait_finished("s", 30, not_yet)) for _ in range(3)]
        # One more that gives up first must not leave the others deaf.
        impatient = await news.wait_finished("s", 0.01, not_yet)
        news.finished("s")
        return [*await asyncio.gather(*waiters), impatient]

    assert asyncio.run(scenario()) == [True, True, True, False]


def test_a_sweep_already_finished_needs_no_wait_and_nothing_is_kept() -> None:
    async def scenario() -> tuple[bool, int]:
        news = SweepNews()

        async def done() -> bool:
            return True

        finished = await news.wait_finished("s", 5, done)
        return finished, len(news._ends) + len(news._waiting)

    assert asyncio.run(scenario()) == (True, 0)


def test_news_taken_before_a_read_is_set_by_the_next_publication() -> None:
    async def scenario() -> tuple[bool, bool]:
        news = SweepNews()
        taken = news.news()
        before = taken.is_set()
        news.published()
        return before, taken.is_set() and not news.news().is_set()

    assert asyncio.run(scenario()) == (False, True)
