"""The whole pipeline as processes on the real broker and database, and what tests need to drive it:
send files, produce raw bytes, read topics, query PostGIS and metrics, wait for conditions."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from deploy.local.kafka import KafkaBroker
from deploy.local.kafka_access import COMMUNE_USERS, SERVICE_USERS
from deploy.local.ports import free_port
from deploy.local.postgres import PostgresCluster
from deploy.local.services import SERVICE_NAMES, ServiceProcess, service_env
from services.contract.codecs import Codecs
from services.contract.event_signature import SigningKey, sign
from services.contract.messages import ChangeEvent, GeometryEncoding, Operation, RawGeometry
from services.infrastructure.api_tokens import PostgresTokenStore, create_api_token_schema
from services.infrastructure.database import make_engine
from services.infrastructure.signing_keys import named_admin_key
from services.ingest.adapters.kafka_event_publisher import event_key
from services.ingest.entrypoints.send_command import SendSummary, send_file
from services.ingest.settings import IngestSettings
from services.normalise.adapters.outboxes import FEATURE_CHANGES_CURSOR

T = TypeVar("T")
TOPICS = {
    "input": "odc.change-events",
    "changes": "odc.feature-changes",
    "rejected": "odc.rejected",
    "versions": "odc.dataset-versions",
}


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0, every: float = 0.25) -> T:
    """Poll until ``probe`` returns something truthy. The timeout bounds a failure; it measures nothing."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@dataclass
