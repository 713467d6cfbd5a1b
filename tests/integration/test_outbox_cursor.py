"""The feature-change relay keeps a (txid, id) cursor instead of marking each row (issue #16.2, normalise 0006),
on real PostgreSQL and the real broker. A row whose transaction took an earlier id but commits after a later one
is still sent, once: the relay reads only transactions below its snapshot's xmin. The same scenario run with a
naive cursor on the id alone (defined here) loses that row, which is what the design is for. Rows not yet sent
when a store is upgraded are sent once after it; rows sent before are not sent again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deploy.local.kafka import KafkaBroker
from services.contract.codecs import Codecs
from services.infrastructure.database import make_engine
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics
from services.infrastructure.outbox_relay import OutboxRelay, make_producer
from services.infrastructure.schema_migrations import upgrade_sync
from services.infrastructure.worker_runtime import Wakeup, relay_loop
from services.normalise.adapters.outboxes import FEATURE_CHANGES_CURSOR, REJECTIONS_CURSOR, feature_changes_outbox
from services.normalise.adapters.postgis_store import OUTBOX_ORDER_SQL
from services.normalise.adapters.postgis_store import create_schema as create_normalise_schema
from services.normalise.adapters.tables import NORMALISE_SCHEMA

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 5, tzinfo=UTC)
CODECS = Codecs()
COLS = (
    "event_id, dataset, commune, feature_id, kind, sequence, occurred_at, applied_at, after_geometry, "
    "after_attributes, after_hash"
)


@pytest.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    e = make_engine(database, pool_size=2)
    yield e
    await e.dispose()


@pytest.fixture
async def topic(kafka_broker: KafkaBroker) -> str:
    name = f"odc.test-cursor-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_broker.bootstrap, [TopicSpec(name, 1)], security=kafka_broker.admin_security())
    return name


@pytest.fixture
async def producer(kafka_broker: KafkaBroker) -> AsyncIterator[AIOKafkaProducer]:
    p = make_producer(kafka_broker.bootstrap, "odc-test-cursor", kafka_broker.admin_security())
    await p.start()
    yield p
    await p.stop()


async def sent_event_ids(broker: KafkaBroker, topic: str, settle: float = 1.0) -> list[str]:
    """Every feature change on ``topic``, in order (read until nothing more arrives for ``settle`` s)."""
    c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, **broker.admin_security().client_kwargs())
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        out: list[str] = []
        while True:
            batch = await c.getmany(tp, timeout_ms=int(settle * 1000))
            if not batch:
                return out
            for record in batch[tp]:
                out.extend(ch.event_id for ch in CODECS.decode_feature_changes(record.value))
    finally:
        await c.stop()


def change_row(event_id: str) -> tuple[Any, ...]:
    return (event_id, "public_toilets", "69123", f"f-{event_id}", "CREATED", 1, NOW, NOW,
            '{"type":"Point","coordinates":[4.8,45.7]}', '{"nom":"x"}', "ab" * 32)  # fmt: skip


async def write_changes(conn: psycopg.AsyncConnection[Any], *event_ids: str) -> None:
    async with conn.cursor().copy(f"COPY feature_change_outbox ({COLS}) FROM STDIN") as copy:
        for e in event_ids:
            await copy.write_row(change_row(e))


@dataclass(frozen=True)
class NaiveIdCursor:
    """The unsafe design, for contrast only: a cursor on change_id alone (kept in the same cursor row)."""

    async def unsent(self, conn: AsyncConnection, limit: int, max_bytes: int = 0) -> Sequence[Row[Any]]:
        return (
            await conn.execute(
                text(
                    "SELECT * FROM feature_change_outbox WHERE change_id > (SELECT last_id FROM outbox_cursor "
                    "WHERE outbox = 'feature_change_outbox') ORDER BY change_id LIMIT :limit"
                ),
                {"limit": limit},
            )
        ).all()

    async def held_back(self, conn: AsyncConnection) -> bool:
        return False

    async def record_sent(self, conn: AsyncConnection, rows: Sequence[Row[Any]]) -> None:
        await conn.execute(
            text("UPDATE outbox_cursor SET last_id = :id WHERE outbox = 'feature_change_outbox'"),
            {"id": rows[-1].change_id},
        )

    def pending_sql(self) -> str:
        return "SELECT 0"


def relay(engine: AsyncEngine, producer: AIOKafkaProducer, topic: str, naive: bool = False) -> OutboxRelay:
    spec = feature_changes_outbox(CODECS, topic)
    if naive:
        spec = type(spec)(**{**spec.__dict__, "progress": NaiveIdCursor()})
    return OutboxRelay(engine, producer, spec)


@pytest.mark.parametrize("naive", [False, True], ids=["txid cursor", "naive id cursor (loses the row)"])
async def test_a_row_committed_after_a_later_one_is_sent_once(
    database: str, engine: AsyncEngine, producer: AIOKafkaProducer, topic: str, kafka_broker: KafkaBroker, naive: bool
) -> None:
    await create_normalise_schema(engine)
    r = relay(engine, producer, topic, naive)
    async with (
        await psycopg.AsyncConnection.connect(database) as a,
        await psycopg.AsyncConnection.connect(database, autocommit=True) as b,
    ):
        await write_changes(a, "a")  # A takes the earlier change_id and its transaction stays open ...
        await write_changes(b, "b")  # ... B takes the later one and commits first
        ids = await (await b.execute("SELECT event_id FROM feature_change_outbox ORDER BY change_id")).fetchall()
        assert ids == [("b",)]  # A's row is not visible yet
        first = await r.relay_once()
        await a.commit()
    while await r.relay_once():
        pass
    sent = await sent_event_ids(kafka_broker, topic)
    if naive:  # it sent B, moved past A's id, and never sends A
        assert (first, sent) == (1, ["b"])
    else:  # B waits until A has ended (latency, not loss), then both go, in commit-safe order, once each
        assert (first, sent) == (0, ["a", "b"])
        assert await r.pending() == 0


async def test_a_rolled_back_row_does_not_hold_the_relay(
    database: str, engine: AsyncEngine, producer: AIOKafkaProducer, topic: str, kafka_broker: KafkaBroker
) -> None:
    await create_normalise_schema(engine)
    r = relay(engine, producer, topic)
    async with (
        await psycopg.AsyncConnection.connect(database) as a,
        await psycopg.AsyncConnection.connect(database, autocommit=True) as b,
    ):
        await write_changes(a, "rolled-back")
        await write_changes(b, "b")
        await a.rollback()
    await write_changes_committed(database, "c")
    assert await r.relay_once() == 2
    assert await r.relay_once() == 0
    assert await sent_event_ids(kafka_broker, topic) == ["b", "c"]


async def write_changes_committed(dsn: str, *event_ids: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await write_changes(conn, *event_ids)


async def test_a_long_write_transaction_elsewhere_delays_the_relay_and_loses_nothing(
    database: str, engine: AsyncEngine, producer: AIOKafkaProducer, topic: str, kafka_broker: KafkaBroker
) -> None:
    """The cost of the design: any transaction holding an xid (here an unrelated one, on another table) keeps
    the snapshot's xmin, and so every later outbox row, back until it ends."""
    await create_normalise_schema(engine)
    r = relay(engine, producer, topic)
    async with await psycopg.AsyncConnection.connect(database) as other:
        await other.execute("CREATE TEMPORARY TABLE elsewhere (x int)")  # a write: it has an xid now
        await other.execute("INSERT INTO elsewhere VALUES (1)")
        await write_changes_committed(database, "waits")
        assert await r.relay_once() == 0
        assert r.held_back  # seen, not sendable yet: the relay loop looks again soon, not at its poll
        assert await r.pending() == 1  # committed, counted as not yet sent
        await other.commit()
    assert await r.relay_once() == 1
    assert await r.relay_once() == 0 and not r.held_back
    assert await r.pending() == 0
    assert await sent_event_ids(kafka_broker, topic) == ["waits"]


