"""The publisher's unit of work, one contract for the in-memory fake the unit tests use
(tests/fakes/publish_store.py) and the PostgreSQL adapter: changes recorded once per change_id, pending changes
the first recorded after the dataset's cut (a range of the change log) given in change_id order, the dataset's
state locked and created at version 0, and a version transaction written exactly as the domain decided it
(version_transaction.decide_version): its diff, the published features with the version that last changed
them, the dataset's state, cut position and O(changes) content hash, its notifications, its changes answering
its version; or, without net effect, the changes absorbed and nothing published."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from services.contract.codecs import Codecs
from services.contract.messages import ChangeKind, FeatureState
from services.infrastructure.database import make_engine
from services.publish.adapters.postgis_store import PostgresPublishUnitOfWork, create_schema
from services.publish.adapters.read_model import PostgresReadModel
from services.publish.domain.version_transaction import NotificationFormat, VersionWrite, decide_version
from services.publish.domain.versioning import (
    EMPTY_HASH,
    DiffEntry,
    ReceivedChange,
    apply_entries,
    change_bytes,
    content_hash_of,
)
from tests.fakes.publish_store import InMemoryPublishStore, InMemoryPublishUnitOfWork

pytestmark = pytest.mark.integration
CODECS = Codecs()
T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
FMT = NotificationFormat("/odc/test", "https://data.example", max_inline_changes=10)
LYON, BRON = "69123", "69029"

Published = dict[tuple[str, str], tuple[FeatureState, int]]


@dataclass
class Backend:
    """A unit of work factory and the reads that show what it wrote (the fake's dicts, or SQL)."""

    uow: Callable[[], Any]
    diff: Callable[[str, int], Awaitable[list[DiffEntry]]]
    published: Callable[[str], Awaitable[Published]]
    notice: Callable[[str, int], Awaitable[tuple[str, bytes, bytes] | None]]  # event id, Avro value, JSON body
    marked: Callable[[str], Awaitable[dict[int, int | None]]]


def _fake() -> Backend:
    store = InMemoryPublishStore()

    async def diff(dataset: str, version: int) -> list[DiffEntry]:
        return store.diff(dataset, version)

    async def published(dataset: str) -> Published:
        return dict(store.data.published.get(dataset, {}))

    async def notice(dataset: str, version: int) -> tuple[str, bytes, bytes] | None:
        n = store.data.notices.get((dataset, version))
        if n is None:
            return None
        return n.attributes.id, CODECS.encode_dataset_version(n.record), n.structured_body

    async def marked(dataset: str) -> dict[int, int | None]:
        return {i: c.version for i, c in store.data.changes.items() if c.change.dataset == dataset}

    return Backend(lambda: InMemoryPublishUnitOfWork(store), diff, published, notice, marked)


def _postgres(engine: Any) -> Backend:
    async def rows(sql: str, **params: Any) -> list[Any]:
        async with engine.connect() as conn:
            return list(await conn.execute(text(sql), params))

    async def diff(dataset: str, version: int) -> list[DiffEntry]:
        return await PostgresReadModel(engine).diff(dataset, version)

    async def published(dataset: str) -> Published:
        found = await rows(
            "SELECT commune, feature_id, geometry, attributes, content_hash, version, ST_AsGeoJSON(geom) "
            "FROM published_feature WHERE dataset = :d",
            d=dataset,
        )
        for r in found:  # the indexed geometry is the GeoJSON's
            assert (r[6] is None) == (r[2] is None) and (r[6] is None or json.loads(r[6]) == json.loads(r[2]))
        return {(r[0], r[1]): (FeatureState(r[2], r[3], r[4]), r[5]) for r in found}

    async def notice(dataset: str, version: int) -> tuple[str, bytes, bytes] | None:
        found = await rows(
            "SELECT o.event_id, o.payload, e.body FROM notification_outbox o JOIN version_event e "
            "ON e.dataset = o.dataset AND e.version = o.version WHERE o.dataset = :d AND o.version = :v",
            d=dataset,
            v=version,
        )
        return None if not found else (found[0][0], bytes(found[0][1]), bytes(found[0][2]))

    async def marked(dataset: str) -> dict[int, int | None]:
        return {
            r[0]: r[1] for r in await rows("SELECT change_id, version FROM change_log WHERE dataset = :d", d=dataset)
        }

    return Backend(lambda: PostgresPublishUnitOfWork(engine, CODECS), diff, published, notice, marked)


@pytest.fixture
async def engine(database: str) -> AsyncIterator[Any]:
    # a database of its own: in the session's, the running publisher cuts versions of any dataset with pending
    # changes, these tests' own included (fresh-clone CI, 2026-12-05: a version the test rolled back was there)
    e = make_engine(database, pool_size=2)
    await create_schema(e)
    yield e
    await e.dispose()


@pytest.fixture(params=["fake", "postgres"])
def backend(request: pytest.FixtureRequest, engine: Any) -> Backend:
    return _fake() if request.param == "fake" else _postgres(engine)


@pytest.fixture
def dataset() -> str:
    return f"toilets-{uuid.uuid4().hex[:8]}"  # a dataset of its own: the tables are shared by the session


@pytest.fixture
def ids() -> Callable[[int], int]:
    """change ids of this test only (change_log's primary key is shared by the session)."""
    base = uuid.uuid4().int % 2**40 * 1000
    return lambda n: base + n


def state(n: int, name: str = "Place de la Mairie") -> FeatureState:
    attributes = json.dumps({"gid": n, "adresse": name}, ensure_ascii=False)
    geometry = json.dumps({"type": "Point", "coordinates": [4.5 + n / 8, 45.75]})
    return FeatureState(geometry, attributes, f"{n:02d}{name}".encode().hex()[:64].ljust(64, "0"))


def change(cid: int, dataset: str, fid: str, before: FeatureState | None, after: FeatureState | None) -> ReceivedChange:
    kind = ChangeKind.CREATED if before is None else ChangeKind.DELETED if after is None else ChangeKind.UPDATED
    return ReceivedChange(cid, dataset, LYON, fid, kind, before, after)


async def record(backend: Backend, changes: list[ReceivedChange], at: datetime = T0) -> int:
    async with backend.uow() as uow:
        new = await uow.record_changes(changes, at)
        await uow.commit()
    return int(new)


async def cut(backend: Backend, dataset: str, at: datetime, limit: int = 1000) -> VersionWrite | None:
    async with backend.uow() as uow:
        write = decide_version(
            await uow.lock_dataset(dataset), await uow.pending_changes(dataset, limit, 1 << 30), at, FMT
        )
        if write is not None:
            await uow.save_version(write)
            await uow.commit()
    return write


async def test_changes_are_recorded_once_per_change_id_first_wins(
    backend: Backend, dataset: str, ids: Callable[[int], int]
) -> None:
    first = change(ids(2), dataset, "b", None, state(2))
    resent = change(ids(2), dataset, "b", None, state(2, "another payload"))
    assert await record(backend, [change(ids(1), dataset, "a", None, state(1)), first, resent]) == 2
    assert await record(backend, [resent, change(ids(3), dataset, "c", None, state(3))]) == 1
    async with backend.uow() as uow:
        pending = await uow.pending_changes(dataset, 10, 1 << 30)
    assert [c.change_id for c in pending.changes] == [ids(1), ids(2), ids(3)]
    assert pending.changes[1] == first


async def test_pending_changes_are_the_first_recorded_up_to_the_limit_in_change_id_order_with_their_summary(
    backend: Backend, dataset: str, ids: Callable[[int], int]
) -> None:
    # relayed out of order: later change ids committed first
    await record(backend, [change(ids(6), dataset, "f", None, state(6))], T0)
    await record(backend, [change(ids(4), dataset, "d", None, state(4))], T0 + timedelta(seconds=3))
    await record(backend, [change(ids(5), dataset, "e", None, state(5))], T0 + timedelta(seconds=7))
    async with backend.uow() as uow:
        pending = await uow.pending_changes(dataset, 2, 1 << 30)
        summary = (await uow.pending_summaries())[dataset]
    # the version is a range of the log: the two recorded first, given in change_id order
    assert [c.change_id for c in pending.changes] == [ids(4), ids(6)]
    assert (summary.count, summary.oldest_received_at, summary.newest_received_at) == (
        3,
        T0,
        T0 + timedelta(seconds=7),
    )
    write = await cut(backend, dataset, T0 + timedelta(minutes=1), limit=2)
    assert write is not None and write.draft is not None and write.last_position == pending.through
    assert await backend.marked(dataset) == {ids(4): 1, ids(5): None, ids(6): 1}
    async with backend.uow() as uow:
        rest = await uow.pending_changes(dataset, 2, 1 << 30)
        assert (await uow.pending_summaries())[dataset].count == 1
    assert [c.change_id for c in rest.changes] == [ids(5)] and rest.through > pending.through
    write = await cut(backend, dataset, T0 + timedelta(minutes=2), limit=2)
    assert write is not None and write.draft is not None and write.first_position == pending.through + 1
    assert await backend.marked(dataset) == {ids(4): 1, ids(5): 2, ids(6): 1}
    assert [e.feature_id for e in await backend.diff(dataset, 1)] == ["d", "f"]
    assert [e.feature_id for e in await backend.diff(dataset, 2)] == ["e"]


async def test_a_new_dataset_is_locked_at_version_zero_with_the_empty_hash(backend: Backend, dataset: str) -> None:
    async with backend.uow() as uow:
        s = await uow.lock_dataset(dataset)
    assert (s.dataset, s.last_version, s.feature_count, s.content_hash, s.incomplete) == (dataset, 0, 0, EMPTY_HASH, 0)


async def test_a_version_is_written_exactly_as_decided(
    backend: Backend, dataset: str, ids: Callable[[int], int]
) -> None:
    await record(
        backend,
        [
            change(ids(1), dataset, "a", None, state(1)),
            change(ids(2), dataset, "b", None, state(2)),
            change(ids(3), dataset, "a", state(1), state(1, "Rue Neuve")),
        ],
    )
    write = await cut(backend, dataset, T0 + timedelta(minutes=1))
    assert write is not None and write.draft is not None and write.notice is not None
    assert write.draft.version == 1 and (write.draft.added, write.draft.updated, write.draft.removed) == (2, 0, 0)
    async with backend.uow() as uow:
        assert await uow.lock_dataset(dataset) == write.state_after
        assert (await uow.pending_changes(dataset, 10, 1 << 30)).changes == ()
        assert dataset not in await uow.pending_summaries()
    assert await backend.diff(dataset, 1) == list(write.draft.entries)
    assert await backend.published(dataset) == {
        (LYON, "a"): (state(1, "Rue Neuve"), 1),
        (LYON, "b"): (state(2), 1),
    }
    assert await backend.marked(dataset) == {ids(1): 1, ids(2): 1, ids(3): 1}
    notice = await backend.notice(dataset, 1)
    assert notice == (
        write.notice.attributes.id,
        CODECS.encode_dataset_version(write.notice.record),
        write.notice.structured_body,
    )
    assert json.loads(notice[2])["data"]["added"] == 2


async def test_versions_keep_the_content_hash_and_count_of_the_published_state(
    backend: Backend, dataset: str, ids: Callable[[int], int]
) -> None:
    """Version n = version 1 + diffs 2..n; the O(changes) hash equals the hash recomputed from the features."""
    rounds = [
        [change(ids(i), dataset, f"f{i}", None, state(i)) for i in range(1, 6)],
        [
            change(ids(6), dataset, "f1", state(1), state(1, "Quai Perrache")),
            change(ids(7), dataset, "f2", state(2), None),
            change(ids(8), dataset, "f6", None, state(6)),
        ],
        [change(ids(9), dataset, "f3", state(3), None), change(ids(10), dataset, "f2", None, state(2, "back"))],
    ]
    snapshot: dict[tuple[str, str], FeatureState] = {}
    for n, changes in enumerate(rounds, start=1):
        await record(backend, changes)
        write = await cut(backend, dataset, T0 + timedelta(minutes=n))
        assert write is not None and write.draft is not None and write.draft.version == n
        apply_entries(snapshot, tuple(await backend.diff(dataset, n)))
        published = await backend.published(dataset)
        assert {k: s for k, (s, _) in published.items()} == snapshot
        async with backend.uow() as uow:
            s = await uow.lock_dataset(dataset)
        assert s.last_version == n and s.feature_count == len(snapshot)
        assert s.content_hash == content_hash_of([(c, f, st.content_hash) for (c, f), st in snapshot.items()])
    assert {k: v for k, (_, v) in (await backend.published(dataset)).items()} == {
        (LYON, "f1"): 2,
        (LYON, "f2"): 3,
        (LYON, "f4"): 1,
        (LYON, "f5"): 1,
        (LYON, "f6"): 2,
    }


async def test_changes_without_net_effect_are_absorbed_and_nothing_is_published(
    backend: Backend, dataset: str, ids: Callable[[int], int]
) -> None:
    await record(backend, [change(ids(1), dataset, "a", None, state(1)), change(ids(2), dataset, "a", state(1), None)])
    write = await cut(backend, dataset, T0 + timedelta(minutes=1))
    assert write is not None and write.draft is None and write.notice is None and write.marked_version == 0
    assert await backend.marked(dataset) == {ids(1): 0, ids(2): 0}
    assert await backend.notice(dataset, 1) is None and await backend.published(dataset) == {}
    async with backend.uow() as uow:
        assert (await uow.lock_dataset(dataset)) == write.state_after and write.state_after.last_version == 0
        assert (await uow.pending_changes(dataset, 10, 1 << 30)).changes == ()
        assert dataset not in await uow.pending_summaries()
    # the next real version is version 1 and holds only its own change
    await record(backend, [change(ids(3), dataset, "b", None, state(3))])
    write = await cut(backend, dataset, T0 + timedelta(minutes=2))
    assert write is not None and write.draft is not None and write.draft.version == 1
    assert [(e.feature_id, e.kind.value) for e in await backend.diff(dataset, 1)] == [("b", "added")]


async def test_a_version_not_committed_leaves_no_trace(
    backend: Backend, dataset: str, ids: Callable[[int], int]
) -> None:
    await record(backend, [change(ids(1), dataset, "a", None, state(1))])
    async with backend.uow() as uow:
        write = decide_version(
            await uow.lock_dataset(dataset), await uow.pending_changes(dataset, 10, 1 << 30), T0, FMT
        )
        assert write is not None
        await uow.save_version(write)  # then the process dies before commit
    assert await backend.marked(dataset) == {ids(1): None}
    assert await backend.notice(dataset, 1) is None and await backend.published(dataset) == {}
    assert await backend.diff(dataset, 1) == []
    async with backend.uow() as uow:
        assert (await uow.lock_dataset(dataset)).last_version == 0
        assert [c.change_id for c in (await uow.pending_changes(dataset, 10, 1 << 30)).changes] == [ids(1)]


async def test_changes_absorbed_after_a_version_leave_its_diff_as_it_was(
    backend: Backend, dataset: str, ids: Callable[[int], int]
) -> None:
    """Absorbed changes are marked with the dataset's current version: that version's diff must not move."""
    await record(backend, [change(ids(1), dataset, "a", None, state(1))])
    first = await cut(backend, dataset, T0 + timedelta(minutes=1))
    assert first is not None and first.draft is not None
    await record(
        backend,
        [
            change(ids(2), dataset, "a", state(1), state(1)),  # the same content again
            change(ids(3), dataset, "b", None, state(2)),  # created then removed before the next cut
            change(ids(4), dataset, "b", state(2), None),
        ],
    )
    absorbed = await cut(backend, dataset, T0 + timedelta(minutes=2))
    assert absorbed is not None and absorbed.draft is None and absorbed.marked_version == 1
    assert await backend.diff(dataset, 1) == list(first.draft.entries)
    assert await backend.published(dataset) == {(LYON, "a"): (state(1), 1)}
    assert await backend.marked(dataset) == {ids(1): 1, ids(2): 1, ids(3): 1, ids(4): 1}
    # the next version starts after the absorbed changes and holds only its own
    await record(backend, [change(ids(5), dataset, "a", state(1), state(1, "Rue Neuve"))])
    second = await cut(backend, dataset, T0 + timedelta(minutes=3))
    assert second is not None and second.draft is not None and second.draft.version == 2
    assert second.first_position == absorbed.last_position + 1
    assert [(e.feature_id, e.kind.value) for e in await backend.diff(dataset, 2)] == [("a", "updated")]
    assert await backend.diff(dataset, 1) == list(first.draft.entries)
    assert (await backend.marked(dataset))[ids(5)] == 2


async def test_pending_changes_are_bounded_by_bytes_as_well_the_first_always_taken(
    backend: Backend, dataset: str, ids: Callable[[int], int]
) -> None:
    """A version is built in memory: past its first change it takes at most ``max_bytes`` of geometry and
    attributes (versioning.change_bytes, the same count on both stores); the rest waits for the next range."""

    def big(n: int) -> FeatureState:  # a polygon of ~10 kB, its weight about that
        ring = [[4.8 + i * 1e-5, 45.7 + (i % 2) * 1e-5] for i in range(400)]
        geometry = json.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]})
        return FeatureState(geometry, json.dumps({"gid": n}), f"{n:064d}")

    changes = [change(ids(n), dataset, f"p{n}", None, big(n)) for n in range(1, 6)]
    weights = [change_bytes(c) for c in changes]
    assert all(9_000 < w < 12_000 for w in weights)
    await record(backend, changes)
    async with backend.uow() as uow:
        two = await uow.pending_changes(dataset, 10, weights[0] + weights[1] + weights[2] - 1)
        one = await uow.pending_changes(dataset, 10, 1)  # below the first's weight: the first alone
        capped = await uow.pending_changes(dataset, 2, 1 << 30)
        every = await uow.pending_changes(dataset, 10, sum(weights))
    assert [c.change_id for c in two.changes] == [ids(1), ids(2)]
    assert [c.change_id for c in one.changes] == [ids(1)]
    assert [c.change_id for c in capped.changes] == [ids(1), ids(2)] and capped.through == two.through
    assert [c.change_id for c in every.changes] == [ids(n) for n in range(1, 6)]
    assert one.through < two.through < every.through


