"""The feature-change relay sends one message per dataset and relayed batch (issue #16.3): rows grouped by
dataset (the partition key) in change_id order, a group split under the size limit, the relay's cursor moved
past the batch only after every message is acknowledged. The relay runs here against a fake connection and producer (our
own port's fakes); the real broker and database path is tests/integration/test_pipeline_end_to_end.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pytest

from services.contract.codecs import Codecs
from services.contract.messages import FeatureChange
from services.infrastructure.outbox_relay import OutboxRelay, OutgoingMessage, grouped_messages
from services.normalise.adapters.outboxes import feature_changes_outbox

CODECS = Codecs()
T0 = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)


class Row(NamedTuple):  # a feature_change_outbox row as the relay reads it: a tuple with its field names
    change_id: int
    dataset: str
    feature_id: str = "f"
    event_id: str = "e"
    commune: str = "69123"
    kind: str = "CREATED"
    sequence: int = 1
    occurred_at: datetime = T0
    applied_at: datetime = T0
    before_geometry: str | None = None
    before_attributes: str | None = None
    before_hash: str | None = None
    after_geometry: str | None = '{"type":"Point","coordinates":[4.8,45.7]}'
    after_attributes: str | None = '{"nom":"x"}'
    after_hash: str | None = "ab" * 32
    cursor_txid: str = "100"  # the writer's transaction (xid8 as text), selected by the relay


def interleaved(n: int) -> list[Row]:
    datasets = ["public_toilets", "parks_gardens", "public_toilets", "drinking_fountains"]
    return [Row(i, datasets[i % len(datasets)], feature_id=f"f{i}") for i in range(1, n + 1)]


def decoded(messages: Sequence[OutgoingMessage]) -> list[tuple[bytes | None, list[FeatureChange]]]:
    return [(m.key, CODECS.decode_feature_changes(m.value)) for m in messages]


def test_one_message_per_dataset_keyed_by_it_with_its_changes_in_id_order() -> None:
    spec = feature_changes_outbox(CODECS, "odc.feature-changes")
    assert spec.group_key is not None and spec.to_group_message is not None
    rows = interleaved(40)
    messages = grouped_messages(rows, spec.group_key, spec.to_group_message, spec.max_message_bytes)
    assert len(messages) == 3
    for key, changes in decoded(messages):
        assert key is not None
        assert {c.dataset for c in changes} == {key.decode()}
        ids = [c.change_id for c in changes]
        assert ids == sorted(ids)
        assert ids == [r.change_id for r in rows if r.dataset == key.decode()]
    assert sorted(c.change_id for _, cs in decoded(messages) for c in cs) == [r.change_id for r in rows]


def test_a_group_larger_than_the_limit_is_split_in_order_under_it() -> None:
    spec = feature_changes_outbox(CODECS, "odc.feature-changes")
    assert spec.group_key is not None and spec.to_group_message is not None
    rows = [Row(i, "public_toilets", after_attributes='{"nom":"' + "x" * 300 + '"}') for i in range(1, 201)]
    whole = spec.to_group_message(rows)
    limit = len(whole.value) // 7
    messages = grouped_messages(rows, spec.group_key, spec.to_group_message, limit)
    assert len(messages) >= 7
    assert all(len(m.value) <= limit for m in messages)
    assert all(m.key == b"public_toilets" for m in messages)
    ids = [c.change_id for _, cs in decoded(messages) for c in cs]
    assert ids == list(range(1, 201))  # nothing lost, nothing repeated, in order across the parts


def test_a_single_row_over_the_limit_is_sent_alone_as_before() -> None:
    def encode(rows: Sequence[int]) -> OutgoingMessage:
        return OutgoingMessage(b"k", b"x" * (100 * len(rows)))

    messages = grouped_messages([1, 2, 3], lambda r: "k", encode, 50)
    assert [len(m.value) for m in messages] == [100, 100, 100]


@dataclass
class Cursor:  # the outbox_cursor row
    txid: str = "0"
    last_id: int = 0


class FakeResult:
    def __init__(self, rows: list[Any] | None = None, scalar: Any = None) -> None:
        self._rows, self._scalar = rows or [], scalar

    def all(self) -> list[Any]:
        return self._rows

    def one(self) -> Any:
        (row,) = self._rows
        return row

    def scalar(self) -> Any:
        return self._scalar

    def first(self) -> Any:
        return self._rows[0] if self._rows else None


class FakeStreamResult:  # a server-side cursor's result, fetched in partitions
    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows
        self.fetched = 0

    async def partitions(self, size: int) -> AsyncIterator[list[Any]]:
        for start in range(0, len(self._rows), size):
            self.fetched += len(self._rows[start : start + size])
            yield self._rows[start : start + size]

    async def close(self) -> None:
        return None


class FakeConnection:
    def __init__(self, table: list[Row], cursor: Cursor) -> None:
        self._table, self._cursor = table, cursor

    async def __aenter__(self) -> FakeConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def begin(self) -> FakeConnection:
        return self

    async def stream(self, statement: Any, params: dict[str, Any]) -> FakeStreamResult:
        return FakeStreamResult((await self.execute(statement, params)).all())

    async def execute(self, statement: Any, params: dict[str, Any]) -> FakeResult:
        sql = str(statement)
        if "pg_try_advisory_xact_lock" in sql:
            return FakeResult(scalar=True)
        if sql.startswith("SELECT txid::text AS txid, last_id FROM outbox_cursor"):
            return FakeResult([Cursor(self._cursor.txid, self._cursor.last_id)])
        if sql.startswith("SELECT o.*, o.txid::text AS cursor_txid FROM feature_change_outbox"):
            after = (int(params["txid"]), params["last_id"])
            unsent = sorted((r for r in self._table if (int(r.cursor_txid), r.change_id) > after), key=_position)
            return FakeResult(unsent[: params["limit"]])
        if sql.startswith("SELECT 1 FROM feature_change_outbox"):  # held back? (no xmin here: all are sendable)
            after = (int(params["txid"]), params["last_id"])
            return FakeResult([1] if any((int(r.cursor_txid), r.change_id) > after for r in self._table) else [])
        if sql.startswith("UPDATE outbox_cursor"):
            self._cursor.txid, self._cursor.last_id = params["txid"], params["last_id"]
            return FakeResult()
        raise AssertionError(f"unexpected SQL {sql}")


def _position(r: Row) -> tuple[int, int]:
    return int(r.cursor_txid), r.change_id


class FakeEngine:
    def __init__(self, table: list[Row]) -> None:
        self.table, self.cursor = table, Cursor()

    def connect(self) -> FakeConnection:
        return FakeConnection(self.table, self.cursor)


class FakeProducer:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self._fail = fail

    async def send(self, topic: str, *, value: bytes, key: bytes | None, headers: Any) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._fail:
            fut.set_exception(ConnectionError("broker down"))
        else:
            self.sent.append((topic, key, value))
            fut.set_result(None)
        return fut


async def test_the_relay_sends_grouped_messages_then_moves_its_cursor_past_them() -> None:
    engine, producer = FakeEngine(interleaved(30)), FakeProducer()
    counted: list[tuple[str, int]] = []
    relay = OutboxRelay(
        engine,  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        feature_changes_outbox(CODECS, "odc.feature-changes"),
        batch=20,
        on_sent=lambda name, n: counted.append((name, n)),
    )
    assert await relay.relay_once() == 20
    assert len(producer.sent) == 3  # 20 rows of 3 datasets -> 3 messages
    assert engine.cursor == Cursor("100", 20)
    assert await relay.relay_once() == 10
    assert await relay.relay_once() == 0
    assert not relay.held_back  # everything after the cursor was sent
    assert counted == [("feature_changes", 20), ("feature_changes", 10)]
    per_dataset: dict[str, list[int]] = {}
    for topic, key, value in producer.sent:
        assert topic == "odc.feature-changes" and key is not None
        per_dataset.setdefault(key.decode(), []).extend(c.change_id for c in CODECS.decode_feature_changes(value))
    for dataset, ids in per_dataset.items():  # each dataset's (= partition's) changes in id order, once each
        assert ids == [r.change_id for r in engine.table if r.dataset == dataset]


async def test_a_failed_send_moves_no_cursor_so_the_batch_is_sent_again() -> None:
    engine = FakeEngine(interleaved(5))
    relay = OutboxRelay(engine, FakeProducer(fail=True), feature_changes_outbox(CODECS, "t"))  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await relay.relay_once()
    assert engine.cursor == Cursor()


async def test_a_batch_of_large_rows_is_cut_by_bytes_and_the_cursor_moves_past_the_rows_sent_only() -> None:
    polygon = '{"type":"Polygon","coordinates":[[' + ",".join(["[4.8,45.7]"] * 400) + "]]}"  # ~4.4 kB
    table = [Row(i, "parks_gardens", after_geometry=polygon) for i in range(1, 11)]
    engine, producer = FakeEngine(table), FakeProducer()
    relay = OutboxRelay(
        engine,  # type: ignore[arg-type]
        producer,  # type: ignore[arg-type]
        feature_changes_outbox(CODECS, "t"),
        batch=2000,
        batch_max_bytes=3 * len(polygon) + 1000,  # three rows and their other columns, not four
    )
    assert await relay.relay_once() == 3
    assert engine.cursor == Cursor("100", 3)
    assert [await relay.relay_once() for _ in range(4)] == [3, 3, 1, 0]
    sent = [c.change_id for _, _, value in producer.sent for c in CODECS.decode_feature_changes(value)]
    assert sent == list(range(1, 11))


def test_a_group_cut_by_its_rows_estimated_sizes_encodes_each_row_once() -> None:
    """A relayed batch is bounded at 2 MiB of rows and a message at 1 MB: encoded whole first, every row of a
    large group was encoded twice. With the rows' sizes the group is cut first and each part encoded once; the
    parts keep the order and the limit, and nothing is lost or repeated."""
    from services.infrastructure.outbox_relay import row_bytes

    spec = feature_changes_outbox(CODECS, "odc.feature-changes")
    assert spec.group_key is not None and spec.to_group_message is not None
    rows = [Row(i, "public_toilets", after_attributes='{"nom":"' + "x" * 300 + '"}') for i in range(1, 301)]
    limit = len(spec.to_group_message(rows).value) // 3
    encoded: list[int] = []

    def counting(part: Sequence[Row]) -> OutgoingMessage:
        encoded.append(len(part))
        return spec.to_group_message(part)  # type: ignore[misc]

    messages = grouped_messages(rows, spec.group_key, counting, limit, size_of=row_bytes)
    assert sum(encoded) == len(rows)  # each row in exactly one encoded message
    assert len(messages) >= 3 and all(len(m.value) <= limit for m in messages)
    assert [c.change_id for _, cs in decoded(messages) for c in cs] == list(range(1, 301))
    encoded.clear()
    grouped_messages(rows, spec.group_key, counting, limit)  # without sizes: the whole group first
    assert sum(encoded) >= 2 * len(rows)


def test_a_part_whose_estimate_was_low_is_still_split_under_the_limit() -> None:
    """The estimate counts characters; a value of accented text weighs more in UTF-8: the encoded part is
    checked and split again, as without an estimate."""
    spec = feature_changes_outbox(CODECS, "odc.feature-changes")
    assert spec.group_key is not None and spec.to_group_message is not None
    rows = [Row(i, "public_toilets", after_attributes='{"nom":"' + "é" * 300 + '"}') for i in range(1, 101)]
    limit = len(spec.to_group_message(rows).value) // 4
    messages = grouped_messages(rows, spec.group_key, spec.to_group_message, limit, size_of=lambda r: 1)
    assert all(len(m.value) <= limit for m in messages)
    assert [c.change_id for _, cs in decoded(messages) for c in cs] == list(range(1, 101))


def test_a_changes_columns_are_read_by_their_names_whatever_the_rows_column_order() -> None:
    """The relay reads an outbox row's columns by position, found from the row's field names: the change is the
    same in any column order (the table's, a query's), every field in its place, and a kind it does not know
    fails as ChangeKind itself does."""
    from collections import namedtuple

    from services.contract.messages import ChangeKind, FeatureState
    from services.normalise.adapters.outboxes import _changes

    row = Row(7, "parks_gardens", feature_id="p1", event_id="ev", commune="69266", kind="UPDATED", sequence=3,
              before_geometry="bg", before_attributes="ba", before_hash="bh")  # fmt: skip
    expected = FeatureChange(7, "ev", "parks_gardens", "69266", "p1", ChangeKind.UPDATED, 3, T0, T0,
                             FeatureState("bg", "ba", "bh"), FeatureState(row.after_geometry, row.after_attributes,
                                                                          row.after_hash))  # fmt: skip
    shuffled_type = namedtuple("shuffled_type", list(reversed(Row._fields)))  # type: ignore[misc]
    shuffled = shuffled_type(*reversed(row))
    assert _changes([row]) == [expected]
    assert _changes([shuffled]) == [expected]
    assert _changes([row._replace(before_attributes=None)])[0].before is None
    with pytest.raises(ValueError):
        _changes([row._replace(kind="MOVED")])
