"""Relay rows of an outbox table to a Kafka topic, in order, at least once, then record them as sent.

Rows are written in the same transaction as the state they describe (never dual-write). One relay is
active per outbox at a time (a transaction-scoped advisory lock), so order is kept even when several
workers run. A failure to produce rolls back the record of what was sent; the rows are sent again on the
next tick and consumers dedupe on the id each message carries.

What was sent is recorded one of two ways (``OutboxSpec.progress``): ``MarkedRows`` updates each sent row
(one more write per row), ``TxidCursor`` moves one cursor row per batch (issue #16.2). The cursor is
``(txid, id)``: every outbox row carries its writer's transaction id (``txid xid8 DEFAULT
pg_current_xact_id()``) and the relay reads only rows of transactions older than its snapshot's xmin, in
``(txid, id)`` order after the cursor. Every transaction below xmin has ended (committed and visible to the
same snapshot, or rolled back), and any transaction still to commit has a txid at or above it, so no row can
appear behind the cursor later; a cursor on the id alone would skip the row of a transaction that took an
earlier id but committed after a later one. The cost is latency, never loss: a long write transaction
anywhere in the cluster holds xmin, and so the relay, back until it ends (docs/architecture.md, "Relay cursors,
not marks"). A writer may store a txid above its own (never below): the normaliser does, to keep a feature's
changes in commit order.

A spec may send its rows grouped: one message per group key (e.g. the dataset, which is also the partition key)
holding the group's rows in send order, split in several messages when one would exceed ``max_message_bytes``
(``grouped_messages``, pure). When to call ``relay_once`` (a NOTIFY at the rows' commit, a poll as fallback) is
the worker runtime's business (worker_runtime.relay_loop).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaProducer
from sqlalchemy import Row, text
from sqlalchemy.dialects.postgresql import base as postgresql_base
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import UserDefinedType

from services.contract.size_limits import INTERNAL_MESSAGE_MAX_BYTES
from services.infrastructure.kafka_security import KafkaClientSecurity

log = logging.getLogger("odc.outbox")
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
R = TypeVar("R")

# A relayed batch holds at most this many bytes of row values (and at most ``batch`` rows): 2,000 rows of polygons
# (a before and an after geometry each) held ~20 MB in the normaliser's relay child at its peak (issue #16).
RELAY_BATCH_MAX_BYTES = 2 * 1024 * 1024
_FETCH_ROWS = 250  # rows per fetch of the relay's server-side cursor


def row_bytes(row: Sequence[object]) -> int:
    """What a row weighs for the relay's byte bound: the length of its text and binary values, 8 for any other."""
    n = 0
    for v in row:  # a loop and a tuple of types: 1 µs for an outbox row, against 4 for sum(...) over a union
        n += len(v) if isinstance(v, _WEIGHED) else 8
    return n


_WEIGHED = (str, bytes, bytearray, memoryview)


def rows_within_bytes(sizes: Sequence[int], max_bytes: int, already: int = 0) -> int:
    """How many of the next rows (their ``sizes``, in order) fit in a batch that already holds ``already`` bytes:
    rows are taken while the total stays at most ``max_bytes``; the first row of an empty batch is always taken,
    whatever its size (one large row still goes out, alone)."""
    total, taken = already, 0
    for size in sizes:
        if total + size > max_bytes and (taken or already):
            break
        total += size
        taken += 1
    return taken


async def read_within_bytes(
    conn: AsyncConnection, sql: str, params: dict[str, Any], max_bytes: int
) -> Sequence[Row[Any]]:
    """The rows of ``sql`` (which ends its send order with ``LIMIT :limit``, ``params["limit"]``) in order,
    stopping before the row that would take them over ``max_bytes`` (at least one row).

    First one plain read of at most a fetch's rows (``_FETCH_ROWS``): when the query has no more than that, or
    the bound falls within them, that is the answer, in one statement. Otherwise the query is read again, from
    the start, through a server-side cursor a fetch at a time, so the rows past the bound never leave the
    database. Each read is one statement, hence one snapshot: the answer never mixes the two. The plain read
    holds what one fetch holds, so memory stays as bounded as with the cursor alone; at light load (a few rows
    per round) it saves the cursor's DECLARE and CLOSE (issue #16, fourth session)."""
    limit = int(params["limit"])
    first = (await conn.execute(text(sql), {**params, "limit": min(limit, _FETCH_ROWS)})).all()
    sizes = [row_bytes(r) for r in first]
    n = rows_within_bytes(sizes, max_bytes)
    if n < len(first) or len(first) < _FETCH_ROWS or limit <= _FETCH_ROWS:
        return first[:n]
    rows: list[Row[Any]] = []
    total = 0
    result = await conn.stream(text(sql), params)
    try:
        async for part in result.partitions(_FETCH_ROWS):
            sizes = [row_bytes(r) for r in part]
            n = rows_within_bytes(sizes, max_bytes, total)
            rows.extend(part[:n])
            total += sum(sizes[:n])
            if n < len(part):
                break
    finally:
        await result.close()
    return rows


@dataclass(frozen=True)
class OutgoingMessage:
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


