"""Relay rows of an outbox table to a Kafka topic, in order, at least once, then mark them sent.

Rows are written in the same transaction as the state they describe (never dual-write). One relay is
active per outbox at a time (a transaction-scoped advisory lock), so order is kept even when several
workers run. A failure to produce rolls back the marking; the rows are sent again on the next tick and
consumers dedupe on the id each message carries. A spec may send its rows grouped: one message per group key
(e.g. the dataset, which is also the partition key) holding the group's rows in send order, split in several
messages when one would exceed ``max_message_bytes`` (``grouped_messages``, pure). When to call ``relay_once`` (a NOTIFY at the rows' commit,
a poll as fallback) is the worker runtime's business (worker_runtime.relay_loop).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contract.size_limits import INTERNAL_MESSAGE_MAX_BYTES
from services.infrastructure.kafka_security import KafkaClientSecurity

log = logging.getLogger("odc.outbox")
R = TypeVar("R")


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
    # Grouped sending (both or neither): rows with the same group key go out as one message built from them,
    # in send order; ``to_message`` is then unused. The group key must determine the partition key.
    group_key: Callable[[Row[Any]], Hashable] | None = None
    to_group_message: Callable[[Sequence[Row[Any]]], OutgoingMessage] | None = None
    max_message_bytes: int = INTERNAL_MESSAGE_MAX_BYTES


def grouped_messages(
    rows: Sequence[R],
    group_key: Callable[[R], Hashable],
    to_group_message: Callable[[Sequence[R]], OutgoingMessage],
    max_bytes: int,
) -> list[OutgoingMessage]:
    """One message per group key (groups in the order of their first row, each group's rows in their order),
    a group split into consecutive parts while its message is larger than ``max_bytes`` (a single row is sent
    as it is, whatever its size: the producer then refuses it as it did before grouping)."""
    groups: dict[Hashable, list[R]] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)
    out: list[OutgoingMessage] = []
    for members in groups.values():
        out.extend(_fitted(members, to_group_message, max_bytes))
    return out


def _fitted(
    rows: Sequence[R], to_group_message: Callable[[Sequence[R]], OutgoingMessage], max_bytes: int
) -> list[OutgoingMessage]:
    msg = to_group_message(rows)
    if len(msg.value) <= max_bytes or len(rows) == 1:
        return [msg]
    parts = min(len(rows), max(2, math.ceil(len(msg.value) / max_bytes)))
    size = math.ceil(len(rows) / parts)
    out: list[OutgoingMessage] = []
    for start in range(0, len(rows), size):
        out.extend(_fitted(rows[start : start + size], to_group_message, max_bytes))
    return out


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
            for msg in self._messages(rows):
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

    def _messages(self, rows: Sequence[Row[Any]]) -> list[OutgoingMessage]:
        spec = self.spec
        if spec.group_key is not None and spec.to_group_message is not None:
            return grouped_messages(rows, spec.group_key, spec.to_group_message, spec.max_message_bytes)
        return [spec.to_message(r) for r in rows]

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
