"""The fault-injection suite run for longer: SIGKILL of the orchestrator and
runners at seeded random instants for --minutes, then every sweep must be
complete with no finished execution run again and no result lost.

    .venv/bin/python bench/soak.py --minutes 10 [--seed N]

Prints the suite's summary line (sweeps, trials, kills, reexecuted_finished,
lost_results) and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    env = {
        **os.environ,
        "PRISM_FAULT_SECONDS": str(args.minutes * 60),
        "PRISM_FAULT_SEED": str(args.seed),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "-o",
            f"timeout={int(args.minutes * 60 + 900)}",
            "tests/test_faults.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("fault injection:")]
    print(lines[-1] if lines else done.stdout[-3000:] + done.stderr[-2000:])
    print(f"soak: {'passed' if done.returncode == 0 else 'FAILED'} ({args.minutes:g} min)")
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
