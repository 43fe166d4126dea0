"""Wiring of the orchestrator: store, dispatcher, servicer, auth, health,
reflection, and the recovery that runs before it reports SERVING."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from orchestrator_svc import store
from orchestrator_svc.config import Settings
from orchestrator_svc.dispatch import Dispatcher
from orchestrator_svc.servicer import OrchestratorServicer
from prism.service import (
    SERVER_KEEPALIVE,
    BearerTokenAuth,
    log,
    new_health,
    serve_until_signalled,
    set_serving,
)
from prism.sqlite import DbThread
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc

logger = logging.getLogger("orchestrator")

GRACE_SECONDS = 5.0


async def serve(settings: Settings) -> None:
    db = DbThread(store.db, settings.db_path, store.MODELS)
    dispatcher = Dispatcher(settings, db)
    server = grpc.aio.server(
        interceptors=[BearerTokenAuth(settings.api_token, what="API token")],
        options=SERVER_KEEPALIVE,
    )
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(
        OrchestratorServicer(dispatcher), server
    )
    health = new_health()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [
            orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = server.add_insecure_port(settings.address)
    # Health answers NOT_SERVING while unfinished sweeps are reconciled with
    # the runners; only then does the service take new work.
    await set_serving(health, False)
    await server.start()
    log(logger, "recovering", address=settings.address, port=port)
    await dispatcher.start()
    silent = await dispatcher.reconcile(settings.reconcile_seconds)
    if silent:
        log(logger, "runners did not report in time; their trials wait for them", runners=silent)
    await set_serving(health, True)
    log(
        logger,
        "serving",
        address=settings.address,
        port=port,
        runners=[name for name, _ in settings.runners],
        examples=list(settings.examples),
    )
    try:
        await serve_until_signalled(server, health, grace=GRACE_SECONDS)
    finally:
        await dispatcher.close()
        db.close()
