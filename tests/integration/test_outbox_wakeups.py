"""Outbox relays are woken by PostgreSQL at the commit of new rows (issue #16, item 4), not only by their poll:
the outbox tables' statement triggers (normalise migration 0005, publish 0006) NOTIFY in the writing transaction,
PostgreSQL delivers it at commit, and the worker runtime's listener sets the relay's wake-up. Rows written by
COPY (how the normaliser writes its outbox) wake it too; a rolled-back write wakes nobody."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest

from services.infrastructure.database import make_engine
from services.infrastructure.worker_runtime import PgNotifications, Wakeup
from services.normalise.adapters.postgis_store import create_schema as create_normalise_schema
from services.publish.adapters.postgis_store import create_schema as create_publish_schema

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 5, tzinfo=UTC)
QUIET = 0.5  # how long "no wake-up" is watched for


@pytest.fixture
async def listening(database: str) -> AsyncIterator[dict[str, Wakeup]]:
    engine = make_engine(database, pool_size=1)
    await create_normalise_schema(engine)
    await create_publish_schema(engine)
    await engine.dispose()
    wakeups = {name: Wakeup() for name in ("feature_change_outbox", "rejection", "notification_outbox")}
    stop = asyncio.Event()
    listener = PgNotifications(database, wakeups, stopping=stop.is_set)
    task = asyncio.create_task(listener.run())
    for _ in range(100):
        if listener.connected:
            break
        await asyncio.sleep(0.05)
    assert listener.connected
    for w in wakeups.values():  # the listener wakes everyone once when it connects (rows may be waiting)
        assert await w.wait(1.0)
    yield wakeups
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_notification_row_wakes_its_relay_at_commit_and_not_before(
    database: str, listening: dict[str, Wakeup]
) -> None:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        await conn.execute(
            "INSERT INTO notification_outbox (dataset, version, event_id, headers, payload, created_at) "
            "VALUES ('d', 1, 'd:v1', '[]', '\\x00', %s)",
            (NOW,),
        )
        assert not await listening["notification_outbox"].wait(QUIET)  # written, not committed: nothing yet
        await conn.commit()
        assert await listening["notification_outbox"].wait(5.0)
    assert not await listening["feature_change_outbox"].wait(QUIET)  # another outbox's relay is left alone


async def test_rows_copied_into_the_change_outbox_wake_its_relay_and_a_rollback_wakes_nobody(
    database: str, listening: dict[str, Wakeup]
) -> None:
    cols = "event_id, dataset, commune, feature_id, kind, sequence, occurred_at, applied_at"
    async with await psycopg.AsyncConnection.connect(database) as conn:
        async with conn.cursor().copy(f"COPY feature_change_outbox ({cols}) FROM STDIN") as copy:
            await copy.write_row(("e1", "d", "69123", "f1", "created", 1, NOW, NOW))
        await conn.rollback()
        assert not await listening["feature_change_outbox"].wait(QUIET)
        async with conn.cursor().copy(f"COPY feature_change_outbox ({cols}) FROM STDIN") as copy:
            for i in range(3):
                await copy.write_row((f"e{i}", "d", "69123", f"f{i}", "created", 1, NOW, NOW))
        await conn.commit()
        assert await listening["feature_change_outbox"].wait(5.0)


async def test_every_outbox_table_has_its_commit_trigger(database: str, listening: dict[str, Wakeup]) -> None:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        rows = await (
            await conn.execute(
                "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE t.tgname LIKE '%\\_notify' AND NOT t.tgisinternal"
            )
        ).fetchall()
    assert {r[0] for r in rows} == set(listening)
