"""The sandbox image a trial runs in: the runner's own, or one derived for its requirements.

Concurrency model: a build is blocking (Docker SDK, pip) and may take minutes, so it
runs on a daemon thread of its own: the event loop never waits on it, and a runner
that shuts down does not wait for it either. One build per distinct set of
requirements at a time: trials that need the same set wait for the first one's build
and then find its image made.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import TypeVar

import docker.errors
import requests

from prism.trial import Outcome
from sandbox.images import ImageError, RequirementsError

T = TypeVar("T")

# requirements -> the derived image's tag (sandbox.images.ensure_requirements_image
# with the runner's client and pip settings bound).
Build = Callable[[Sequence[str]], str]


class ImageUnavailable(Exception):
    """No image for the trial. ``outcome`` says whose fault: failed when pip refused the
    trial's own requirements, sandbox_error for the engine, the base or the index."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class TrialImages:
    def __init__(self, build: Build) -> None:
        self._build = build
        # Per distinct set: its lock and how many trials hold or wait for it, so the
        # entry goes once nobody needs it.
        self._locks: dict[tuple[str, ...], tuple[asyncio.Lock, int]] = {}

    async def image_for(self, requirements: Sequence[str]) -> str:
        """The derived image's tag; raises ImageUnavailable."""
        key = tuple(sorted(requirements))
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await _on_daemon_thread(lambda: self._build(list(requirements)))
        except RequirementsError as error:
            raise ImageUnavailable(Outcome.FAILED, str(error)) from None
        except (ImageError, docker.errors.DockerException, requests.RequestException) as error:
            raise ImageUnavailable(
                Outcome.SANDBOX_ERROR, f"no sandbox image with the requirements: {error}"
            ) from None
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


async def _on_daemon_thread(work: Callable[[], T]) -> T:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def deliver(settle: Callable[[], None]) -> None:
        def settle_unless_cancelled() -> None:
            if not done.done():  # done: the waiting trial was cancelled
                settle()

        with suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle_unless_cancelled)

    def run() -> None:
        try:
            value = work()
        except BaseException as error:
            deliver(functools.partial(done.set_exception, error))
        else:
            deliver(functools.partial(done.set_result, value))

    threading.Thread(target=run, name="image build", daemon=True).start()
    return await done
