"""Composition root of the publisher: a consumer loop recording canonical changes, a loop cutting due
versions, the notification outbox relay, webhook deliveries and the HTTP API (uvicorn), in one process.

Like the normaliser, it consumes with a plain aiokafka loop rather than a faust agent: faust's
``take_events`` costs ~200 us of CPU per event against ~5 us for ``getmany`` (benchmarks/consumer_overhead.py,
docs/performance.md). Offsets are committed after the transaction that records the changes (idempotent on
change_id), so a crash or a rebalance in between only replays changes already recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry, disable_created_metrics

from services.contract.avro_catalogue import UndecodableMessage
from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.infrastructure.api_tokens import PostgresTokenStore, create_api_token_schema
from services.infrastructure.database import is_transient, make_engine
from services.infrastructure.kafka_consumer import commit_offsets, make_batch_consumer, start_consumer
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics
from services.infrastructure.logging_setup import configure_logging
from services.infrastructure.outbox_relay import OutboxRelay, make_producer
from services.infrastructure.readiness import CachedCheck, broker_reachable, database_answers
from services.infrastructure.retry import retry_transient
from services.publish.adapters.export_files import LocalExportFiles
from services.publish.adapters.http_webhook_sender import HttpxWebhookSender, SystemResolver
from services.publish.adapters.notification_outbox import notifications_outbox
from services.publish.adapters.postgis_store import PostgresPublishUnitOfWork, create_schema
from services.publish.adapters.push_api_client import HttpPushApi
from services.publish.adapters.read_model import PostgresReadModel
from services.publish.adapters.webhook_store import PostgresDeliveryStore, PostgresSubscriptionQueries
from services.publish.domain.dcat import ContactPoint
from services.publish.domain.webhooks import DeliveryState, RetryPolicy
from services.publish.entrypoints.http_api import build_api
from services.publish.metrics import PublishMetrics
from services.publish.service_layer.handlers import cut_due_versions, record_changes
from services.publish.service_layer.webhooks import DeliveryDispatcher
from services.publish.settings import PublishSettings

log = logging.getLogger("odc.publish")


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside the worker's event loop: the worker owns the signals and the shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Stopping:
    """Set by SIGTERM/SIGINT or by a loop that cannot go on; every loop checks it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    @property
    def should_stop(self) -> bool:
        return self.event.is_set()


