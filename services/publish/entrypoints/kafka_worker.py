"""Composition root of the publisher: a consumer loop recording canonical changes, a loop cutting due
versions, the notification outbox relay, webhook deliveries and the HTTP API (uvicorn), in one process.

Like the normaliser, it consumes with a plain aiokafka loop rather than a faust agent: faust's
``take_events`` costs ~200 us of CPU per event against ~5 us for ``getmany`` (benchmarks/consumer_overhead.py,
docs/performance.md). Offsets are committed after the transaction that records the changes (idempotent on
change_id), so a crash or a rebalance in between only replays changes already recorded. The loops, the
supervisor and the HTTP server are the worker runtime's (services/infrastructure/worker_runtime.py,
operations_http.py); this module is wiring.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry, disable_created_metrics

from services.contract.avro_catalogue import UndecodableMessage
from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import FeatureChange
from services.infrastructure.api_tokens import PostgresTokenStore, create_api_token_schema
from services.infrastructure.database import is_transient, make_engine
from services.infrastructure.kafka_consumer import make_batch_consumer
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics
from services.infrastructure.logging_setup import configure_logging
from services.infrastructure.operations_http import serve_http
from services.infrastructure.outbox_relay import OutboxRelay, make_producer
from services.infrastructure.readiness import CachedCheck, broker_reachable, database_answers
from services.infrastructure.retry import retry_transient
from services.infrastructure.worker_runtime import (
    BatchLoop,
    DatabaseHealth,
    PgNotifications,
    Supervisor,
    Wakeup,
    relay_loop,
)
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
from services.publish.service_layer.cut_schedule import next_cut_due
from services.publish.service_layer.handlers import cut_due_versions, record_changes
from services.publish.service_layer.webhooks import DeliveryDispatcher
from services.publish.settings import PublishSettings

log = logging.getLogger("odc.publish")


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def build_worker(settings: PublishSettings, registry: CollectorRegistry | None = None) -> PublishWorker:
    registry = registry or CollectorRegistry()
    metrics = PublishMetrics(registry)
    codecs = Codecs()
    catalogue = DatasetCatalogue.load(territory=settings.territory)
    engine = make_engine(settings.database_url.get_secret_value())
    clock = SystemClock()
    health = {"database": False, "relay": False}
    base_url = settings.base_url()

    supervisor = Supervisor("publisher")

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

    database = DatabaseHealth("publish", metrics, health, "database")
    cut_wakeup, relay_wakeup = Wakeup(), Wakeup()  # changes recorded -> cutter; version cut -> relay

    def decode(events: Sequence[ConsumerRecord]) -> list[FeatureChange]:
        changes = []
        for e in events:
            try:
                changes.extend(codecs.decode_feature_changes(e.value))  # a batch, or one change (older form)
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
        return changes

    async def prepare_batch(events: Sequence[ConsumerRecord]) -> list[FeatureChange]:
        return decode(events)

    async def record_batch(changes: list[FeatureChange]) -> int:
        return await record_changes(changes, uow_factory=uow, clock=clock)

    def recorded(changes: list[FeatureChange], new: int, seconds: float) -> None:
        metrics.batch_duration.labels("publish").observe(seconds)
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
        if new:
            cut_wakeup.set()

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
        await BatchLoop(
            supervisor=supervisor,
            consumer=consumer,
            prepare=prepare_batch,
            apply=record_batch,
            after_apply=recorded,
            database=database,
            metrics=metrics,
            what="record changes",
            on_rebalance="the changes will be read again (ignored by change_id)",
            batch_max_events=settings.batch_max_events,
            batch_within_seconds=settings.batch_within_seconds,
            batch_max_bytes=settings.batch_max_bytes,
        ).run()

    async def cut_once() -> datetime | None:
        """Cut what is due; return when the next version falls due (None: nothing pending)."""
        started = time.perf_counter()
        drafts = await retry_transient(
            lambda: cut_due_versions(
                catalogue=catalogue,
                uow_factory=uow,
                clock=clock,
                source=settings.event_source,
                max_delay_seconds=settings.max_delay_seconds,
                base_url=base_url,
                max_inline_changes=settings.notify_max_inline_changes,
                version_max_bytes=settings.version_max_bytes,
            ),
            is_transient=is_transient,
            what="cut versions",
            on_retry=database.down,
            on_recovered=database.up,
        )
        if drafts:
            relay_wakeup.set()
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
        return await retry_transient(
            lambda: next_cut_due(catalogue=catalogue, uow_factory=uow, max_delay_seconds=settings.max_delay_seconds),
            is_transient=is_transient,
            what="read when the next version is due",
            on_retry=database.down,
            on_recovered=database.up,
        )

    async def cut_versions() -> None:
        """Cut when a version falls due: sleep until the due time, woken early when changes are recorded while
        nothing was pending; ``cut_interval_seconds`` stays as the fallback poll (changes recorded by another
        publisher process, a policy's max_changes reached)."""
        while not supervisor.should_stop:
            due = await cut_once()
            poll_until = time.monotonic() + settings.cut_interval_seconds
            while not supervisor.should_stop:
                timeout = poll_until - time.monotonic()
                if due is not None:
                    timeout = min(timeout, (due - clock.now()).total_seconds())
                if timeout <= 0:
                    break
                woken = await cut_wakeup.wait(timeout)
                if not woken or due is None:
                    break  # due, polled, or changes arrived while nothing was pending: look again

    async def relay_notifications() -> None:
        producer = make_producer(
            settings.kafka_bootstrap, "odc-publish-relay", KafkaClientSecurity.from_settings(settings)
        )
        await producer.start()
        spec = notifications_outbox(settings.topic_notifications)
        relay = OutboxRelay(engine, producer, spec, on_sent=lambda name, n: metrics.relayed.labels(name).inc(n))

        def relay_health(ok: bool) -> None:
            health["relay"] = ok

        def relay_failed(name: str, error: BaseException) -> None:
            metrics.transient.labels("publish", "relay_notifications").inc()

        try:
            await relay_loop(
                [relay],
                wakeup=relay_wakeup,
                poll_seconds=settings.relay_interval_seconds,
                stopping=lambda: supervisor.should_stop,
                on_health=relay_health,
                on_failure=relay_failed,
            )
        finally:
            await producer.stop()

    # The relay is woken in process by the cutter, and by the outbox's NOTIFY for versions another publisher cut.
    listener = PgNotifications(
        settings.database_url.get_secret_value(),
        {notifications_outbox(settings.topic_notifications).notify_channel or "notification_outbox": relay_wakeup},
        stopping=lambda: supervisor.should_stop,
    )

    async def serve_api() -> None:
        await serve_http(api, settings.web_host, settings.web_port, supervisor)

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
            while not supervisor.should_stop:
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
        database.up()

    return PublishWorker(
        supervisor,
        prepare,
        {
            "record": record,
            "cut_versions": cut_versions,
            "relay_notifications": relay_notifications,
            "listen_notifications": listener.run,
            "serve_http": serve_api,
            "deliver_webhooks": deliver_webhooks,
        },
        engine,
    )


class PublishWorker:
    def __init__(
        self,
        supervisor: Supervisor,
        prepare: Callable[[], Awaitable[None]],
        loops: Mapping[str, Callable[[], Coroutine[Any, Any, None]]],
        engine: Any,
    ) -> None:
        self.supervisor, self.prepare, self.loops, self.engine = supervisor, prepare, loops, engine

    async def run(self) -> None:
        await self.supervisor.run(prepare=self.prepare, tasks=self.loops, cleanup=self.engine.dispose)


def main() -> None:
    disable_created_metrics()
    settings = PublishSettings()
    configure_logging(settings.log_level)
    asyncio.run(build_worker(settings).run())