class Pipeline:
    broker: KafkaBroker
    db: PostgresCluster
    run_dir: Path
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    codecs: Codecs = field(default_factory=Codecs)
    _admin_key: SigningKey | None = None
    input_topic: str = TOPICS["input"]  # where produce() writes (another pipeline on the same broker: another topic)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, names: tuple[str, ...] = SERVICE_NAMES, extra_env: dict[str, str] | None = None) -> None:
        for name in names:
            if name not in self.services:
                port = free_port()
                extra = dict(extra_env or {})
                if name == "publish" and "ingest" in self.services:  # OGC API edits go through the push API
                    extra.setdefault("ODC_PUBLISH_INGEST_URL", self.services["ingest"].base_url)
                env = service_env(
                    name,
                    kafka_bootstrap=self.broker.bootstrap,
                    kafka_access=self.broker.access,
                    database_url=self.db.dsn,
                    port=port,
                    extra=extra,
                )
                self.services[name] = ServiceProcess(name, self.run_dir, port, env)
            self.services[name].start()
        for name in names:
            self.services[name].wait_ready(timeout=120)

    def stop(self) -> None:
        for svc in self.services.values():
            svc.stop()

    # -- input --------------------------------------------------------------------------------------
    def send_file(
        self, path: Path, dataset: str, commune: str | None = None, sequence: int | None = None
    ) -> SendSummary:
        settings = IngestSettings(
            kafka_bootstrap=self.broker.bootstrap,
            database_url=self.db.dsn,
            **self.broker.access.settings_kwargs(COMMUNE_USERS[0]),  # `odc send` acts as a commune
        )
        return asyncio.run(send_file(path, dataset, commune, settings, sequence=sequence))

    def admin_key(self) -> SigningKey:
        """The Métropole's signing key in the test database (the normaliser requires signed events)."""
        if self._admin_key is None:

            async def go() -> SigningKey:
                engine = make_engine(self.db.dsn, pool_size=1)
                try:
                    return await named_admin_key(engine, "test-harness-admin", "integration tests")
                finally:
                    await engine.dispose()

            self._admin_key = asyncio.run(go())
        return self._admin_key

    def operator_token(self, label: str = "integration tests") -> str:
        """A new operator (admin) API token in the test database: manages the publish API's subscriptions."""

        async def go() -> str:
            engine = make_engine(self.db.dsn, pool_size=1)
            try:
                await create_api_token_schema(engine)
                return (await PostgresTokenStore(engine).issue(None, label))[1]
            finally:
                await engine.dispose()

        return asyncio.run(go())

    def produce(
        self,
        values: list[bytes],
        keys: list[bytes | None] | None = None,
        headers: list[list[tuple[str, bytes]] | None] | None = None,
        compression: str | None = None,
    ) -> None:
        async def go() -> None:
            # Idempotent producer: order is kept per partition even with many sends in flight.
            # as the ingest service's producer (events signed with the Métropole's key by default); its
            # principal may only write the input topic, and unlike a commune's it has no byte-rate quota
            p = AIOKafkaProducer(
                bootstrap_servers=self.broker.bootstrap,
                enable_idempotence=True,
                linger_ms=5,
                **{
                    **(
                        self.broker.security(SERVICE_USERS["ingest"])
                        if self.input_topic == TOPICS["input"]
                        else self.broker.admin_security()  # another deployment's topic: no ACL names it for ingest
                    ).producer_kwargs(),
                    "compression_type": compression,  # as a commune's own client may send
                },
            )
            await p.start()
            try:
                pending = []
                for i, v in enumerate(values):
                    pending.append(
                        await p.send(
                            self.input_topic,
                            value=v,
                            key=(keys[i] if keys else None),
                            headers=(headers[i] if headers else None),
                        )
                    )
                for fut in pending:
                    await fut
            finally:
                await p.stop()

        asyncio.run(go())

    def produce_events(
        self, events: list[ChangeEvent], key: SigningKey | None = None, compression: str | None = None
    ) -> None:
        """Produce events signed with ``key`` (default: the Métropole's admin key), in batches compressed with
        ``compression`` (a Kafka codec: gzip, snappy, lz4, zstd) when given."""
        values = [self.codecs.encode_change_event(e) for e in events]
        signer = key or self.admin_key()
        self.produce(values, [event_key(e) for e in events], [sign(v, signer) for v in values], compression)

    # -- output -------------------------------------------------------------------------------------
    def read_topic(self, topic: str, timeout: float = 5.0) -> list[Any]:
        """Every record of ``topic`` from the beginning (aiokafka ConsumerRecords)."""

        async def go() -> list[Any]:
            # No group: aiokafka assigns every partition of the subscribed topic itself.
            c = AIOKafkaConsumer(
                topic,
                bootstrap_servers=self.broker.bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                group_id=None,
                **self.broker.admin_security().client_kwargs(),  # the tests read every topic as the operator
            )
            await c.start()
            try:
                deadline = time.monotonic() + timeout
                while not c.assignment() and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                parts = sorted(c.assignment())
                if not parts:
                    return []
                end = await c.end_offsets(parts)
                await c.seek_to_beginning(*parts)
                out: list[Any] = []

                async def behind() -> bool:
                    return any([(await c.position(tp)) < end[tp] for tp in parts])

                while time.monotonic() < deadline and await behind():
                    batch = await c.getmany(timeout_ms=500)
                    for records in batch.values():
                        out.extend(r for r in records if r.offset < end[TopicPartition(r.topic, r.partition)])
                return sorted(out, key=lambda r: (r.partition, r.offset))
            finally:
                await c.stop()

        return asyncio.run(go())

    def version_notifications(self, dataset: str | None = None) -> list[tuple[dict[str, str], Any]]:
        out = []
        for r in self.read_topic(TOPICS["versions"]):
            headers = {k: v.decode() for k, v in r.headers}
            data = self.codecs.decode_dataset_version(r.value)
            if dataset is None or data.dataset == dataset:
                out.append((headers, data))
        return out

    def rejections(self) -> list[Any]:
        return [self.codecs.decode_rejection(r.value) for r in self.read_topic(TOPICS["rejected"])]

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db.dsn) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def execute(self, statement: str, *params: Any) -> int:
        """Run a statement that returns no rows (tests that build a store as an earlier release left it)."""
        with psycopg.connect(self.db.dsn) as conn:
            return conn.execute(statement, params).rowcount  # type: ignore[arg-type]

    def metric(self, service: str, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"{self.services[service].base_url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    # -- conditions ---------------------------------------------------------------------------------
    def latest_version(self, dataset: str) -> int:
        rows = self.sql("SELECT last_version FROM dataset_state WHERE dataset = %s", dataset)
        return int(rows[0][0]) if rows else 0

    def rejection_at(self, partition: int, offset: int) -> tuple[str, str] | None:
        """The reason and message of the rejection of the input topic's record at ``partition``/``offset``."""
        rows = self.sql(
            "SELECT reason, message FROM rejection WHERE source_topic = %s AND source_partition = %s "
            "AND source_offset = %s",
            self.input_topic,
            partition,
            offset,
        )
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def pending_changes(self, dataset: str) -> int:
        return int(self.sql("SELECT count(*) FROM change_log WHERE dataset = %s AND version IS NULL", dataset)[0][0])

    def settle(self, dataset: str, received_before: float, expected_more: int, timeout: float = 60) -> None:
        """Wait until the normaliser has read ``expected_more`` more events and the publisher has nothing
        pending for ``dataset`` (any version due has been cut)."""
        wait_for(
            f"{expected_more} more events read by the normaliser",
            lambda: self.metric("normalise", "odc_events_received_total") >= received_before + expected_more,
            timeout,
        )
        wait_for(
            "the feature-change outbox to drain",
            lambda: self.sql(FEATURE_CHANGES_CURSOR.pending_sql())[0][0] == 0,
            timeout,
        )
        # the outbox drains before the publisher has consumed what it sent: wait until it has recorded them
        wait_for(
            "the publisher to record every canonical change",
            lambda: self.sql(
                "SELECT (SELECT coalesce(max(change_id), 0) FROM feature_change_outbox) <= "
                "(SELECT coalesce(max(change_id), 0) FROM change_log)"
            )[0][0],
            timeout,
        )
        wait_for(f"no pending changes for {dataset}", lambda: self.pending_changes(dataset) == 0 or None, timeout)


def toilet_event(
    feature_id: str,
    *,
    seq: int,
    op: Operation = Operation.UPSERT,
    adresse: str = "1 place test",
    commune: str = "69266",
    dataset: str = "public_toilets",
    event_id: str | None = None,
    lon: float = 4.88,
    lat: float = 45.77,
) -> ChangeEvent:
    return ChangeEvent(
        event_id or str(uuid.uuid4()),
        dataset,
        commune,
        feature_id,
        op,
        datetime.now(UTC),
        seq,
        "test",
        RawGeometry(
            GeometryEncoding.GEOJSON, json.dumps({"type": "Point", "coordinates": [lon, lat]}).encode(), "EPSG:4326"
        ),
        {"gid": int(feature_id) if feature_id.isdigit() else 0, "codinsee": commune, "adresse": adresse},
    )
