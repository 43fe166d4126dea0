"""Wiring of the orchestrator: store, dispatcher, servicer, auth, health,
reflection, and the recovery that runs before it reports SERVING."""

from __future__ import annotations

from orchestrator_svc import store
from orchestrator_svc.config import Settings
from orchestrator_svc.dispatch import Dispatcher
from orchestrator_svc.metrics import OrchestratorMetrics
from orchestrator_svc.news import SweepNews
from orchestrator_svc.servicer import OrchestratorServicer
from prism import logs
from prism.lifecycle import serve_until_signalled
from prism.metrics import start_endpoint
from prism.server import listen, new_server, set_serving
from prism.sqlite import DbThread
from prism.v1 import orchestrator_pb2, orchestrator_pb2_grpc

log = logs.get("orchestrator")

GRACE_SECONDS = 5.0
# Request metadata accepted, soft and hard limit alike. The gateway lets 16 KiB of request headers
# through (gateway/render.py) and adds its own; gRPC's defaults would refuse some of those as
# RESOURCE_EXHAUSTED, which a JSON client sees as 429 (at random between their 8 KiB soft and
# 16 KiB hard limits). Twice the gateway's limit leaves room for what it adds.
MAX_METADATA_BYTES = 32 * 1024


async def serve(settings: Settings) -> None:
    db = DbThread(
        store.db,
        settings.db_path,
        store.MODELS,
        schema_version=store.SCHEMA_VERSION,
        migrate=store.migrate,
        # The status reads (orchestrator_svc.answers), beside the writes.
        readers=2,
    )
    news = SweepNews()
    prometheus = OrchestratorMetrics()
    dispatcher = Dispatcher(settings, db, news, prometheus)
    prometheus.watch(db, lambda: dispatcher.links)
    server, health = new_server(
        token=settings.api_token,
        what="API token",
        services=[orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name],
        options=[
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ],
    )
    servicer = OrchestratorServicer(settings, db, news, dispatcher)
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(servicer, server)
    port = listen(server, settings.address)
    endpoint = await start_endpoint(
        settings.metrics_address, prometheus.registry, before_scrape=prometheus.refresh
    )
    # While unfinished sweeps are reconciled with the runners, health answers
    # NOT_SERVING and the API answers UNAVAILABLE (retryable): no new work yet.
    await set_serving(health, False)
    await server.start()
    log.info("recovering", address=settings.address, port=port)
    await dispatcher.start()
    silent = await dispatcher.reconcile(settings.reconcile_seconds)
    if silent:
        log.info("runners did not report in time; their trials wait for them", runners=silent)
    servicer.ready = True
    await set_serving(health, True)
    log.info(
        "serving",
        address=settings.address,
        port=port,
        runners=[name for name, _ in settings.runners] or "found by PRISM_RUNNERS_DNS",
        examples=[name for name, _ in settings.examples],
    )
    try:
        await serve_until_signalled(server, health, grace=GRACE_SECONDS)
    finally:
        if endpoint is not None:
            await endpoint.close()
        await dispatcher.close()
        db.close()
