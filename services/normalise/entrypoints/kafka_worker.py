"""Composition root of the normaliser: a plain aiokafka consumer loop, the outbox relay (in a child process,
relay_process.py) and the web pages.

Why not faust here: consuming alone costs faust ~200 us of CPU per event against ~5 us for aiokafka's
``getmany`` (benchmarks/consumer_overhead.py, docs/performance.md) — more than the normaliser's own work per
event, on the service that bounds the pipeline's throughput. The loop is the design the stream-processing
notes give for this case: manual offset commits after the database transaction, nothing else.

The loops themselves are the worker runtime's (services/infrastructure/worker_runtime.py); this module is
wiring. Delivery: at least once. A batch is committed to PostgreSQL (event ids claimed in the same transaction),
then its offsets to Kafka. A crash or a rebalance between the two only replays events already claimed,
which the next transaction counts as duplicates. A transient failure (database or broker down) is retried
with backoff for as long as it lasts, without polling further; a non-transient one stops the process
before the offsets move, so the batch is read again after the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, disable_created_metrics

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.event_signature import HEADER_KEY_ID, EventAuthenticator
from services.contract.messages import SourcePosition
from services.infrastructure.database import is_transient, make_engine
from services.infrastructure.kafka_consumer import make_batch_consumer
from services.infrastructure.kafka_decompression import RefusedValue
from services.infrastructure.kafka_decompression import install as bound_decompression
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics
from services.infrastructure.logging_setup import configure_logging
from services.infrastructure.malloc_retention import bound_malloc_retention
from services.infrastructure.operations_http import Operations, operations_app, serve_http
from services.infrastructure.readiness import CachedCheck, broker_reachable, database_answers
from services.infrastructure.retry import retry_transient
from services.infrastructure.signing_keys import SigningKeyCache, create_signing_key_schema
from services.infrastructure.worker_runtime import BatchLoop, DatabaseHealth, Supervisor
from services.normalise.adapters.outbox_pruning import prune_feature_changes, prune_rejections
from services.normalise.adapters.postgis_store import PostgisUnitOfWork, create_schema
from services.normalise.domain.canonical_feature import EventNormaliser
from services.normalise.domain.rejection_retention import retention_cutoff
from services.normalise.entrypoints.relay_process import Failed, Health, Sent, Status, parse_status, start_relay_child
from services.normalise.metrics import NormaliseMetrics
from services.normalise.service_layer.link_same_places import dissolve_previous_groups
from services.normalise.service_layer.process_batch import (
    BatchReport,
    InboundMessage,
    PreparedBatch,
    apply_batch,
    prepare_batch,
)
from services.normalise.settings import NormaliseSettings

log = logging.getLogger("odc.normalise")

PREPARE_SLICE_BYTES = 64 * 1024  # messages prepared between two yields to the event loop: ~120 single point
# events, or one bulk message (at least one message per slice)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def kafka_headers(raw: Any) -> tuple[tuple[str, bytes], ...]:
    """Headers as pairs of (str, bytes), whatever shape the client gives them in."""
    items = raw.items() if isinstance(raw, dict) else (raw or ())
    return tuple((str(k), v if isinstance(v, bytes) else b"") for k, v in items)


def slices_by_bytes(sizes: Sequence[int], max_bytes: int) -> list[slice]:
    """Consecutive slices covering every index of ``sizes``, each at least one item and, past its first item,
    at most ``max_bytes`` in total (pure)."""
    out: list[slice] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > max_bytes:
            out.append(slice(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        out.append(slice(start, len(sizes)))
    return out


def topic_specs(s: NormaliseSettings) -> list[TopicSpec]:
    return [
        TopicSpec(s.topic_change_events, s.input_partitions),
        TopicSpec(s.topic_feature_changes, 3),
        TopicSpec(s.topic_rejected, 3),
    ]


def to_inbound(records: Sequence[ConsumerRecord]) -> list[InboundMessage]:
    return [
        InboundMessage(
            r.value if isinstance(r.value, bytes) else b"",
            SourcePosition(r.topic, r.partition, r.offset),
            kafka_headers(r.headers),
            r.value.batch if isinstance(r.value, RefusedValue) else None,
        )
        for r in records
    ]


class NormaliseWorker:
    """Wiring of the normaliser onto the worker runtime: the batch loop, the relay (child process), the
    rejection pruning and the operations routes; stopped by SIGTERM/SIGINT."""

    def __init__(self, settings: NormaliseSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = NormaliseMetrics(self.registry)
        self.codecs = Codecs()
        self.normaliser = EventNormaliser(DatasetCatalogue.load(territory=settings.territory))
        self.compared_fields = {
            d.id: d.same_place.compared_fields for d in self.normaliser.catalogue if d.same_place.distance_m > 0
        }
        self.engine = make_engine(settings.database_url.get_secret_value())
        self.clock = SystemClock()
        self.health = {"database": False, "relay": False, "consumer": False}
        self.database = DatabaseHealth("normalise", self.metrics, self.health, "batch_transaction")
        self.signing_keys = SigningKeyCache(self.engine, settings.signing_keys_max_age_seconds)
        self.supervisor = Supervisor("normaliser")
        engine, timeout = self.engine, settings.readiness_timeout_seconds
        self.operations = Operations(
            "normalise",
            self.registry,
            self.health,
            {
                "broker": CachedCheck(lambda: broker_reachable(settings.kafka_bootstrap, timeout)),
                "database": CachedCheck(lambda: database_answers(engine, timeout)),
            },
        )

    def uow(self) -> PostgisUnitOfWork:
        return PostgisUnitOfWork(self.engine, self.compared_fields)

    async def prepare(self) -> None:
        await retry_transient(
            lambda: ensure_topics(
                self.settings.kafka_bootstrap,
                topic_specs(self.settings),
                security=KafkaClientSecurity.from_settings(self.settings),
            ),
            is_transient=lambda e: isinstance(e, KafkaError | OSError),
            what="create topics",
            max_attempts=30,
        )
        await retry_transient(
            lambda: create_schema(self.engine), is_transient=is_transient, what="create schema", max_attempts=30
        )
        await create_signing_key_schema(self.engine)
        dissolved = await retry_transient(
            lambda: dissolve_previous_groups(self.uow, self.clock),
            is_transient=is_transient,
            what="dissolve same-place groups of the previous model",
            max_attempts=30,
        )
        if dissolved:
            log.warning("dissolved %d same-place groups left by the previous model (issue #13)", dissolved)
        self.database.up()

    async def prepare_records(self, records: Sequence[ConsumerRecord]) -> PreparedBatch:
        """Decode, authenticate and normalise, in slices that yield to the event loop between them, so the
        previous batch's transaction (awaiting PostgreSQL) goes on meanwhile."""
        batch = to_inbound(records)
        keys = await retry_transient(
            lambda: self.signing_keys.keys(
                {v.decode("ascii", "replace") for m in batch for k, v in m.headers if k == HEADER_KEY_ID}
            ),
            is_transient=is_transient,
            what="load signing keys",
            on_retry=self.database.down,
            on_recovered=self.database.up,
        )
        authenticator = EventAuthenticator(keys, require_signed=self.settings.require_signed_events)
        now, parts = self.clock.now(), []
        for part in slices_by_bytes([len(m.value) for m in batch], PREPARE_SLICE_BYTES):
            parts.append(
                prepare_batch(
                    batch[part],
                    codecs=self.codecs,
                    normaliser=self.normaliser,
                    now=now,
                    authenticator=authenticator,
                )
            )
            await asyncio.sleep(0)
        return PreparedBatch.merge(parts)

    async def apply_prepared(self, prepared: PreparedBatch) -> BatchReport:
        return await apply_batch(prepared, normaliser=self.normaliser, uow_factory=self.uow)

    def consumer_running(self, running: bool) -> None:
        self.health["consumer"] = running

    async def consume(self) -> None:
        s = self.settings
        bound_decompression(s.max_decompressed_batch_bytes)  # before the consumer reads a batch
        consumer = make_batch_consumer(
            s.topic_change_events,
            service="normalise",
            bootstrap=s.kafka_bootstrap,
            security=KafkaClientSecurity.from_settings(s),
            group_id=s.group_id,
            batch_max_events=s.batch_max_events,
            fetch_min_bytes=s.fetch_min_bytes,
            fetch_max_wait_seconds=s.fetch_max_wait_seconds,
            max_poll_interval_seconds=s.max_poll_interval_seconds,
            session_timeout_seconds=s.session_timeout_seconds,
        )
        await BatchLoop(
            supervisor=self.supervisor,
            consumer=consumer,
            prepare=self.prepare_records,
            apply=self.apply_prepared,
            after_apply=lambda prepared, report, seconds: self.metrics.observe(report, seconds),
            database=self.database,
            metrics=self.metrics,
            what="normalise batch",
            on_rebalance="their events will be read again and counted as duplicates",
            batch_max_events=s.batch_max_events,
            batch_within_seconds=s.batch_within_seconds,
            batch_max_bytes=s.batch_max_bytes,
            on_running=self.consumer_running,
        ).run()

    async def relay(self) -> None:
        """Run the outbox relay in its child process (relay_process.py) and mirror its counts and health."""
        stopping = self.supervisor.stopping
        self.health["relay"] = False
        child = await start_relay_child()
        try:
            while not stopping.is_set():
                line = await child.next_line(0.25)
                if line is None:
                    continue
                if line:
                    self._relay_status(parse_status(line))
                    continue
                code = await child.process.wait()  # end of its status pipe: the child has exited
                self.health["relay"] = False
                if stopping.is_set():
                    break
                self.metrics.transient.labels("normalise", "relay_process").inc()
                log.error("outbox relay process exited with code %s; starting it again", code)
                await child.stop()
                await asyncio.sleep(1.0)  # a child failing at once is not restarted in a tight loop
                child = await start_relay_child()
        finally:
            self.health["relay"] = False
            await child.stop()

    def _relay_status(self, status: Status | None) -> None:
        if isinstance(status, Sent):
            self.metrics.relayed.labels(status.outbox).inc(status.rows)
        elif isinstance(status, Failed):
            self.metrics.transient.labels("normalise", f"relay_{status.outbox}").inc()
        elif isinstance(status, Health):
            self.health["relay"] = status.ok

    async def prune_outboxes(self) -> None:
        """Every prune interval, delete relayed rejections and relayed change rows past their retentions
        (batched). A database outage skips a round; the next one catches up."""
        s = self.settings
        stopping = self.supervisor.stopping
        while not stopping.is_set():
            try:
                cutoff = retention_cutoff(self.clock.now(), s.rejection_retention_days)
                pruned = await prune_rejections(self.engine, cutoff, s.rejection_prune_batch_rows)
                if pruned:
                    log.info("pruned %d rejections recorded before %s", pruned, cutoff.isoformat())
                self.metrics.rejections_pruned.inc(pruned)
                cutoff = retention_cutoff(self.clock.now(), s.change_retention_days)
                pruned = await prune_feature_changes(self.engine, cutoff, s.rejection_prune_batch_rows)
                if pruned:
                    log.info("pruned %d relayed change rows applied before %s", pruned, cutoff.isoformat())
                self.metrics.changes_pruned.inc(pruned)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("outbox pruning skipped, database unavailable: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), s.rejection_prune_interval_seconds)

    async def serve_operations(self) -> None:
        await serve_http(
            operations_app(self.operations), self.settings.web_host, self.settings.web_port, self.supervisor
        )

    async def run(self) -> None:
        await self.supervisor.run(
            before_prepare={"operations": self.serve_operations},
            prepare=self.prepare,
            tasks={"consume": self.consume, "relay": self.relay, "prune-outboxes": self.prune_outboxes},
            cleanup=self.engine.dispose,
        )


def main() -> None:
    disable_created_metrics()
    settings = NormaliseSettings()
    if settings.malloc_threshold_bytes:  # before anything large is allocated (issue #16)
        bound_malloc_retention(settings.malloc_threshold_bytes)
    configure_logging(settings.log_level)
    asyncio.run(NormaliseWorker(settings).run())
