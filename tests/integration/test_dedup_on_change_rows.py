"""The dedup claim rides on the change row (issue #16.2, normalise migration 0007), on the real PostgreSQL: an
applied event is remembered by its ``feature_change_outbox`` row (no ``processed_event`` row), an event that
changed nothing by its ``processed_event`` row, and the ids are looked up only once the batch's features are
locked, so a second worker applying the same event waits for the first and answers duplicate."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from services.contract.codecs import Codecs
from services.contract.conformance_levels import CONFORMING
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import ChangeEvent, GeometryEncoding, Operation, RawGeometry, SourcePosition
from services.infrastructure.database import make_engine
from services.ingest.adapters.event_outcomes import read_outcomes
from services.normalise.adapters.postgis_store import PostgisUnitOfWork, create_schema
from services.normalise.domain.canonical_feature import EventNormaliser
from services.normalise.service_layer.ports import NormaliseUnitOfWork
from services.normalise.service_layer.process_batch import BatchReport, InboundMessage, apply_batch, prepare_batch
from tests.fakes.normalise_store import InMemoryNormaliseStore, InMemoryUnitOfWork

pytestmark = pytest.mark.integration
CODECS = Codecs()
NORMALISER = EventNormaliser(DatasetCatalogue.load())
NOW = datetime(2026, 12, 5, 5, 0, tzinfo=UTC)
DATASET, COMMUNE = "public_toilets", "69266"


@pytest.fixture
async def engine(database: str) -> AsyncIterator[Any]:
    e = make_engine(database, pool_size=4)
    await create_schema(e)
    yield e
    await e.dispose()


def toilet(gid: int, seq: int = 1, adresse: str = "Place de la Mairie") -> ChangeEvent:
    return ChangeEvent(
        str(uuid.uuid4()),
        DATASET,
        COMMUNE,
        str(gid),
        Operation.UPSERT,
        NOW,
        seq,
        "test",
        RawGeometry(
            GeometryEncoding.GEOJSON,
            json.dumps({"type": "Point", "coordinates": [4.893, 45.7268]}).encode(),
            "urn:ogc:def:crs:OGC:1.3:CRS84",
        ),
        {"gid": gid, "codinsee": COMMUNE, "adresse": adresse, "acceshandi": "1", "payant": None},
    )


def fresh_gid() -> int:
    return random.randrange(10**8, 10**9)  # a feature no other test of the session touches


async def apply(factory: Callable[[], NormaliseUnitOfWork], *events: ChangeEvent) -> BatchReport:
    messages = [InboundMessage(CODECS.encode_change_event(e), SourcePosition("in", 0, i)) for i, e in enumerate(events)]
    prepared = prepare_batch(messages, codecs=CODECS, normaliser=NORMALISER, now=NOW)
    assert len(prepared.candidates) == len(events), prepared.rejections
    return await apply_batch(prepared, normaliser=NORMALISER, uow_factory=factory)


async def rows(engine: Any, event_id: str) -> tuple[int, int]:
    """(change rows carrying the id, processed_event rows of the id)."""
    async with engine.connect() as conn:
        changes = (
            await conn.execute(text("SELECT count(*) FROM feature_change_outbox WHERE event_id = :e"), {"e": event_id})
        ).scalar_one()
        claimed = (
            await conn.execute(text("SELECT count(*) FROM processed_event WHERE event_id = :e"), {"e": event_id})
        ).scalar_one()
    return int(changes), int(claimed)


def outcome(report: BatchReport, name: str) -> int:
    return report.outcomes[(DATASET, name)]


class HeldOpenUnitOfWork(PostgisUnitOfWork):
    """A unit of work that, with everything written and its locks held, waits to be let commit."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.written = asyncio.Event()
        self.let_commit = asyncio.Event()

    async def commit(self) -> None:
        self.written.set()
        await self.let_commit.wait()
        await super().commit()


async def test_a_second_worker_with_the_same_event_waits_for_the_first_and_answers_duplicate(engine: Any) -> None:
    event = toilet(fresh_gid())
    first_uow = HeldOpenUnitOfWork(engine)
    first = asyncio.create_task(apply(lambda: first_uow, event))
    await asyncio.wait_for(first_uow.written.wait(), 60)  # its change row written, not committed, locks held
    second = asyncio.create_task(apply(lambda: PostgisUnitOfWork(engine), event))
    # the second batch must be blocked on the feature's advisory lock (before it looks the id up)
    async with engine.connect() as conn:
        for _ in range(600):
            waiting = (
                await conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))
            ).scalar_one()
            if waiting or second.done():
                break
            await asyncio.sleep(0.05)
    assert waiting == 1 and not second.done(), "the second batch did not wait for the first one's lock"
    first_uow.let_commit.set()
    first_report, second_report = await asyncio.wait_for(asyncio.gather(first, second), 60)
    assert outcome(first_report, "created") == 1
    # looked up before the lock, the id would be unknown and the event decided again (stale, claimed)
    assert outcome(second_report, "duplicate") == 1 and sum(second_report.outcomes.values()) == 1
    assert await rows(engine, event.event_id) == (1, 0)


async def test_an_applied_event_replayed_after_a_restart_is_a_duplicate_without_a_processed_event_row(
    engine: Any, database: str
) -> None:
    event = toilet(fresh_gid())
    assert outcome(await apply(lambda: PostgisUnitOfWork(engine), event), "created") == 1
    assert await rows(engine, event.event_id) == (1, 0)  # its change row is its only record
    restarted = make_engine(database, pool_size=2)
    try:
        replay = await apply(lambda: PostgisUnitOfWork(restarted), event)
        # looked up in processed_event only, it would be decided again: stale, and claimed there
        assert outcome(replay, "duplicate") == 1 and sum(replay.outcomes.values()) == 1
        assert await rows(restarted, event.event_id) == (1, 0)
        # the push API's receipts and `odc send` still answer "applied"
        (answer,) = await read_outcomes(restarted, DATASET, [event])
        assert answer.level == CONFORMING
    finally:
        await restarted.dispose()