class Xid8(UserDefinedType[Any]):
    """PostgreSQL's 64-bit transaction id (``xid8``, epoch-extended: it does not wrap), for table definitions."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "XID8"


# Reflection (the schema drift check) then knows the type, as GeoAlchemy2 registers its own.
postgresql_base.ischema_names.setdefault("xid8", Xid8)


class OutboxProgress(Protocol):
    """How a relay reads the rows not yet sent and records a batch as sent (in the relay's transaction)."""

    async def unsent(
        self, conn: AsyncConnection, limit: int, max_bytes: int = RELAY_BATCH_MAX_BYTES
    ) -> Sequence[Row[Any]]: ...

    async def record_sent(self, conn: AsyncConnection, rows: Sequence[Row[Any]]) -> None: ...

    async def held_back(self, conn: AsyncConnection) -> bool:
        """After ``unsent`` found nothing: whether rows are there that may not be sent yet (no NOTIFY comes when
        what holds them back ends, so the relay loop looks again soon)."""
        ...

    def pending_sql(self) -> str: ...


@dataclass(frozen=True)
class MarkedRows:
    """Each sent row is marked (e.g. ``sent_at``): one UPDATE per row sent."""

    select_sql: str  # must select unsent rows in send order, with a LIMIT :limit
    mark_sql: str  # must mark rows with ids in :ids as sent
    id_of: Callable[[Row[Any]], Any]

    async def unsent(
        self, conn: AsyncConnection, limit: int, max_bytes: int = RELAY_BATCH_MAX_BYTES
    ) -> Sequence[Row[Any]]:
        return await read_within_bytes(conn, self.select_sql, {"limit": limit}, max_bytes)

    async def record_sent(self, conn: AsyncConnection, rows: Sequence[Row[Any]]) -> None:
        await conn.execute(text(self.mark_sql), {"ids": [self.id_of(r) for r in rows]})

    async def held_back(self, conn: AsyncConnection) -> bool:
        return False  # a committed row is sendable at once: nothing holds marked rows back

    def pending_sql(self) -> str:
        select_sql = self.select_sql
        return f"SELECT count(*) FROM ({select_sql}) s"


@dataclass(frozen=True)
class CursorPosition:
    txid: str  # xid8 as text (it is beyond what every client type maps; compared in SQL only)
    last_id: int


@dataclass(frozen=True)
class TxidCursor:
    """One cursor row ``(txid, last_id)`` in ``cursor_table`` (keyed by the outbox table's name), moved once per
    batch. ``table`` must have ``txid xid8 NOT NULL DEFAULT pg_current_xact_id()``, an ``id_column`` taken
    from a sequence at insert, and an index on ``(txid, id_column)``. A row is sent iff its ``(txid, id)`` is
    at or before the cursor (``sent_condition``). The three names are constant identifiers (checked)."""

    table: str
    id_column: str
    cursor_table: str

    def __post_init__(self) -> None:
        for name in (self.table, self.id_column, self.cursor_table):
            if not _IDENTIFIER.fullmatch(name):
                raise ValueError(f"not a plain SQL identifier: {name!r}")

    async def position(self, conn: AsyncConnection) -> CursorPosition:
        cursor_table = self.cursor_table
        row = (
            await conn.execute(
                text(f"SELECT txid::text AS txid, last_id FROM {cursor_table} WHERE outbox = :outbox"),
                {"outbox": self.table},
            )
        ).one()  # the migration that gives the table its txid column inserts its cursor row
        return CursorPosition(row.txid, row.last_id)

    async def unsent(
        self, conn: AsyncConnection, limit: int, max_bytes: int = RELAY_BATCH_MAX_BYTES
    ) -> Sequence[Row[Any]]:
        at = await self.position(conn)
        table, id_column = self.table, self.id_column
        sql = (
            f"SELECT o.*, o.txid::text AS cursor_txid FROM {table} o "
            f"WHERE (o.txid, o.{id_column}) > (CAST(:txid AS xid8), :last_id) "
            "AND o.txid < pg_snapshot_xmin(pg_current_snapshot()) "  # only transactions that have ended
            f"ORDER BY o.txid, o.{id_column} LIMIT :limit"
        )
        params = {"txid": at.txid, "last_id": at.last_id, "limit": limit}
        return await read_within_bytes(conn, sql, params, max_bytes)

    async def record_sent(self, conn: AsyncConnection, rows: Sequence[Row[Any]]) -> None:
        last, cursor_table = rows[-1], self.cursor_table
        await conn.execute(
            text(
                f"UPDATE {cursor_table} SET txid = CAST(:txid AS xid8), last_id = :last_id, moved_at = now() "
                "WHERE outbox = :outbox"
            ),
            {"txid": last.cursor_txid, "last_id": getattr(last, self.id_column), "outbox": self.table},
        )

    def sent_condition(self) -> str:
        """SQL true for this outbox table's rows (unaliased) already sent; NULL when it has no cursor row."""
        table, id_column, cursor_table = self.table, self.id_column, self.cursor_table
        return (
            f"({table}.txid, {table}.{id_column}) <= "
            f"(SELECT c.txid, c.last_id FROM {cursor_table} c WHERE c.outbox = '{table}')"
        )

    async def held_back(self, conn: AsyncConnection) -> bool:
        """Rows after the cursor that ``unsent`` may not send yet: their transaction (or an older one still
        open anywhere in the cluster) has not ended below the snapshot's xmin. One index probe."""
        at = await self.position(conn)
        table, id_column = self.table, self.id_column
        sql = (  # ordered as the index and not in EXISTS (which drops the ORDER BY): one probe, not a table scan
            f"SELECT 1 FROM {table} o WHERE (o.txid, o.{id_column}) > (CAST(:txid AS xid8), :last_id) "
            f"ORDER BY o.txid, o.{id_column} LIMIT 1"
        )
        return (await conn.execute(text(sql), {"txid": at.txid, "last_id": at.last_id})).first() is not None

    def pending_sql(self) -> str:
        table, sent = self.table, self.sent_condition()
        return f"SELECT count(*) FROM {table} WHERE NOT coalesce({sent}, false)"


@dataclass(frozen=True)
class OutboxSpec:
    name: str  # metric label
    lock_id: int  # advisory lock id, unique per outbox
    progress: MarkedRows | TxidCursor  # how unsent rows are read and sent ones recorded
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
    size_of: Callable[[R], int] | None = None,
) -> list[OutgoingMessage]:
    """One message per group key (groups in the order of their first row, each group's rows in their order),
    a group split into consecutive parts while its message is larger than ``max_bytes`` (a single row is sent
    as it is, whatever its size: the producer then refuses it as it did before grouping).

    With ``size_of`` (a row's estimated weight in its message, e.g. ``row_bytes``), a group is first cut where
    the estimates reach ``max_bytes``, so that each part is encoded once when the estimate holds; a part whose
    message is still too large is split as above. Without it a group is encoded whole first: a relayed batch
    of 2 MiB for a 1 MB message limit encoded every row twice (issue #16, fifth session)."""
    groups: dict[Hashable, list[R]] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)
    out: list[OutgoingMessage] = []
    for members in groups.values():
        for part in [members] if size_of is None else _parts_by_size(members, size_of, max_bytes):
            out.extend(_fitted(part, to_group_message, max_bytes))
    return out


