"""Trial bootstrap, run by the init of every sandbox container.

The trial arrives in the environment because the root filesystem is read-only and
the workspace is a tmpfs that exists only once the container runs: there is no
earlier moment to copy files in. Standard library only: it runs on any base image.
"""

import json
import os
import sys

WORKSPACE = "/workspace"


def main() -> None:
    script = os.environ.pop("PRISM_SCRIPT")  # the trial should not see its own source twice
    params = os.environ["PRISM_PARAMS"] = os.environ.get("PRISM_PARAMS") or "{}"
    if not isinstance(json.loads(params), dict):
        sys.exit("prism: PRISM_PARAMS must be a JSON object")
    os.chdir(WORKSPACE)
    with open("trial.py", "w", encoding="utf-8") as f:
        f.write(script)
    with open("params.json", "w", encoding="utf-8") as f:
        f.write(params)
    os.makedirs("output", exist_ok=True)
    # exec, not a child: the trial's exit status becomes the container's.
    os.execv(sys.executable, [sys.executable, os.path.join(WORKSPACE, "trial.py")])


if __name__ == "__main__":
    main()
