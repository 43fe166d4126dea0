"""Wiring of one runner process: store, sandbox, servicer, auth, health, reflection."""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
from pathlib import Path

import docker

from prism import logs
from prism.lifecycle import serve_until_signalled
from prism.metrics import start_endpoint
from prism.runner_protocol import MAX_RESULT_MESSAGE_BYTES
from prism.server import listen, new_server, set_serving
from prism.sqlite import DbThread
from prism.v1 import runner_pb2, runner_pb2_grpc
from runner_svc import store
from runner_svc.config import Settings
from runner_svc.executor import TrialExecutor
from runner_svc.images import TrialImages
from runner_svc.metrics import RunnerMetrics
from runner_svc.servicer import RunnerServicer
from sandbox import Sandbox
from sandbox.images import ensure_requirements_image

log = logs.get("runner")

# What the server gives its streams to end once the executor has stopped (they end
# as soon as they have sent what they held), beyond the drain itself.
GRACE_SECONDS = 10.0


_held_locks: list[int] = []


def hold_name_lock(path: Path, name: str) -> None:
    """Take the runner's lock, waiting (and saying so) while another process has it; it
    is held until this process exits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.warning("another process runs this runner; waiting for it to exit", runner=name)
        fcntl.flock(fd, fcntl.LOCK_EX)
    _held_locks.append(fd)


async def serve(settings: Settings) -> None:
    server, health = new_server(
        token=settings.token,
        what="runner token",
        services=[runner_pb2.DESCRIPTOR.services_by_name["Runner"].full_name],
        options=[("grpc.max_send_message_length", MAX_RESULT_MESSAGE_BYTES)],
    )
    # The address first: a second process started by mistake on a taken port
    # stops here, before its recovery could remove the first one's containers.
    port = listen(server, settings.address)
    client = docker.from_env(max_pool_size=max(8, 2 * settings.slots))
    # The engine is reached directly: requests need not look for proxies in the
    # environment before every call, a few of which each trial makes.
    client.api.trust_env = False
    # Fail fast, with the engine's own message, when the image is missing.
    await asyncio.to_thread(client.images.get, settings.image)
    metrics = RunnerMetrics()
    sandbox = Sandbox(
        client,
        image=settings.image,
        owner=settings.name,
        ahead=settings.prepared,
        # Finished containers are removed behind the trials, at most a slot's worth
        # waiting each.
        behind=settings.slots,
        on_container_started=metrics.container_started,
    )
    # One process per runner name: a second one (Swarm starts a task's replacement while
    # the old one still drains; a second `python -m runner_svc` by mistake) waits here
    # until the first has exited, before its recovery could remove the first one's
    # containers. The lock is the kernel's, on a file beside the runner's records, so it
    # ends with the process however it ends.
    await asyncio.to_thread(hold_name_lock, settings.db_path.with_suffix(".lock"), settings.name)
    db = DbThread(store.db, settings.db_path, store.MODELS, schema_version=store.SCHEMA_VERSION)
    # Nothing runs here yet, so every container with our label is an orphan of
    # an earlier process, and every trial marked running was interrupted.
    orphans = await asyncio.to_thread(sandbox.remove_orphans)
    forgotten, interrupted = await db(store.recover)
    log.info(
        "recovered",
        orphans_removed=len(orphans),
        queued_forgotten=forgotten,
        interrupted=interrupted,
    )

    images = TrialImages(
        functools.partial(
            ensure_requirements_image,
            client,
            base=settings.image,
            find_links=settings.pip_find_links,
            index_url=settings.pip_index_url,
            no_index=settings.pip_no_index,
            cert=settings.pip_cert,
        )
    )
    executor = TrialExecutor(db, sandbox, images, slots=settings.slots, metrics=metrics)
    runner_pb2_grpc.add_RunnerServicer_to_server(RunnerServicer(settings.name, executor), server)
    endpoint = await start_endpoint(settings.metrics_address, metrics.registry)
    await server.start()
    await set_serving(health, True)
    log.info(
        "serving",
        runner=settings.name,
        address=settings.address,
        port=port,
        slots=settings.slots,
        image=settings.image,
        drain_seconds=settings.drain_seconds,
    )
    try:
        await serve_until_signalled(
            server,
            health,
            grace=settings.drain_seconds + GRACE_SECONDS,
            on_stop=functools.partial(executor.stop, settings.drain_seconds),
        )
    finally:
        if endpoint is not None:
            await endpoint.close()
        await asyncio.to_thread(sandbox.close)
        db.close()
        client.close()