async def test_events_that_change_nothing_are_claimed_and_their_replays_are_duplicates(engine: Any) -> None:
    gid = fresh_gid()
    created, same, stale = toilet(gid, seq=2), toilet(gid, seq=3), toilet(gid, seq=1)
    report = await apply(lambda: PostgisUnitOfWork(engine), created, same, stale)
    assert [outcome(report, o) for o in ("created", "unchanged", "stale")] == [1, 1, 1]
    assert [await rows(engine, e.event_id) for e in (created, same, stale)] == [(1, 0), (0, 1), (0, 1)]
    again = await apply(lambda: PostgisUnitOfWork(engine), created, same, stale)
    assert outcome(again, "duplicate") == 3 and sum(again.outcomes.values()) == 3
    assert [await rows(engine, e.event_id) for e in (created, same, stale)] == [(1, 0), (0, 1), (0, 1)]
    answers = await read_outcomes(engine, DATASET, [created, same, stale])
    assert [a.level for a in answers] == [CONFORMING] * 3


@pytest.mark.parametrize("adapter", ["in-memory fake", "postgis"])
async def test_processed_events_contract(adapter: str, engine: Any) -> None:
    """The port's contract, for the fake the unit tests use and the real adapter: an event is processed when a
    change row carries its id or when it was claimed, in the unit of work that wrote it and after its commit;
    a unit of work left without commit leaves nothing."""
    store = InMemoryNormaliseStore()

    def factory() -> NormaliseUnitOfWork:
        return InMemoryUnitOfWork(store) if adapter == "in-memory fake" else PostgisUnitOfWork(engine)

    gid = fresh_gid()
    changed, unchanged, never = toilet(gid, seq=1), toilet(gid, seq=2), toilet(gid, seq=3)
    ids = [changed.event_id, unchanged.event_id, never.event_id]
    async with factory() as uow:
        await uow.claim_events([unchanged.event_id])
        assert await uow.processed_events(ids) == {unchanged.event_id}  # its own write
    async with factory() as uow:
        assert await uow.processed_events(ids) == set()  # left without commit: rolled back
    await apply(factory, changed, unchanged)
    async with factory() as uow:
        assert await uow.processed_events(ids) == {changed.event_id, unchanged.event_id}
        assert await uow.processed_events([]) == set()


async def test_deleting_change_rows_keeps_their_events_dedup_memory(engine: Any) -> None:
    """Nothing prunes the outbox today; if a retention job or an operator deletes relayed change rows, their
    event ids move to processed_event in the same transaction (migration 0007's trigger)."""
    event = toilet(fresh_gid())
    await apply(lambda: PostgisUnitOfWork(engine), event)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM feature_change_outbox WHERE event_id = :e"), {"e": event.event_id})
    assert await rows(engine, event.event_id) == (0, 1)
    replay = await apply(lambda: PostgisUnitOfWork(engine), event)
    assert outcome(replay, "duplicate") == 1 and sum(replay.outcomes.values()) == 1
    (answer,) = await read_outcomes(engine, DATASET, [event])
    assert answer.level == CONFORMING


async def test_relayed_change_rows_past_the_retention_are_pruned_and_their_events_stay_duplicates(engine: Any) -> None:
    """The normaliser's prune task (outbox_pruning.prune_feature_changes): a change row goes once it is relayed
    (at or before the relay's cursor) and older than the retention, in batches; its event id stays known (the
    delete trigger), so a replay of it is still a duplicate. A row not yet relayed, or within the retention, stays."""
    from services.normalise.adapters.outbox_pruning import prune_feature_changes

    factory = lambda: PostgisUnitOfWork(engine)  # noqa: E731
    old = [toilet(fresh_gid()) for _ in range(5)]
    await apply(factory, *old)  # relayed, past the retention: pruned
    recent = toilet(fresh_gid())
    await apply(factory, recent)  # relayed, within the retention: kept
    unsent = toilet(fresh_gid())
    await apply(factory, unsent)  # past the retention but not relayed: kept
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE feature_change_outbox SET applied_at = '1999-01-01Z' WHERE event_id = ANY(:e)"),
            {"e": [e.event_id for e in (*old, unsent)]},
        )
        # the relay sent everything up to and including `recent`
        await conn.execute(
            text(
                "INSERT INTO outbox_cursor (outbox, txid, last_id) SELECT 'feature_change_outbox', txid, change_id "
                "FROM feature_change_outbox WHERE event_id = :e "
                "ON CONFLICT (outbox) DO UPDATE SET txid = EXCLUDED.txid, last_id = EXCLUDED.last_id"
            ),
            {"e": recent.event_id},
        )
    cutoff = datetime(2000, 1, 1, tzinfo=UTC)
    assert await prune_feature_changes(engine, cutoff, batch_rows=2) == 5  # three batches: 2, 2, 1
    assert all([await rows(engine, e.event_id) == (0, 1) for e in old])
    assert await rows(engine, recent.event_id) == (1, 0)
    assert await rows(engine, unsent.event_id) == (1, 0)
    assert await prune_feature_changes(engine, cutoff) == 0  # nothing left to prune
    replay = await apply(factory, old[0], unsent)
    assert outcome(replay, "duplicate") == 2 and sum(replay.outcomes.values()) == 2
