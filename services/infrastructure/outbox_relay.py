"""Relay rows of an outbox table to a Kafka topic, in order, at least once, then mark them sent.

Rows are written in the same transaction as the state they describe (never dual-write). One relay is
active per outbox at a time (a transaction-scoped advisory lock), so order is kept even when several
workers run. A failure to produce rolls back the marking; the rows are sent again on the next tick and
consumers dedupe on the id each message carries. When to call ``relay_once`` (a NOTIFY at the rows' commit,
a poll as fallback) is the worker runtime's business (worker_runtime.relay_loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.infrastructure.kafka_security import KafkaClientSecurity

log = logging.getLogger("odc.outbox")


@dataclass(frozen=True)
class OutgoingMessage:
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True)
class OutboxSpec:
    name: str  # metric label
    lock_id: int  # advisory lock id, unique per outbox
    select_sql: str  # must select unsent rows in send order, with a LIMIT :limit
    mark_sql: str  # must mark rows with ids in :ids as sent
    id_of: Callable[[Row[Any]], Any]
    to_message: Callable[[Row[Any]], OutgoingMessage]
    topic: str
    notify_channel: str | None = None  # NOTIFY'd at the commit of new rows (a trigger); the relay LISTENs


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        spec: OutboxSpec,
        *,
        batch: int = 2000,
        on_sent: Callable[[str, int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._producer = producer
        self.spec = spec
        self._batch = batch
        self._on_sent = on_sent

    async def relay_once(self) -> int:
        """Send one batch of unsent rows; return how many were sent (0 if none or another relay holds the lock)."""
        async with self._engine.connect() as conn, conn.begin():
            locked = (
                await conn.execute(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": self.spec.lock_id})
            ).scalar()
            if not locked:
                return 0
            rows = (await conn.execute(text(self.spec.select_sql), {"limit": self._batch})).all()
            if not rows:
                return 0
            futures = []
            for row in rows:
                msg = self.spec.to_message(row)
                futures.append(
                    await self._producer.send(
                        self.spec.topic, value=msg.value, key=msg.key, headers=list(msg.headers) or None
                    )
                )
            await asyncio.gather(*futures)
            await conn.execute(text(self.spec.mark_sql), {"ids": [self.spec.id_of(r) for r in rows]})
        if self._on_sent is not None:
            self._on_sent(self.spec.name, len(rows))
        return len(rows)

    async def pending(self) -> int:
        async with self._engine.connect() as conn:
            sql = f"SELECT count(*) FROM ({self.spec.select_sql}) s"
            return int((await conn.execute(text(sql), {"limit": 1_000_000})).scalar() or 0)


def make_producer(bootstrap: str, client_id: str, security: KafkaClientSecurity) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=1 << 20,
        request_timeout_ms=30000,
        **security.producer_kwargs(),
    )
