"""The normaliser's unit of work on PostGIS: one transaction per batch.

Bulk path: the batch's final feature states as parallel arrays in one set-based ``INSERT ... SELECT FROM
unnest(...) ON CONFLICT DO UPDATE`` guarded by (sequence, occurred_at); outbox rows are COPYed.
Writers of the same feature are serialised by transaction-scoped advisory locks taken in key order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import shapely
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.contract.messages import Rejection
from services.contract.size_limits import REJECTION_ORIGINAL_PREFIX_BYTES
from services.infrastructure.schema_migrations import upgrade_schema
from services.normalise.adapters.same_place_store import PostgisSamePlaceStore
from services.normalise.adapters.tables import NORMALISE_SCHEMA
from services.normalise.domain.canonical_feature import CanonicalFeature, FeatureKey, seed_geojson
from services.normalise.domain.dedup_decisions import Decision, StoredFeature, final_states
from services.normalise.domain.rejection_retention import bounded_original
from services.normalise.domain.same_place import folded_text_values


class StoreInvariantBroken(RuntimeError):
    """The database disagreed with a decision taken under lock: a bug, never retried as transient."""


async def create_schema(engine: AsyncEngine) -> None:
    """Upgrade the normaliser's tables to their latest migration (adapters/migrations)."""
    await upgrade_schema(engine, NORMALISE_SCHEMA)


# One statement: the batch's final states as parallel arrays (unnest), upserted in place; no staging table
# (it was one more row written per change: docs/performance.md, writes per applied change).
_UPSERT = """
INSERT INTO canonical_feature AS f (dataset, commune, feature_id, geom, attributes, content_hash, sequence,
  occurred_at, deleted, last_event_id, corrections, updated_at, compared_folded)
SELECT u.dataset, u.commune, u.feature_id, ST_SetSRID(ST_GeomFromWKB(u.geom_wkb), 4326), u.attributes::jsonb,
  u.content_hash, u.sequence, u.occurred_at, u.deleted, u.last_event_id, u.corrections::jsonb,
  CAST(%(updated_at)s AS timestamptz), u.compared_folded::jsonb
FROM unnest(%(dataset)s::text[], %(commune)s::text[], %(feature_id)s::text[], %(geom_wkb)s::bytea[],
  %(attributes)s::text[], %(content_hash)s::text[], %(sequence)s::bigint[], %(occurred_at)s::timestamptz[],
  %(deleted)s::boolean[], %(last_event_id)s::text[], %(corrections)s::text[], %(compared_folded)s::text[])
  AS u(dataset, commune, feature_id, geom_wkb, attributes, content_hash, sequence, occurred_at, deleted,
       last_event_id, corrections, compared_folded)
ON CONFLICT (dataset, commune, feature_id) DO UPDATE SET
  geom = EXCLUDED.geom, attributes = EXCLUDED.attributes, content_hash = EXCLUDED.content_hash,
  sequence = EXCLUDED.sequence, occurred_at = EXCLUDED.occurred_at, deleted = EXCLUDED.deleted,
  last_event_id = EXCLUDED.last_event_id, corrections = EXCLUDED.corrections, updated_at = EXCLUDED.updated_at,
  compared_folded = EXCLUDED.compared_folded
WHERE (f.sequence, f.occurred_at) < (EXCLUDED.sequence, EXCLUDED.occurred_at)
"""

_OUTBOX_COPY = """COPY feature_change_outbox (event_id, dataset, commune, feature_id, kind, sequence, occurred_at,
  applied_at, before_geometry, before_attributes, before_hash, after_geometry, after_attributes, after_hash, txid)
  FROM STDIN"""
# The relay sends in (txid, change_id) order (normalise 0006). A transaction's own id is taken at its first write;
# whenever that comes before it waits for a feature's lock (it did while the claim came first; the same-place path
# locks more features as it goes), the batch that waited can hold the lower id and its change of that feature would
# go first. Its rows take the largest txid already
# committed instead when that is larger: every change of a feature committed before this batch locked it then
# sorts before this batch's (a tie goes by change_id, taken later). Never below the transaction's own id, which is
# what keeps the relay's cursor safe (services/infrastructure/outbox_relay.py). One index probe per batch.
OUTBOX_ORDER_SQL = (
    "SELECT greatest(pg_current_xact_id(), (SELECT txid FROM feature_change_outbox ORDER BY txid DESC LIMIT 1))::text"
)

# The event ids already processed: those a change row carries, and those claimed in processed_event (events
# that changed nothing). The ingest service reads the same two (services/ingest/adapters/event_outcomes.py).
_PROCESSED = text("""
SELECT event_id FROM processed_event WHERE event_id = ANY(CAST(:ids AS text[]))
UNION
SELECT event_id FROM feature_change_outbox WHERE event_id = ANY(CAST(:ids AS text[]))
""")