async def test_the_pending_summary_counts_each_change_once_and_a_cut_takes_its_range_off(
    backend: Backend, ids: Callable[[int], int]
) -> None:
    """The summary the cutter reads at every wake-up: a resent change is not counted again, two datasets of one
    batch are counted apart, a version (or an absorbed range, no net effect) takes off exactly its changes."""
    a, b = f"toilets-{uuid.uuid4().hex[:8]}", f"toilets-{uuid.uuid4().hex[:8]}"
    first = [change(ids(1), a, "x", None, state(1)), change(ids(2), b, "y", None, state(2))]
    assert await record(backend, first, T0) == 2
    assert await record(backend, [*first, change(ids(3), a, "x", state(1), None)], T0 + timedelta(seconds=5)) == 1
    async with backend.uow() as uow:
        summaries = await uow.pending_summaries()
    assert (summaries[a].count, summaries[a].oldest_received_at, summaries[a].newest_received_at) == (
        2,
        T0,
        T0 + timedelta(seconds=5),
    )
    assert (summaries[b].count, summaries[b].oldest_received_at, summaries[b].newest_received_at) == (1, T0, T0)
    write = await cut(backend, a, T0 + timedelta(minutes=1))  # created then deleted: absorbed
    assert write is not None and write.draft is None and write.changes == 2
    write = await cut(backend, b, T0 + timedelta(minutes=1), limit=1)
    assert write is not None and write.draft is not None and write.changes == 1
    async with backend.uow() as uow:
        summaries = await uow.pending_summaries()
    assert a not in summaries and b not in summaries
    await record(backend, [change(ids(4), a, "z", None, state(4))], T0 + timedelta(minutes=2))
    async with backend.uow() as uow:
        summary = (await uow.pending_summaries())[a]
    assert (summary.count, summary.oldest_received_at) == (1, T0 + timedelta(minutes=2))
