"""What the benchmarks share: the engine (or a clear word when none answers) and the
gateway's JSON API with the stack's bearer token."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

import docker
import docker.errors


def engine(**options: Any) -> docker.DockerClient:
    """A client of the engine; exits naming the way to start one when none answers."""
    try:
        client = docker.from_env(**options)
        client.ping()
    except docker.errors.DockerException as error:
        sys.exit(
            f"no Docker engine answers ({error}): `make bench` starts one for the "
            "benchmarks, or `make engine` for this shell"
        )
    return client


class Api:
    """The gateway's JSON API with the stack's bearer token."""

    def __init__(self, address: str, token: str) -> None:
        self.base, self.token = f"http://{address}", token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                return json.load(reply)
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{method} {path}: {error.code} {error.read()[:500]!r}") from None

    def run(self, spec: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
        """Create the sweep, wait for its final event and return it; it must end done."""
        sweep_id = self.call("POST", "/v1/sweeps", spec)["id"]
        self.events(sweep_id, timeout)
        shown: dict[str, Any] = self.call("GET", f"/v1/sweeps/{sweep_id}")
        if shown["state"] != "done":
            raise RuntimeError(f"sweep {sweep_id} ended {shown['state']}: {shown}")
        return shown

    def events(self, sweep_id: str, timeout: float = 900) -> list[dict[str, Any]]:
        """The sweep's events from the first, followed until its final one (waiting on
        them costs the stack no polling)."""
        request = urllib.request.Request(
            f"{self.base}/v1/sweeps/{sweep_id}/events?afterSeq=0",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        seen: list[dict[str, Any]] = []
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            for raw in reply:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    seen.append(json.loads(line.removeprefix("data:")))
                    if seen[-1].get("final"):
                        return seen
        raise RuntimeError(f"sweep {sweep_id}: the events ended without a final one")
