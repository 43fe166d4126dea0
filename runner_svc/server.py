"""Wiring of one runner process: store, sandbox, servicer, auth, health, reflection."""

from __future__ import annotations

import logging

import docker
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from prism.service import (
    SERVER_KEEPALIVE,
    BearerTokenAuth,
    log,
    new_health,
    serve_until_signalled,
    set_serving,
)
from prism.sqlite import DbThread
from prism.v1 import runner_pb2, runner_pb2_grpc
from runner_svc import store
from runner_svc.config import Settings
from runner_svc.executor import TrialExecutor
from runner_svc.servicer import RunnerServicer
from sandbox import Sandbox

logger = logging.getLogger("runner")

GRACE_SECONDS = 10.0


async def serve(settings: Settings) -> None:
    client = docker.from_env(max_pool_size=max(8, 2 * settings.slots))
    client.images.get(settings.image)  # fail fast, with the engine's message, when it is missing
    sandbox = Sandbox(client, image=settings.image, owner=settings.name)
    db = DbThread(store.db, settings.db_path, store.MODELS)
    # Nothing runs here yet, so every container with our label is an orphan of
    # an earlier process, and every trial marked running was interrupted.
    orphans = sandbox.remove_orphans()
    forgotten, interrupted = await db(store.recover)
    log(
        logger,
        "recovered",
        orphans_removed=len(orphans),
        queued_forgotten=forgotten,
        interrupted=interrupted,
    )

    executor = TrialExecutor(db, sandbox, slots=settings.slots)
    server = grpc.aio.server(
        interceptors=[BearerTokenAuth(settings.token, what="runner token")],
        options=SERVER_KEEPALIVE,
    )
    runner_pb2_grpc.add_RunnerServicer_to_server(RunnerServicer(executor), server)
    health = new_health()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [
            runner_pb2.DESCRIPTOR.services_by_name["Runner"].full_name,
            reflection.SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ],
        server,
    )
    port = server.add_insecure_port(settings.address)
    await server.start()
    await set_serving(health, True)
    log(
        logger,
        "serving",
        runner=settings.name,
        address=settings.address,
        port=port,
        slots=settings.slots,
        image=settings.image,
    )
    try:
        await serve_until_signalled(server, health, grace=GRACE_SECONDS, on_stop=executor.close)
    finally:
        db.close()
        client.close()