_REJECTION_INSERT = text("""
INSERT INTO rejection (rejection_id, rejected_at, stage, reason, message, event_id, dataset, commune, feature_id,
  errors, source_topic, source_partition, source_offset, original, original_sha256, original_size, source_row)
VALUES (:rejection_id, :rejected_at, :stage, :reason, :message, :event_id, :dataset, :commune, :feature_id,
  CAST(:errors AS jsonb), :source_topic, :source_partition, :source_offset, :original, :original_sha256,
  :original_size, :source_row)
ON CONFLICT (rejection_id) DO NOTHING
""")


def _state_cols(f: CanonicalFeature | None) -> tuple[str | None, str | None, str | None]:
    if f is None:
        return None, None, None
    return f.geometry_geojson(), f.attributes_json(), f.content_hash


def _pg_text(value: str | None) -> str | None:
    return None if value is None else value.replace("\x00", "\ufffd")


def _pg_json(document: str) -> str:
    return document.replace("\\u0000", "\\ufffd")


class PostgisUnitOfWork:
    def __init__(self, engine: AsyncEngine, compared_fields: Mapping[str, tuple[str, ...]] | None = None) -> None:
        """``compared_fields``: per dataset that links records, its same-place fields (their folded values are
        stored with each feature for the nearby search)."""
        self._engine = engine
        self._compared = compared_fields or {}
        self._conn: AsyncConnection | None = None

    def _compared_folded(self, dataset: str, feature: CanonicalFeature | None) -> str | None:
        names = self._compared.get(dataset)
        if names is None or feature is None:
            return None
        return json.dumps(folded_text_values(feature.attributes, names), ensure_ascii=False)

    async def __aenter__(self) -> PostgisUnitOfWork:
        self._conn = await self._engine.connect()
        await self._conn.begin()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        try:
            if self._conn.in_transaction():
                await self._conn.rollback()
        finally:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> AsyncConnection:
        assert self._conn is not None, "use the unit of work as an async context manager"
        return self._conn

    @property
    def same_place(self) -> PostgisSamePlaceStore:
        return PostgisSamePlaceStore(self.conn)

    async def processed_events(self, event_ids: Sequence[str]) -> set[str]:
        # One statement of its own, after the locks: in READ COMMITTED it sees what a worker that held them
        # committed. feature_change_outbox_event_id (migration 0007) indexes the change rows' event ids.
        if not event_ids:
            return set()
        rows = await self.conn.execute(_PROCESSED, {"ids": list(event_ids)})
        return {r[0] for r in rows}

    async def claim_events(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        await self.conn.execute(
            text("INSERT INTO processed_event (event_id) SELECT unnest(CAST(:ids AS text[])) ON CONFLICT DO NOTHING"),
            {"ids": list(event_ids)},
        )

    async def lock_and_load(self, keys: Sequence[FeatureKey]) -> dict[FeatureKey, StoredFeature]:
        if not keys:
            return {}
        ds = [k.dataset for k in keys]
        co = [k.commune for k in keys]
        fi = [k.feature_id for k in keys]
        params = {"ds": ds, "co": co, "fi": fi}
        await self.conn.execute(
            text(
                "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(d || '/' || c || '/' || f, 0) AS h "
                "FROM unnest(CAST(:ds AS text[]), CAST(:co AS text[]), CAST(:fi AS text[])) AS k(d, c, f) ORDER BY 1) s"
            ),
            params,
        )
        rows = await self.conn.execute(
            text(
                "SELECT f.dataset, f.commune, f.feature_id, ST_AsBinary(f.geom), f.attributes, f.content_hash, f.sequence, "
                "f.occurred_at, f.deleted, f.corrections FROM canonical_feature f "
                "JOIN unnest(CAST(:ds AS text[]), CAST(:co AS text[]), CAST(:fi AS text[])) AS k(d, c, fid) "
                "ON f.dataset = k.d AND f.commune = k.c AND f.feature_id = k.fid"
            ),
            params,
        )
        out: dict[FeatureKey, StoredFeature] = {}
        for d, c, fid, wkb, attrs, chash, seq, occ, deleted, corr in rows:
            feature = None
            if not deleted:
                geom = shapely.from_wkb(bytes(wkb)) if wkb is not None else None
                feature = CanonicalFeature(attrs or {}, geom, chash, tuple(corr or ()))
            out[FeatureKey(d, c, fid)] = StoredFeature(seq, occ, deleted, feature)
        return out

    async def save(self, decisions: Sequence[Decision], applied_at: datetime) -> int:
        finals = final_states(list(decisions))
        changes = [d for d in decisions if d.change_kind is not None]
        if not finals:
            return 0
        columns: dict[str, list[Any]] = {
            name: []
            for name in (
                "dataset",
                "commune",
                "feature_id",
                "geom_wkb",
                "attributes",
                "content_hash",
                "sequence",
                "occurred_at",
                "deleted",
                "last_event_id",
                "corrections",
                "compared_folded",
            )
        }
        for key, (state, decision) in finals.items():
            f = state.feature
            for name, value in (
                ("dataset", key.dataset),
                ("commune", key.commune),
                ("feature_id", key.feature_id),
                ("geom_wkb", None if f is None else f.wkb),
                ("attributes", None if f is None else f.attributes_json()),
                ("content_hash", None if f is None else f.content_hash),
                ("sequence", state.sequence),
                ("occurred_at", state.occurred_at),
                ("deleted", state.deleted),
                ("last_event_id", decision.candidate.event.event_id),
                ("corrections", json.dumps(list(f.corrections) if f is not None else [])),
                ("compared_folded", self._compared_folded(key.dataset, f)),
            ):
                columns[name].append(value)
        raw = await self.conn.get_raw_connection()
        pg: Any = raw.driver_connection
        async with pg.cursor() as cur:
            await cur.execute(_UPSERT, {**columns, "updated_at": applied_at})
            if cur.rowcount != len(finals):
                raise StoreInvariantBroken(
                    f"upsert wrote {cur.rowcount} of {len(finals)} rows: a newer state appeared under lock"
                )
            if changes:
                seed_geojson(
                    state.feature for d in changes for state in (d.before, d.after) if state is not None
                )  # the outbox's GeoJSON, one GEOS call for the batch
                await cur.execute(OUTBOX_ORDER_SQL)
                (txid,) = await cur.fetchone()
                async with cur.copy(_OUTBOX_COPY) as cp:
                    for d in changes:
                        ev = d.candidate.event
                        kind = d.change_kind
                        assert kind is not None
                        before = d.before.feature if d.before is not None else None
                        after = d.after.feature if d.after is not None else None
                        await cp.write_row(
                            (
                                ev.event_id,
                                ev.dataset,
                                ev.commune,
                                ev.feature_id,
                                kind.value,
                                ev.sequence,
                                ev.occurred_at,
                                applied_at,
                                *_state_cols(before),
                                *_state_cols(after),
                                txid,
                            )
                        )
        return len(changes)

    async def record_rejections(self, rejections: Sequence[Rejection]) -> None:
        """Rejections quote what the sender wrote; PostgreSQL refuses NUL in text and jsonb, so NUL is stored
        as U+FFFD in these columns (the original bytes are kept untouched in ``original``, up to
        REJECTION_ORIGINAL_PREFIX_BYTES, with the SHA-256 and size of the whole)."""
        if not rejections:
            return
        bounded = [bounded_original(r.original, REJECTION_ORIGINAL_PREFIX_BYTES) for r in rejections]
        await self.conn.execute(
            _REJECTION_INSERT,
            [
                {
                    "rejection_id": _pg_text(r.rejection_id),
                    "rejected_at": r.rejected_at,
                    "stage": r.stage,
                    "reason": r.reason,
                    "message": _pg_text(r.message),
                    "event_id": _pg_text(r.event_id),
                    "dataset": _pg_text(r.dataset),
                    "commune": _pg_text(r.commune),
                    "feature_id": _pg_text(r.feature_id),
                    "errors": _pg_json(
                        json.dumps(
                            [
                                {
                                    "field": e.field,
                                    "rule": e.rule,
                                    "value": e.value,
                                    "message_en": e.message_en,
                                    "message_fr": e.message_fr,
                                    "column": e.column,
                                }
                                for e in r.errors
                            ],
                            ensure_ascii=False,
                        )
                    ),
                    "source_topic": r.source.topic,
                    "source_partition": r.source.partition,
                    "source_offset": r.source.offset,
                    "original": b.prefix,
                    "original_sha256": b.sha256,
                    "original_size": b.size,
                    "source_row": r.source_row,
                }
                for r, b in zip(rejections, bounded, strict=True)
            ],
        )

    async def resolve_rejections(self, keys: Sequence[FeatureKey], at: datetime) -> None:
        if not keys:
            return
        await self.conn.execute(
            text(
                "UPDATE rejection r SET resolved_at = :at FROM unnest(CAST(:ds AS text[]), CAST(:cs AS text[]), "
                "CAST(:fs AS text[])) AS k(dataset, commune, feature_id) WHERE r.commune = k.commune "
                "AND r.dataset = k.dataset AND r.feature_id = k.feature_id AND r.resolved_at IS NULL"
            ),
            {
                "at": at,
                "ds": [k.dataset for k in keys],
                "cs": [k.commune for k in keys],
                "fs": [k.feature_id for k in keys],
            },
        )

    async def record_tally(self, tally: Mapping[tuple[str, str, str], int], at: datetime) -> None:
        if not tally:
            return
        await self.conn.execute(
            text(
                "INSERT INTO commune_event_tally AS t (dataset, commune, outcome, events, last_at) "
                "VALUES (:dataset, :commune, :outcome, :events, :at) ON CONFLICT (dataset, commune, outcome) "
                "DO UPDATE SET events = t.events + EXCLUDED.events, last_at = greatest(t.last_at, EXCLUDED.last_at)"
            ),
            [
                {"dataset": _pg_text(d), "commune": _pg_text(c), "outcome": o, "events": n, "at": at}
                for (d, c, o), n in sorted(tally.items())
            ],
        )

    async def commit(self) -> None:
        await self.conn.commit()
