"""Versions are ranges of the change log (publish migration 0007), on real PostgreSQL: a change's position is
taken before its transaction commits, so a naive cut ("everything after the last cut, up to the highest position
I can see") would lose a change recorded in a transaction still open across the cut (a lower position, committed
later: outside every version, or inside one already published). The dataset's cut lock (shared while recording,
exclusive for the cut; docs/architecture.md) makes every change land in exactly one version, and a published
version's changes never move."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from services.contract.codecs import Codecs
from services.contract.messages import ChangeKind, FeatureState
from services.infrastructure.database import make_engine
from services.publish.adapters.postgis_store import PostgresPublishUnitOfWork, create_schema
from services.publish.adapters.read_model import PostgresReadModel
from services.publish.domain.version_transaction import NotificationFormat, VersionWrite, decide_version
from services.publish.domain.versioning import ReceivedChange

pytestmark = pytest.mark.integration
CODECS = Codecs()
T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
FMT = NotificationFormat("/odc/test")


@pytest.fixture
async def engine(database: str) -> AsyncIterator[Any]:
    # a database of its own: in the session's, the running publisher cuts versions of any dataset with pending
    # changes, these tests' own included (fresh-clone CI, 2026-12-05: a version the test rolled back was there)
    e = make_engine(database, pool_size=10)
    await create_schema(e)
    yield e
    await e.dispose()


@pytest.fixture
def dataset() -> str:
    return f"toilets-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def ids() -> Callable[[int], int]:
    base = uuid.uuid4().int % 2**40 * 1000
    return lambda n: base + n


def created(cid: int, dataset: str, fid: str) -> ReceivedChange:
    s = FeatureState(json.dumps({"type": "Point", "coordinates": [4.85, 45.75]}), json.dumps({"n": fid}), fid * 2)
    return ReceivedChange(cid, dataset, "69123", fid, ChangeKind.CREATED, None, s)


def uow(engine: Any) -> PostgresPublishUnitOfWork:
    return PostgresPublishUnitOfWork(engine, CODECS)


async def record(engine: Any, changes: list[ReceivedChange]) -> None:
    async with uow(engine) as u:
        await u.record_changes(changes, T0)
        await u.commit()


async def cut(engine: Any, dataset: str, limit: int = 1000) -> VersionWrite | None:
    async with uow(engine) as u:
        write = decide_version(await u.lock_dataset(dataset), await u.pending_changes(dataset, limit, 1 << 30), T0, FMT)
        if write is not None:
            await u.save_version(write)
            await u.commit()
    return write


async def rows(engine: Any, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(text(sql), params))


async def blocked_on_the_cut_lock(engine: Any, task: asyncio.Task[Any]) -> bool:
    """Wait until a session waits for an advisory lock (the dataset's cut lock: the task is parked there) or the
    task ends without waiting (False)."""
    for _ in range(200):
        waiting = await rows(engine, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        if waiting[0][0] > 0 and not task.done():
            return True
        if task.done():
            return False
        await asyncio.sleep(0.05)
    raise AssertionError("the task neither waits for the cut lock nor ends")


async def marked(engine: Any, dataset: str) -> dict[int, int | None]:
    return {
        r[0]: r[1]
        for r in await rows(engine, "SELECT change_id, version FROM change_log WHERE dataset = :d", d=dataset)
    }


async def test_a_change_recorded_in_a_transaction_open_across_the_cut_is_in_the_version(
    engine: Any, dataset: str, ids: Callable[[int], int]
) -> None:
    model = PostgresReadModel(engine)
    slow = uow(engine)
    await slow.__aenter__()
    try:
        await slow.record_changes([created(ids(1), dataset, "slow")], T0)  # position taken, not committed
        await record(engine, [created(ids(2), dataset, "fast")])  # a higher position, committed first
        cutting = asyncio.create_task(cut(engine, dataset))
        waited = await blocked_on_the_cut_lock(engine, cutting)
        published_first = [e.feature_id for e in await model.diff(dataset, 1)] if cutting.done() else None
        await slow.commit()
    finally:
        await slow.__aexit__(None, None, None)
    write = await cutting
    # the interleaving that breaks a naive cut: the change committed last holds the lower position
    positions = {
        r[0]: r[1]
        for r in await rows(engine, "SELECT change_id, position FROM change_log_entry WHERE dataset = :d", d=dataset)
    }
    assert positions[ids(1)] < positions[ids(2)]
    assert write is not None and write.draft is not None and write.draft.version == 1
    diff = [e.feature_id for e in await model.diff(dataset, 1)]
    # without the lock, version 1 is published with "fast" only and "slow" appears in it afterwards
    assert published_first in (None, diff), f"version 1 was {published_first} when published, is {diff} now"
    assert diff == ["fast", "slow"] and write.draft.added == 2
    assert (write.first_position, write.last_position) == (1, positions[ids(2)])
    assert await marked(engine, dataset) == {ids(1): 1, ids(2): 1}
    assert waited  # the cut waited for the open transaction


async def test_a_change_recorded_while_a_cut_is_under_way_goes_to_the_next_version(
    engine: Any, dataset: str, ids: Callable[[int], int]
) -> None:
    await record(engine, [created(ids(1), dataset, "a")])
    cutter = uow(engine)
    await cutter.__aenter__()
    try:
        state = await cutter.lock_dataset(dataset)
        pending = await cutter.pending_changes(dataset, 1000, 1 << 30)
        recording = asyncio.create_task(record(engine, [created(ids(2), dataset, "b")]))
        assert await blocked_on_the_cut_lock(engine, recording)
        write = decide_version(state, pending, T0, FMT)
        assert write is not None
        await cutter.save_version(write)
        await cutter.commit()
    finally:
        await cutter.__aexit__(None, None, None)
    await recording
    position = (await rows(engine, "SELECT position FROM change_log_entry WHERE change_id = :i", i=ids(2)))[0][0]
    assert position > write.last_position
    assert await marked(engine, dataset) == {ids(1): 1, ids(2): None}
    second = await cut(engine, dataset)
    assert second is not None and second.draft is not None and second.draft.version == 2
    assert await marked(engine, dataset) == {ids(1): 1, ids(2): 2}
    assert [e.feature_id for e in await PostgresReadModel(engine).diff(dataset, 1)] == ["a"]


async def test_concurrent_recorders_and_cutters_put_every_change_in_exactly_one_version_for_good(
    engine: Any, ids: Callable[[int], int]
) -> None:
    """Four recorders (batches over two datasets, held open a random while) and two cutters (a second
    publisher worker) at once: at the end every change is in exactly one version, each version's diff is
    what it was published with, and the ranges of a dataset's versions follow each other without overlap."""
    datasets = [f"toilets-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    rng = random.Random(16)
    next_id = iter(range(1, 10**6))
    recorded: dict[str, set[str]] = {d: set() for d in datasets}
    seen_when_cut: dict[tuple[str, int], list[str]] = {}
    stop = asyncio.Event()
    model = PostgresReadModel(engine)

    async def recorder(n: int) -> None:
        for b in range(25):
            batch = []
            for _ in range(rng.randint(1, 4)):
                d, i = rng.choice(datasets), next(next_id)
                batch.append(created(ids(i), d, f"r{n}-{b}-{i}"))
            async with uow(engine) as u:
                await u.record_changes(batch, T0)
                await asyncio.sleep(rng.random() * 0.02)  # the transaction stays open a while
                await u.commit()
            for c in batch:
                recorded[c.dataset].add(c.feature_id)

    async def cutter() -> None:
        while not stop.is_set():
            for d in datasets:
                write = await cut(engine, d, limit=rng.randint(1, 8))
                if write is not None and write.draft is not None:  # what it was published with
                    seen_when_cut[(d, write.draft.version)] = [e.feature_id for e in write.draft.entries]
            await asyncio.sleep(rng.random() * 0.01)

    cutters = [asyncio.create_task(cutter()) for _ in range(2)]
    await asyncio.gather(*(recorder(n) for n in range(4)))
    stop.set()
    await asyncio.gather(*cutters)
    for d in datasets:
        while (await cut(engine, d)) is not None:
            pass

    for d in datasets:
        assert await rows(engine, "SELECT count(*) FROM change_log WHERE dataset = :d AND version IS NULL", d=d) == [
            (0,)
        ]
        versions = await rows(
            engine,
            "SELECT version, first_position, last_position FROM dataset_version WHERE dataset = :d ORDER BY version",
            d=d,
        )
        in_diffs: list[str] = []
        for version, _, _ in versions:
            diff = [e.feature_id for e in await model.diff(d, version)]
            if (d, version) in seen_when_cut:
                assert diff == seen_when_cut[(d, version)], f"version {version} of {d} changed after its cut"
            in_diffs += diff
        assert sorted(in_diffs) == sorted(recorded[d])  # each change in exactly one version
        for (_, _, last), (_, first, _) in itertools.pairwise(versions):
            assert first == last + 1
        by_version = await rows(
            engine, "SELECT version, count(*) FROM change_log WHERE dataset = :d GROUP BY version", d=d
        )
        assert sum(n for _, n in by_version) == len(recorded[d]) and all(v >= 1 for v, _ in by_version)
    assert len(seen_when_cut) > 4  # the cutters did cut while the recorders ran
