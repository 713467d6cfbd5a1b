"""The relay's read of unsent rows (``outbox_relay.read_within_bytes``) on a real PostgreSQL: the rows in send
order up to the count and byte bounds, in one plain statement when they fit one fetch (light load: no
server-side cursor), through the server-side cursor otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.infrastructure.database import make_engine
from services.infrastructure.outbox_relay import _FETCH_ROWS, read_within_bytes, row_bytes

pytestmark = pytest.mark.integration
SQL = "SELECT id, payload FROM relay_read WHERE id > :after ORDER BY id LIMIT :limit"


class CursorSpy:
    """The connection, with each server-side cursor opened counted."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self.streams = 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await self._conn.execute(*args, **kwargs)

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        self.streams += 1
        return await self._conn.stream(*args, **kwargs)


@pytest.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE relay_read (id bigint PRIMARY KEY, payload text NOT NULL)")
        # 1,000 rows of 100 bytes, then ten of 100 kB
        conn.execute("INSERT INTO relay_read SELECT n, repeat('x', 100) FROM generate_series(1, 1000) n")
        conn.execute("INSERT INTO relay_read SELECT n, repeat('y', 100000) FROM generate_series(1001, 1010) n")
    e = make_engine(database, pool_size=2)
    yield e
    await e.dispose()


@pytest.mark.parametrize(
    ("after", "limit", "max_bytes", "expected_ids", "cursor_opened"),
    [
        (990, 2000, 10**9, list(range(991, 1011)), False),  # 20 rows left: one plain read
        (0, 100, 10**9, list(range(1, 101)), False),  # the count bound within one fetch
        (0, 2000, 10 * (100 + 8), list(range(1, 11)), False),  # the byte bound within the first fetch
        (0, 2000, 10**9, list(range(1, 1011)), True),  # more than a fetch: the cursor, every row
        (0, 600, 10**9, list(range(1, 601)), True),  # more than a fetch, the count bound
        (0, 2000, 400 * 108, list(range(1, 401)), True),  # the byte bound past the first fetch
        (1000, 2000, 1, [1001], False),  # one row larger than the bound still goes, alone
    ],
)
async def test_rows_in_order_within_the_bounds_and_a_cursor_only_past_one_fetch(
    engine: AsyncEngine,
    after: int,
    limit: int,
    max_bytes: int,
    expected_ids: list[int],
    cursor_opened: bool,
) -> None:
    assert _FETCH_ROWS < 400  # the cases above assume it
    async with engine.connect() as conn:
        spy = CursorSpy(conn)
        rows = await read_within_bytes(spy, SQL, {"after": after, "limit": limit}, max_bytes)  # type: ignore[arg-type]
    assert [r.id for r in rows] == expected_ids
    assert sum(row_bytes(r) for r in rows) <= max_bytes or len(rows) == 1
    assert spy.streams == (1 if cursor_opened else 0)