async def test_the_relay_loop_sends_a_held_back_row_once_the_older_transaction_ends_without_a_wakeup(
    database: str, engine: AsyncEngine, producer: AIOKafkaProducer, topic: str, kafka_broker: KafkaBroker
) -> None:
    """No NOTIFY comes when what held a row back ends (and nobody listens here): the loop's fallback poll is an
    hour, so only its short retry of held-back rows can send the row within this test."""
    await create_normalise_schema(engine)
    r = relay(engine, producer, topic)
    stop, wakeup = asyncio.Event(), Wakeup()
    async with await psycopg.AsyncConnection.connect(database) as other:
        await other.execute("CREATE TEMPORARY TABLE elsewhere (x int)")
        await other.execute("INSERT INTO elsewhere VALUES (1)")  # holds the snapshots' xmin
        await write_changes_committed(database, "held")
        task = asyncio.create_task(
            relay_loop(
                [r],
                wakeup=wakeup,
                poll_seconds=3600.0,
                stopping=stop.is_set,
                on_health=lambda ok: None,
                on_failure=lambda name, error: None,
            )
        )
        for _ in range(600):
            if r.held_back:
                break
            await asyncio.sleep(0.05)
        assert r.held_back
        await other.commit()
    for _ in range(600):
        if await r.pending() == 0:
            break
        await asyncio.sleep(0.05)
    stop.set()
    wakeup.set()
    await asyncio.wait_for(task, 30)
    assert await sent_event_ids(kafka_broker, topic) == ["held"]


