"""Composition root of the normaliser: builds the faust app with its agent, relay task and web pages.

The agent is glue: decode nothing itself, call ``process_batch`` with its ports, retry transient
failures (faust acks a batch when the agent raises, so an exception must never "handle" a batch), and
count. Known faust defects are avoided by design: concurrency=1, no Tables, no exactly_once
(see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics, generate_latest

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.event_signature import HEADER_KEY_ID, EventAuthenticator
from services.contract.messages import SourcePosition
from services.infrastructure.database import is_transient, make_engine
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics
from services.infrastructure.logging_setup import configure_logging
from services.infrastructure.outbox_relay import OutboxRelay, make_producer
from services.infrastructure.retry import retry_transient
from services.infrastructure.signing_keys import SigningKeyCache, create_signing_key_schema
from services.normalise.adapters.outboxes import feature_changes_outbox, rejections_outbox
from services.normalise.adapters.postgis_store import PostgisUnitOfWork, create_schema
from services.normalise.domain.canonical_feature import EventNormaliser
from services.normalise.metrics import NormaliseMetrics
from services.normalise.service_layer.process_batch import BatchReport, InboundMessage, process_batch
from services.normalise.settings import NormaliseSettings

log = logging.getLogger("odc.normalise")


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class Health:
    database: bool = False
    relay: bool = False


def kafka_headers(raw: object) -> tuple[tuple[str, bytes], ...]:
    """faust gives headers as a list of pairs or a mapping; the handler wants pairs of (str, bytes)."""
    items = raw.items() if isinstance(raw, dict) else (raw or ())
    return tuple((str(k), v if isinstance(v, bytes) else b"") for k, v in items)  # type: ignore[union-attr]


def topic_specs(s: NormaliseSettings) -> list[TopicSpec]:
    return [
        TopicSpec(s.topic_change_events, s.input_partitions),
        TopicSpec(s.topic_feature_changes, 3),
        TopicSpec(s.topic_rejected, 3),
    ]


def build_app(settings: NormaliseSettings, registry: CollectorRegistry | None = None) -> faust.App:
    registry = registry or CollectorRegistry()
    metrics = NormaliseMetrics(registry)
    codecs = Codecs()
    normaliser = EventNormaliser(DatasetCatalogue.load())
    engine = make_engine(settings.database_url.get_secret_value())
    clock = SystemClock()
    health = Health()
    signing_keys = SigningKeyCache(engine, settings.signing_keys_max_age_seconds)

    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        settings.group_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=settings.input_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        producer_acks=-1,
        broker_commit_interval=1.0,
        datadir=f"{settings.state_dir}/{settings.group_id}",
    )
    input_topic = app.topic(
        settings.topic_change_events, value_serializer="raw", key_serializer="raw", partitions=settings.input_partitions
    )

    def unit_of_work() -> PostgisUnitOfWork:
        return PostgisUnitOfWork(engine)

    def on_db_retry(error: BaseException, attempt: int) -> None:
        health.database = False
        metrics.ready.labels("normalise").set(0)
        metrics.transient.labels("normalise", "batch_transaction").inc()

    def on_db_recovered() -> None:
        health.database = True
        metrics.ready.labels("normalise").set(1)

    @app.agent(input_topic, concurrency=1)
    async def normalise(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(settings.batch_max_events, within=settings.batch_within_seconds):
            batch = [
                InboundMessage(
                    e.message.value if isinstance(e.message.value, bytes) else b"",
                    SourcePosition(e.message.topic, e.message.partition, e.message.offset),
                    kafka_headers(e.message.headers),
                )
                for e in events
            ]

            async def handle(batch: list[InboundMessage] = batch) -> BatchReport:
                keys = await signing_keys.keys(
                    {v.decode("ascii", "replace") for m in batch for k, v in m.headers if k == HEADER_KEY_ID}
                )
                authenticator = EventAuthenticator(keys, require_signed=settings.require_signed_events)
                return await process_batch(
                    batch,
                    codecs=codecs,
                    normaliser=normaliser,
                    uow_factory=unit_of_work,
                    clock=clock,
                    authenticator=authenticator,
                )

            started = time.perf_counter()
            try:
                report = await retry_transient(
                    handle,
                    is_transient=is_transient,
                    what="normalise batch",
                    on_retry=on_db_retry,
                    on_recovered=on_db_recovered,
                )
            except BaseException:
                # Not transient: a bug. Leaving the generator would ack the batch and lose it; stop the
                # process instead so the batch is redelivered after the fix.
                log.critical(
                    "non-transient failure while processing a batch; stopping without acking it", exc_info=True
                )
                os._exit(70)
            metrics.observe(report, time.perf_counter() - started)
            for e in events[-1:]:
                tp = e.message.tp
                hw = app.consumer.highwater(tp)
                if hw is not None:
                    metrics.lag.labels("normalise", tp.topic, str(tp.partition)).set(max(0, hw - e.message.offset - 1))

    @app.task
    async def relay_outboxes() -> None:
        producer = make_producer(settings.kafka_bootstrap, "odc-normalise-relay")
        await producer.start()
        relays = [
            OutboxRelay(
                engine,
                producer,
                feature_changes_outbox(codecs, settings.topic_feature_changes),
                on_sent=lambda name, n: metrics.relayed.labels(name).inc(n),
            ),
            OutboxRelay(
                engine,
                producer,
                rejections_outbox(codecs, settings.topic_rejected),
                on_sent=lambda name, n: metrics.relayed.labels(name).inc(n),
            ),
        ]
        try:
            while not app.should_stop:
                sent = 0
                for relay in relays:
                    try:
                        sent += await relay.relay_once()
                        health.relay = True
                    except Exception as error:  # noqa: BLE001 - retried on the next tick, counted and logged
                        health.relay = False
                        metrics.transient.labels("normalise", f"relay_{relay.spec.name}").inc()
                        log.warning("outbox relay %s failed, will retry: %s", relay.spec.name, error)
                        await asyncio.sleep(1.0)
                if sent == 0:
                    await asyncio.sleep(settings.relay_interval_seconds)
        finally:
            await producer.stop()

    @app.page("/metrics")
    async def metrics_page(web, request):  # type: ignore[no-untyped-def]
        return web.bytes(generate_latest(registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web, request):  # type: ignore[no-untyped-def]
        return web.json({"status": "ok", "service": "normalise"})

    @app.page("/readyz")
    async def readyz(web, request):  # type: ignore[no-untyped-def]
        ok = health.database and health.relay
        return web.json({"ready": ok, "database": health.database, "relay": health.relay}, status=200 if ok else 503)

    async def prepare() -> None:
        await ensure_topics(settings.kafka_bootstrap, topic_specs(settings))
        await retry_transient(
            lambda: create_schema(engine), is_transient=is_transient, what="create schema", max_attempts=30
        )
        await create_signing_key_schema(engine)
        health.database = True
        metrics.ready.labels("normalise").set(1)
        await engine.dispose()  # pooled connections belong to this loop; faust runs its own

    app.odc_prepare = prepare  # type: ignore[attr-defined]
    app.odc_metrics = metrics  # type: ignore[attr-defined]
    app.odc_engine = engine  # type: ignore[attr-defined]
    return app


def main() -> None:
    disable_created_metrics()
    settings = NormaliseSettings()
    configure_logging(settings.log_level)
    app = build_app(settings)
    asyncio.run(app.odc_prepare())  # type: ignore[attr-defined]
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()
