"""How the bootstrap takes its trial from stdin: the key, a length and that many bytes,
without waiting for the stream's end (a proxy or TLS between the runner and the engine
may never pass a half-close on); anything else is a setup failure before any trial code
runs, which the host reports as the sandbox's (sandbox_error), never the trial's."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import suppress

import pytest

from sandbox import bootstrap

KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def stdin() -> Iterator[int]:
    """A pipe in place of fd 0: yields its write end, left open (no end of stream)."""
    read, write = os.pipe()
    saved = os.dup(0)
    os.dup2(read, 0)
    os.close(read)
    try:
        yield write
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        with suppress(OSError):  # a test may have closed it: the stream's end
            os.close(write)


def framed(trial: bytes, key: str = KEY, length: int | None = None) -> bytes:
    return b"%s\n%d\n%s" % (key.encode(), len(trial) if length is None else length, trial)


def receive() -> tuple[str, bytes]:
    key, size, start = bootstrap._header()
    return key, bootstrap._body(start, size)


def test_the_trial_is_read_whole_with_the_stream_still_open(stdin: int) -> None:
    trial = json.dumps({"script": "print('ü')" + "#" * 200_000, "params": "{}"}).encode()
    writer = threading.Thread(target=os.write, args=(stdin, framed(trial)))
    writer.start()  # more than a pipe holds: read while it is written
    assert receive() == (KEY, trial)
    writer.join()
    # Then stdin is /dev/null for the trial.
    assert os.read(0, 10) == b""


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        (framed(b"{}", key="not-a-key"), "does not start with the run's key"),
        (framed(b"{}", length=bootstrap.MAX_TRIAL_BYTES + 1), "the trial's length"),
        (b"x" * 200, "does not start with the run's key and a length"),
    ],
)
def test_a_malformed_header_is_refused_at_once(stdin: int, written: bytes, problem: str) -> None:
    os.write(stdin, written)
    with pytest.raises(ValueError, match=problem):
        receive()


def test_a_stream_ending_early_is_refused(stdin: int) -> None:
    os.write(stdin, framed(b'{"script": "pass"}', length=100))
    os.close(stdin)
    with pytest.raises(ValueError, match="ended before the trial did"):
        receive()