async def test_rows_unsent_before_the_upgrade_are_sent_once_after_it_and_sent_ones_never_again(
    database: str, engine: AsyncEngine, producer: AIOKafkaProducer, topic: str, kafka_broker: KafkaBroker
) -> None:
    async with engine.begin() as conn:  # a store of normalise 0005: rows marked with sent_at
        await conn.run_sync(upgrade_sync, NORMALISE_SCHEMA, "0005")
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        # ids 1..4: 1 and 3 sent, 2 and 4 not (2 < 3: the order the old relay could leave behind)
        await write_changes(conn, "old-1", "old-2", "old-3", "old-4")
        await conn.execute("UPDATE feature_change_outbox SET sent_at = now() WHERE event_id IN ('old-1', 'old-3')")
        await conn.execute(
            "INSERT INTO rejection (rejection_id, rejected_at, stage, reason, message, errors, source_topic, "
            "source_partition, source_offset, original, sent_at) VALUES "
            "('r-sent', now(), 'decode', 'undecodable', 'x', '[]', 't', 0, 1, '\\x00', now()), "
            "('r-unsent', now(), 'decode', 'undecodable', 'x', '[]', 't', 0, 2, '\\x00', NULL)"
        )
    await create_normalise_schema(engine)  # to head: 0006
    await write_changes_committed(database, "new-5")
    r = relay(engine, producer, topic)
    assert await r.pending() == 3
    while await r.relay_once():
        pass
    assert await r.relay_once() == 0
    assert await sent_event_ids(kafka_broker, topic) == ["old-2", "old-4", "new-5"]
    async with engine.connect() as conn:  # the rejections too: the unsent one is the one pending
        unsent = await conn.execute(
            text(f"SELECT rejection_id FROM rejection WHERE NOT coalesce({REJECTIONS_CURSOR.sent_condition()}, false)")
        )
        assert unsent.scalars().all() == ["r-unsent"]
        assert (await conn.execute(text(FEATURE_CHANGES_CURSOR.pending_sql()))).scalar() == 0


async def test_the_relay_rewrites_no_outbox_row_only_its_cursor(
    database: str, engine: AsyncEngine, producer: AIOKafkaProducer, topic: str, kafka_broker: KafkaBroker
) -> None:
    await create_normalise_schema(engine)
    await write_changes_committed(database, *(f"e{i}" for i in range(50)))
    versions = "SELECT change_id, ctid::text, xmin::text FROM feature_change_outbox ORDER BY change_id"
    with psycopg.connect(database) as conn:
        rows_before = conn.execute(versions).fetchall()
    r = OutboxRelay(engine, producer, feature_changes_outbox(CODECS, topic), batch=20)
    assert [await r.relay_once() for _ in range(4)] == [20, 20, 10, 0]
    assert await sent_event_ids(kafka_broker, topic) == [f"e{i}" for i in range(50)]
    with psycopg.connect(database) as conn:
        assert conn.execute(versions).fetchall() == rows_before  # no row version written by the relay
        cursor = conn.execute("SELECT last_id FROM outbox_cursor WHERE outbox = 'feature_change_outbox'").fetchone()
        assert cursor == (rows_before[-1][0],)