def _parts_by_size(rows: list[R], size_of: Callable[[R], int], max_bytes: int) -> list[list[R]]:
    parts: list[list[R]] = []
    part: list[R] = []
    total = 0
    for row in rows:
        size = size_of(row)
        if part and total + size > max_bytes:
            parts.append(part)
            part, total = [], 0
        part.append(row)
        total += size
    if part:
        parts.append(part)
    return parts


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
        batch_max_bytes: int = RELAY_BATCH_MAX_BYTES,
        on_sent: Callable[[str, int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._producer = producer
        self.spec = spec
        self._batch = batch
        self._batch_max_bytes = batch_max_bytes
        self._on_sent = on_sent
        # after a ``relay_once`` that sent nothing: rows are there that may not be sent yet (TxidCursor.held_back);
        # no NOTIFY comes when what holds them back ends, so the relay loop looks again soon rather than at its poll
        self.held_back = False

    async def relay_once(self) -> int:
        """Send one batch of unsent rows; return how many were sent (0 if none or another relay holds the lock).
        Sets ``held_back`` when it sent nothing while rows after a cursor wait for an older transaction."""
        self.held_back = False
        async with self._engine.connect() as conn, conn.begin():
            locked = (
                await conn.execute(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": self.spec.lock_id})
            ).scalar()
            if not locked:
                return 0
            rows = await self.spec.progress.unsent(conn, self._batch, self._batch_max_bytes)
            if not rows:
                self.held_back = await self.spec.progress.held_back(conn)
                return 0
            futures = []
            for msg in self._messages(rows):
                futures.append(
                    await self._producer.send(
                        self.spec.topic, value=msg.value, key=msg.key, headers=list(msg.headers) or None
                    )
                )
            await asyncio.gather(*futures)
            await self.spec.progress.record_sent(conn, rows)
        if self._on_sent is not None:
            self._on_sent(self.spec.name, len(rows))
        return len(rows)

    def _messages(self, rows: Sequence[Row[Any]]) -> list[OutgoingMessage]:
        spec = self.spec
        if spec.group_key is not None and spec.to_group_message is not None:
            return grouped_messages(
                rows, spec.group_key, spec.to_group_message, spec.max_message_bytes, size_of=row_bytes
            )
        return [spec.to_message(r) for r in rows]

    async def pending(self) -> int:
        async with self._engine.connect() as conn:
            sql = self.spec.progress.pending_sql()
            return int((await conn.execute(text(sql), {"limit": 1_000_000})).scalar() or 0)


def make_producer(bootstrap: str, client_id: str, security: KafkaClientSecurity) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        # no linger: a relay awaits each batch's acknowledgement before reading the next, so nothing could join
        # a batch while it lingered; the wait was latency only (5 ms on each of the two relayed hops)
        linger_ms=0,
        max_batch_size=1 << 20,
        request_timeout_ms=30000,
        **security.producer_kwargs(),
    )
