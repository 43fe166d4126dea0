"""One process per runner name: a second one waits for the first to exit before it
recovers (which removes the containers labelled with the name)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from runner_svc.server import hold_name_lock

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # until the test closes it
"""


def test_a_second_process_waits_until_the_first_exits(tmp_path: Path) -> None:
    lock = tmp_path / "runners" / "runner-1.lock"
    lock.parent.mkdir()
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert first.stdout is not None and first.stdin is not None
    assert first.stdout.readline() == "held\n"
    taken = threading.Event()

    def wait_for_it() -> None:
        hold_name_lock(lock, "runner-1")
        taken.set()

    waiter = threading.Thread(target=wait_for_it, daemon=True)
    waiter.start()
    assert not taken.wait(0.5), "took the lock while the first process held it"
    first.stdin.close()  # the first one exits, and the kernel frees its lock
    first.wait(timeout=10)
    first.stdout.close()
    assert taken.wait(10)