async def test_relays_racing_send_each_row_once(
    database: str, engine: AsyncEngine, producer: AIOKafkaProducer, topic: str, kafka_broker: KafkaBroker
) -> None:
    """Two relays on one outbox while writers commit: the advisory lock keeps one active; every row once."""
    await create_normalise_schema(engine)
    relays = [relay(engine, producer, topic), relay(engine, producer, topic)]

    async def writers() -> None:
        for i in range(20):
            await write_changes_committed(database, *(f"w{i}-{j}" for j in range(5)))

    async def relaying(r: OutboxRelay, done: asyncio.Event) -> None:
        while not done.is_set():
            await r.relay_once()
            await asyncio.sleep(0.005)

    done = asyncio.Event()
    tasks = [asyncio.create_task(relaying(r, done)) for r in relays]
    await writers()
    while await relays[0].pending():
        await asyncio.sleep(0.05)
    done.set()
    await asyncio.gather(*tasks)
    assert await sent_event_ids(kafka_broker, topic) == [f"w{i}-{j}" for i in range(20) for j in range(5)]


async def test_a_batch_that_waited_for_a_features_lock_sorts_after_the_change_it_waited_for(
    database: str, engine: AsyncEngine, producer: AIOKafkaProducer, topic: str, kafka_broker: KafkaBroker
) -> None:
    """The normaliser's batch takes its transaction id at the claim, before it waits for its features' locks. T2
    claims first (lower id), T1 claims, locks f, writes f's change and commits; T2 then gets f and writes its
    (later) change of f. With the txid default alone T2's change would sort, and be sent, first; the adapter's
    OUTBOX_ORDER_SQL gives T2's rows the largest txid already committed, so f's changes go in commit order."""
    await create_normalise_schema(engine)
    order = psycopg.sql.SQL(OUTBOX_ORDER_SQL)  # type: ignore[arg-type]  # the adapter's constant
    async with (
        await psycopg.AsyncConnection.connect(database) as t1,
        await psycopg.AsyncConnection.connect(database) as t2,
    ):
        claim = "INSERT INTO processed_event (event_id) VALUES (%s) RETURNING pg_current_xact_id()::text::bigint"
        (xid2,) = await (await t2.execute(claim, ("e2",))).fetchone()  # type: ignore[misc]
        (xid1,) = await (await t1.execute(claim, ("e1",))).fetchone()  # type: ignore[misc]
        assert xid2 < xid1  # the default alone would put T2's change first
        for conn, event_id in ((t1, "f-by-t1"), (t2, "f-by-t2")):  # T1 holds f first; T2 writes once T1 committed
            (txid,) = await (await conn.execute(order)).fetchone()  # type: ignore[misc]
            async with conn.cursor().copy(f"COPY feature_change_outbox ({COLS}, txid) FROM STDIN") as copy:
                await copy.write_row((*change_row(event_id), txid))
            await conn.commit()
    r = relay(engine, producer, topic)
    while await r.relay_once():
        pass
    assert await sent_event_ids(kafka_broker, topic) == ["f-by-t1", "f-by-t2"]


async def test_a_long_read_only_transaction_does_not_delay_the_relay(
    database: str, engine: AsyncEngine, producer: AIOKafkaProducer, topic: str, kafka_broker: KafkaBroker
) -> None:
    """Only transactions that hold an id count: a reader holding its snapshot open (a report, a backup's
    REPEATABLE READ) takes none and does not hold the relay back."""
    await create_normalise_schema(engine)
    r = relay(engine, producer, topic)
    async with await psycopg.AsyncConnection.connect(database) as reader:
        await reader.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        await reader.execute("SELECT count(*) FROM feature_change_outbox")  # its snapshot is taken and held
        await write_changes_committed(database, "not-delayed")
        assert await r.relay_once() == 1
        await reader.rollback()
    assert await sent_event_ids(kafka_broker, topic) == ["not-delayed"]