def build_worker(settings: PublishSettings, registry: CollectorRegistry | None = None) -> PublishWorker:
    registry = registry or CollectorRegistry()
    metrics = PublishMetrics(registry)
    codecs = Codecs()
    catalogue = DatasetCatalogue.load(territory=settings.territory)
    engine = make_engine(settings.database_url.get_secret_value())
    clock = SystemClock()
    health = {"database": False, "relay": False}
    base_url = settings.base_url()

    app = Stopping()

    def uow() -> PostgresPublishUnitOfWork:
        return PostgresPublishUnitOfWork(engine, codecs)

    def delivery_store() -> PostgresDeliveryStore:
        return PostgresDeliveryStore(engine)

    resolver = SystemResolver()
    api = build_api(
        base_url=base_url,
        catalogue=catalogue,
        read_model=PostgresReadModel(engine),
        subscriptions=PostgresSubscriptionQueries(engine),
        delivery_store_factory=delivery_store,
        resolver=resolver,
        clock=clock,
        metrics=metrics,
        registry=registry,
        health=health,
        tokens=PostgresTokenStore(engine),
        dcat_contact=ContactPoint(settings.dcat_contact_name, settings.dcat_contact_email, settings.dcat_contact_url),
        live_checks={
            "broker": CachedCheck(
                lambda: broker_reachable(settings.kafka_bootstrap, settings.readiness_timeout_seconds)
            ),
            "database": CachedCheck(lambda: database_answers(engine, settings.readiness_timeout_seconds)),
        },
        allow_private_targets=settings.webhook_allow_private_targets,
        sse_poll_seconds=settings.sse_poll_seconds,
        sse_keepalive_seconds=settings.sse_keepalive_seconds,
        secret_rotation_overlap_seconds=settings.webhook_secret_rotation_overlap_seconds,
        async_topics={
            "featureChanges": settings.topic_feature_changes,
            "datasetVersions": settings.topic_notifications,
        },
        kafka_bootstrap=settings.kafka_bootstrap,
        push_api=HttpPushApi(settings.ingest_url),
        ingest_public_url=(settings.ingest_public_url or settings.ingest_url).rstrip("/"),
        edit_wait_seconds=settings.edit_wait_seconds,
        export_files=LocalExportFiles(settings.export_cache_dir, settings.export_cache_max_bytes),
    )

    def on_retry(error: BaseException, attempt: int) -> None:
        health["database"] = False
        metrics.ready.labels("publish").set(0)
        metrics.transient.labels("publish", "database").inc()

    def on_recovered() -> None:
        health["database"] = True
        metrics.ready.labels("publish").set(1)

    async def record() -> None:
        consumer = make_batch_consumer(
            settings.topic_feature_changes,
            service="publish",
            bootstrap=settings.kafka_bootstrap,
            security=KafkaClientSecurity.from_settings(settings),
            group_id=settings.group_id,
            batch_max_events=settings.batch_max_events,
            fetch_min_bytes=settings.fetch_min_bytes,
            fetch_max_wait_seconds=settings.fetch_max_wait_seconds,
        )
        await start_consumer(consumer)
        try:
            while not app.should_stop:
                by_partition = await consumer.getmany(
                    timeout_ms=int(settings.batch_within_seconds * 1000), max_records=settings.batch_max_events
                )
                events = [r for rs in by_partition.values() for r in rs]
                if events:
                    await record_batch(events)
                    await commit(consumer, {tp: rs[-1].offset + 1 for tp, rs in by_partition.items() if rs})
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def commit(consumer: AIOKafkaConsumer, offsets: dict[Any, int]) -> None:
        await commit_offsets(
            consumer,
            offsets,
            service="publish",
            transient=metrics.transient,
            lag=metrics.lag,
            stopping=lambda: app.should_stop,
            on_rebalance="the changes will be read again (ignored by change_id)",
        )

    async def record_batch(events: list[Any]) -> None:
        changes = []
        for e in events:
            try:
                changes.append(codecs.decode_feature_change(e.value))
            except UndecodableMessage as bad:  # only our normaliser writes here; count, never crash
                metrics.rejected.labels("", bad.reason).inc()
                log.error(
                    "undecodable feature change at %s/%s/%s: %s",
                    e.topic,
                    e.partition,
                    e.offset,
                    bad.message,
                    extra={
                        "source": f"{e.topic}/{e.partition}/{e.offset}",
                        "reason": bad.reason,
                    },
                )
        started = time.perf_counter()
        try:
            new = await retry_transient(
                functools.partial(record_changes, changes, uow_factory=uow, clock=clock),
                is_transient=is_transient,
                what="record changes",
                on_retry=on_retry,
                on_recovered=on_recovered,
            )
        except Exception:
            log.critical("non-transient failure recording changes; stopping without committing", exc_info=True)
            os._exit(70)
        metrics.batch_duration.labels("publish").observe(time.perf_counter() - started)
        metrics.changes_received.labels("new").inc(new)
        if log.isEnabledFor(logging.DEBUG):  # one line per change: off unless asked for
            for c in changes:
                log.debug(
                    "recorded change %d",
                    c.change_id,
                    extra={
                        "event_id": c.event_id,
                        "dataset": c.dataset,
                        "commune": c.commune,
                        "feature_id": c.feature_id,
                        "change_id": c.change_id,
                    },
                )
        metrics.changes_received.labels("duplicate").inc(len(changes) - new)

    async def cut_versions() -> None:
        while not app.should_stop:
            started = time.perf_counter()
            try:
                drafts = await retry_transient(
                    lambda: cut_due_versions(
                        catalogue=catalogue,
                        uow_factory=uow,
                        clock=clock,
                        source=settings.event_source,
                        max_delay_seconds=settings.max_delay_seconds,
                        base_url=base_url,
                        max_inline_changes=settings.notify_max_inline_changes,
                    ),
                    is_transient=is_transient,
                    what="cut versions",
                    on_retry=on_retry,
                    on_recovered=on_recovered,
                )
            except Exception:
                log.critical("non-transient failure cutting versions", exc_info=True)
                os._exit(70)
            if drafts:
                metrics.cut_duration.observe(time.perf_counter() - started)
            for d in drafts:
                metrics.versions.labels(d.dataset).inc()
                metrics.latest_version.labels(d.dataset).set(d.version)
                metrics.features.labels(d.dataset).set(d.feature_count)
                log.info(
                    "published %s version %d (+%d ~%d -%d)",
                    d.dataset,
                    d.version,
                    d.added,
                    d.updated,
                    d.removed,
                    extra={
                        "dataset": d.dataset,
                        "version": d.version,
                        "first_change_id": d.first_change_id,
                        "last_change_id": d.last_change_id,
                    },
                )
            await asyncio.sleep(settings.cut_interval_seconds)

    async def relay_notifications() -> None:
        producer = make_producer(
            settings.kafka_bootstrap, "odc-publish-relay", KafkaClientSecurity.from_settings(settings)
        )
        await producer.start()
        relay = OutboxRelay(
            engine,
            producer,
            notifications_outbox(settings.topic_notifications),
            on_sent=lambda name, n: metrics.relayed.labels(name).inc(n),
        )
        try:
            while not app.should_stop:
                try:
                    sent = await relay.relay_once()
                    health["relay"] = True
                except Exception as error:  # noqa: BLE001 - retried next tick, counted and logged
                    health["relay"] = False
                    metrics.transient.labels("publish", "relay_notifications").inc()
                    log.warning("notification relay failed, will retry: %s", error)
                    sent = 0
                    await asyncio.sleep(1.0)
                if sent == 0:
                    await asyncio.sleep(settings.relay_interval_seconds)
        finally:
            await producer.stop()

    async def serve_http() -> None:
        config = uvicorn.Config(
            api,
            host=settings.web_host,
            port=settings.web_port,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = EmbeddedServer(config)

        async def stop_when_asked() -> None:
            await app.event.wait()
            server.should_exit = True

        stopper = asyncio.create_task(stop_when_asked())
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot bind
            log.critical("the HTTP server could not start on %s:%s; stopping", settings.web_host, settings.web_port)
            os._exit(70)
        finally:
            server.should_exit = True
            stopper.cancel()
        if not app.should_stop:
            log.critical("the HTTP server stopped (port %s taken?); stopping", settings.web_port)
            os._exit(70)

    async def deliver_webhooks() -> None:
        sender = HttpxWebhookSender(
            settings.webhook_timeout_seconds, resolver=resolver, allow_private=settings.webhook_allow_private_targets
        )
        policy = RetryPolicy(
            settings.webhook_max_attempts,
            settings.webhook_backoff_initial_seconds,
            settings.webhook_backoff_max_seconds,
        )
        dispatcher = DeliveryDispatcher(
            store_factory=delivery_store,
            sender=sender,
            resolver=resolver,
            clock=clock,
            policy=policy,
            jitter=random.random,
            allow_private=settings.webhook_allow_private_targets,
            monotonic=time.monotonic,
        )
        try:
            while not app.should_stop:
                try:
                    outcomes = await dispatcher.tick()
                except Exception as error:
                    if not is_transient(error):
                        raise
                    metrics.transient.labels("publish", "webhooks").inc()
                    log.warning("webhook delivery round failed, will retry: %s", error)
                    await asyncio.sleep(1.0)
                    continue
                for o in outcomes:
                    state = o.decision.state
                    outcome = "retry" if state is DeliveryState.PENDING else state.value
                    outcome = "disabled" if o.decision.disable_subscription else outcome  # the receiver's 410
                    metrics.webhook_attempts.labels(outcome).inc()
                    metrics.webhook_attempt_duration.observe(o.seconds)
                    if state is not DeliveryState.DELIVERED:
                        log.warning(
                            "webhook delivery %d of %s to subscription %s: %s (attempt %d)",
                            o.delivery_id,
                            o.event_id,
                            o.subscription_id,
                            "dead-lettered" if state is DeliveryState.DEAD else "will retry",
                            o.decision.attempts,
                            extra={
                                "event_id": o.event_id,
                                "dataset": o.dataset,
                                "version": o.version,
                                "subscription_id": o.subscription_id,
                                "delivery_id": o.delivery_id,
                                "attempt": o.decision.attempts,
                                "attempt_error": o.result.error,
                            },
                        )
                if not outcomes:  # until an attempt ends or the next tick: never a busy loop
                    await dispatcher.wait(settings.webhook_interval_seconds)
        finally:
            await dispatcher.close()
            await sender.close()

    async def prepare() -> None:
        await ensure_topics(
            settings.kafka_bootstrap,
            [TopicSpec(settings.topic_feature_changes, 3), TopicSpec(settings.topic_notifications, 3)],
            security=KafkaClientSecurity.from_settings(settings),
        )
        await retry_transient(
            lambda: create_schema(engine), is_transient=is_transient, what="create schema", max_attempts=30
        )
        await create_api_token_schema(engine)  # operator tokens (subscription management), shared with ingest
        health["database"] = True
        metrics.ready.labels("publish").set(1)

    return PublishWorker(
        app, prepare, [record, cut_versions, relay_notifications, serve_http, deliver_webhooks], engine
    )


class PublishWorker:
    def __init__(
        self,
        stopping: Stopping,
        prepare: Callable[[], Awaitable[None]],
        loops: list[Callable[[], Coroutine[Any, Any, None]]],
        engine: Any,
    ) -> None:
        self.stopping, self.prepare, self.loops, self.engine = stopping, prepare, loops, engine
        self.failed = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.event.set)
        await self.prepare()
        tasks = [asyncio.create_task(f(), name=getattr(f, "__name__", "loop")) for f in self.loops]
        stop = asyncio.create_task(self.stopping.event.wait())
        done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
        self.stopping.event.set()
        for t in done:
            if t is not stop and t.exception() is not None:
                self.failed = True
                log.critical("%s stopped with an error", t.get_name(), exc_info=t.exception())
        await asyncio.wait(tasks, timeout=15)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop.cancel()
        await self.engine.dispose()
        log.info("publisher stopped")


def main() -> None:
    disable_created_metrics()
    settings = PublishSettings()
    configure_logging(settings.log_level)
    worker = build_worker(settings)
    asyncio.run(worker.run())
    if worker.failed:
        raise SystemExit(70)
