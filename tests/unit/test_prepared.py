"""Containers prepared ahead and removed behind (sandbox.prepared), with a fake engine:
each container is made once, serves at most one trial, is removed exactly once, and
what exists at once stays within the bounds."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Hashable, Iterator
from typing import Protocol

import pytest

from sandbox.prepared import Prepared
from tests.conftest import wait_until


class Engine:
    """Creates and removes fake containers, counting what exists."""

    def __init__(self) -> None:
        self._ids = itertools.count()
        self.lock = threading.Lock()
        self.kinds: dict[str, Hashable] = {}
        self.removed: list[str] = []
        self.most = 0
        self.failing = False
        self.creations = 0
        # Cleared: removals block, as on a slow engine.
        self.removing = threading.Event()
        self.removing.set()
        self.removals_begun = 0

    def create(self, kind: Hashable) -> str:
        with self.lock:
            self.creations += 1
            if self.failing:
                raise RuntimeError("the engine is down")
            container = f"c{next(self._ids)}"
            self.kinds[container] = kind
            self.most = max(self.most, len(self.existing))
            return container

    def remove(self, container: str) -> None:
        with self.lock:
            self.removals_begun += 1
        self.removing.wait()
        with self.lock:
            assert container in self.kinds and container not in self.removed, container
            self.removed.append(container)

    @property
    def existing(self) -> set[str]:
        return set(self.kinds) - set(self.removed)


@pytest.fixture
def engine() -> Engine:
    return Engine()


class Tracked(Prepared):
    """Remembers what it handed out: a trial's container is the trial's to discard."""

    given: set[str]

    def take(self, kind: Hashable) -> tuple[str, bool]:
        container, ahead = super().take(kind)
        self.given = getattr(self, "given", set()) | {container}
        return container, ahead


class Make(Protocol):
    def __call__(self, *, ahead: int, behind: int) -> Prepared: ...


@pytest.fixture
def make(engine: Engine) -> Iterator[Make]:
    made: list[Tracked] = []

    def factory(*, ahead: int, behind: int) -> Prepared:
        prepared = Tracked(engine.create, engine.remove, ahead=ahead, behind=behind)
        made.append(prepared)
        return prepared

    yield factory
    engine.removing.set()
    for prepared in made:
        prepared.close()
    # Whatever happened, nothing is left but what trials still hold (the tests' own),
    # and nothing was removed twice.
    given = set().union(*(getattr(p, "given", set()) for p in made))
    assert engine.existing <= given
    assert len(engine.removed) == len(set(engine.removed))


def test_without_ahead_or_behind_each_trial_makes_and_removes_its_own(
    engine: Engine, make: Make
) -> None:
    prepared = make(ahead=0, behind=0)
    container, ahead = prepared.take("small")
    assert (ahead, engine.kinds[container]) == (False, "small")
    prepared.discard(container)
    assert engine.removed == [container]
    assert prepared.ready() == set()


def test_the_latest_kind_is_prepared_up_to_ahead(engine: Engine, make: Make) -> None:
    prepared = make(ahead=3, behind=2)
    first, ahead = prepared.take("small")
    assert not ahead, "nothing is prepared before the first demand"
    wait_until(lambda: len(prepared.ready()) == 3, what="three prepared")
    taken = [prepared.take("small") for _ in range(3)]
    assert all(ahead for _, ahead in taken)
    assert {c for c, _ in taken} == set(list(engine.kinds)[1:4])
    # Each container serves one trial: none is handed out twice.
    wait_until(lambda: len(prepared.ready()) == 3, what="three prepared again")
    assert prepared.ready().isdisjoint({first} | {c for c, _ in taken})
    assert engine.most <= 4 + 3


def test_kinds_taken_lately_share_what_is_prepared(
    engine: Engine, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared = make(ahead=4, behind=4)
    prepared.discard(prepared.take("small")[0])
    wait_until(lambda: len(prepared.ready()) == 4, what="four small prepared")
    prepared.discard(prepared.take("large")[0])
    # Both taken lately: two each, the small ones past their share removed.
    wait_until(
        lambda: (
            sorted(str(engine.kinds[c]) for c in prepared.ready()) == ["large"] * 2 + ["small"] * 2
        ),
        what="two of each kind",
    )
    # Sweeps of the two kinds alternating on the runner: each take finds one prepared,
    # and each costs one creation, not a cascade of them.
    before = engine.creations
    for i in range(20):
        wait_until(lambda: len(prepared.ready()) == 4, what="the share refilled")
        container, ahead = prepared.take("small" if i % 2 else "large")
        assert ahead
        prepared.discard(container)
    wait_until(lambda: len(prepared.ready()) == 4, what="the share refilled")
    assert engine.creations - before == 20
    # A kind no longer taken gives its room up.
    monkeypatch.setattr("sandbox.prepared.RECENT_SECONDS", 0.2)
    threading.Event().wait(0.3)
    prepared.discard(prepared.take("large")[0])
    wait_until(
        lambda: (
            {engine.kinds[c] for c in prepared.ready()} == {"large"} and len(prepared.ready()) == 4
        ),
        what="only large ones prepared",
    )
    wait_until(lambda: engine.existing == prepared.ready(), what="the small ones removed")


def test_many_kinds_cost_a_creation_each_and_leave_no_trace(
    engine: Engine, make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sandbox.prepared.RECENT_SECONDS", 0.2)
    prepared = make(ahead=2, behind=2)
    for i in range(50):  # a new kind each time (limits that differ by a hair)
        prepared.discard(prepared.take(("small", 1 + i * 1e-6))[0])
    assert engine.creations <= 50 + 2 * 50
    assert len(prepared._taken_at) <= 50
    threading.Event().wait(0.5)
    prepared.discard(prepared.take("last")[0])
    wait_until(
        lambda: {engine.kinds[c] for c in prepared.ready()} == {"last"},
        what="the old kinds forgotten",
    )
    assert set(prepared._ready) == {"last"} and set(prepared._taken_at) == {"last"}


def test_removals_wait_behind_up_to_the_bound_then_happen_at_once(
    engine: Engine, make: Make
) -> None:
    prepared = make(ahead=0, behind=2)
    engine.removing.clear()  # the engine is slow to remove
    containers = [prepared.take("small")[0] for _ in range(6)]
    prepared.discard(containers.pop(0))
    wait_until(lambda: engine.removals_begun == 1, what="the remover at work")
    done = []

    def discard_all() -> None:
        for container in containers:
            prepared.discard(container)
            done.append(container)

    worker = threading.Thread(target=discard_all, daemon=True)
    worker.start()
    # One is being removed, two wait: the next discard removes its own and blocks.
    wait_until(lambda: len(done) == 2, what="two discards returned")
    worker.join(0.2)
    assert len(done) == 2, "a discard past the bound waits for its own removal"
    assert engine.removals_begun == 2
    engine.removing.set()
    worker.join(5)
    wait_until(lambda: engine.existing == set(), what="every container removed")


def test_a_failing_engine_is_tried_again_on_demand_not_in_a_loop(
    engine: Engine, make: Make
) -> None:
    prepared = make(ahead=2, behind=1)
    engine.failing = True
    with pytest.raises(RuntimeError):
        prepared.take("small")
    wait_until(lambda: engine.creations == 2, what="one attempt to prepare")
    threading.Event().wait(0.3)
    assert engine.creations == 2
    engine.failing = False
    prepared.take("small")
    wait_until(lambda: len(prepared.ready()) == 2, what="prepared once the engine is back")


def test_close_removes_what_was_prepared_and_what_waits(engine: Engine, make: Make) -> None:
    prepared = make(ahead=2, behind=3)
    containers = [prepared.take("small")[0] for _ in range(3)]
    wait_until(lambda: len(prepared.ready()) == 2, what="two prepared")
    engine.removing.clear()
    for container in containers:
        prepared.discard(container)
    engine.removing.set()
    prepared.close()
    assert engine.existing == set()
    # Closed: a late discard removes at once.
    late = engine.create("small")
    prepared.discard(late)
    assert late in engine.removed
