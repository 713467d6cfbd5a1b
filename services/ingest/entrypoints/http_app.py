"""The ingest service process: provisions the input topic and serves health and metrics.

In this slice communes' events reach Kafka through ``odc send`` (entrypoints/send_command.py); the
authenticated HTTP push API is issue #5 and will be mounted on this app."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics, generate_latest

from services.infrastructure.kafka_topics import TopicSpec, ensure_topics
from services.infrastructure.logging_setup import configure_logging
from services.ingest.metrics import IngestMetrics
from services.ingest.settings import IngestSettings

log = logging.getLogger("odc.ingest")


def build_app(settings: IngestSettings, registry: CollectorRegistry | None = None) -> web.Application:
    registry = registry or CollectorRegistry()
    metrics = IngestMetrics(registry)
    state = {"topics": False}

    async def provision(app: web.Application) -> None:
        await ensure_topics(
            settings.kafka_bootstrap, [TopicSpec(settings.topic_change_events, settings.input_partitions)]
        )
        state["topics"] = True
        metrics.ready.labels("ingest").set(1)

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": "ingest"})

    async def readyz(request: web.Request) -> web.Response:
        return web.json_response({"ready": state["topics"]}, status=200 if state["topics"] else 503)

    app = web.Application(client_max_size=1 << 20)
    app.on_startup.append(provision)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app["metrics"] = metrics
    return app


def main() -> None:
    disable_created_metrics()
    settings = IngestSettings()
    configure_logging(settings.log_level)
    web.run_app(
        build_app(settings), host=settings.web_host, port=settings.web_port, print=None, loop=asyncio.new_event_loop()
    )
