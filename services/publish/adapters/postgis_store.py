"""The publisher's unit of work on PostgreSQL: one transaction per batch of received changes, one per version.

A version is a range of the change log (publish migration 0007): ``record_changes`` appends each change once at
a position from the sequence ``change_log_position``, taken under the dataset's cut lock in shared mode; the cut
takes the same lock exclusively, reads the changes after the dataset's cut position and stores the range it
covers, without touching the change rows. Why no change can fall outside every version or into a published one:
docs/architecture.md, "Versions are ranges of the change log"."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.contract.codecs import Codecs
from services.contract.messages import FeatureState, change_kind
from services.infrastructure.schema_migrations import upgrade_schema
from services.publish.adapters.tables import PUBLISH_SCHEMA
from services.publish.domain.version_transaction import VersionWrite
from services.publish.domain.versioning import (
    EMPTY_HASH,
    DatasetState,
    PendingChanges,
    PendingSummary,
    ReceivedChange,
    VersionDraft,
)


async def create_schema(engine: AsyncEngine) -> None:
    """Upgrade the publisher's tables to their latest migration (adapters/migrations)."""
    await upgrade_schema(engine, PUBLISH_SCHEMA)


def _cols(s: FeatureState | None) -> tuple[str | None, str | None, str | None]:
    return (None, None, None) if s is None else (s.geometry_geojson, s.attributes_json, s.content_hash)


def _state_arrays(names: tuple[str, str, str], states: Sequence[FeatureState | None]) -> dict[str, list[str | None]]:
    """Columns of many states as three parallel arrays, for one ``unnest`` statement instead of one per row."""
    cols = [_cols(s) for s in states]
    return {name: [c[i] for c in cols] for i, name in enumerate(names)}


def _state(g: str | None, a: str | None, h: str | None) -> FeatureState | None:
    return None if a is None or h is None else FeatureState(g, a, h)


# The dataset's cut lock (a transaction-scoped advisory lock on its name's hash): shared by the transactions
# recording its changes, from before they take a position until they commit; exclusive for the version cut.
_CUT_LOCK_SHARED = (
    "SELECT pg_advisory_xact_lock_shared(h) FROM (SELECT DISTINCT hashtextextended('odc-publish-cut/' || d, 0) AS h "
    "FROM unnest(CAST(:ds AS text[])) AS d ORDER BY h) s"
)
_CUT_LOCK_EXCLUSIVE = "SELECT pg_advisory_xact_lock(hashtextextended('odc-publish-cut/' || :d, 0))"


# The datasets with changes after their cut position, from their counters (migration 0009); the oldest waiting
# change is the first after the cut (one probe of the (dataset, position) index; positions are taken in the order
# changes are recorded).
_PENDING_SUMMARIES = """
WITH t AS (SELECT dataset, sum(changes) AS n, max(newest_received_at) AS hi FROM pending_tally GROUP BY dataset),
s AS (SELECT coalesce(d.dataset, t.dataset) AS dataset, coalesce(d.pending_changes, 0) + coalesce(t.n, 0) AS n,
  greatest(d.newest_received_at, t.hi) AS hi, coalesce(d.cut_position, 0) AS cut
  FROM dataset_state d FULL JOIN t ON t.dataset = d.dataset)
SELECT s.dataset, s.n, (SELECT e.received_at FROM change_log_entry e WHERE e.dataset = s.dataset
  AND e.position > s.cut ORDER BY e.position LIMIT 1), s.hi
FROM s WHERE s.n > 0
"""
# A cut (under the dataset's exclusive cut lock: no recorder of it is under way) folds the dataset's tallies into
# its state and takes off the changes of its range.
_FOLD_TALLIES = """
WITH folded AS (DELETE FROM pending_tally WHERE dataset = :d RETURNING changes, newest_received_at)
UPDATE dataset_state SET pending_changes = pending_changes + coalesce((SELECT sum(changes) FROM folded), 0) - :k,
  newest_received_at = greatest(newest_received_at, (SELECT max(newest_received_at) FROM folded))
WHERE dataset = :d
"""


# The pending range, bounded by count and by bytes: a running total of each change's weight (octet_length reads
# a stored text's length without decompressing it), taken while it stays within the bound, the first always.
_PENDING_CHANGES = """
SELECT position, change_id, commune, feature_id, kind, before_geometry, before_attributes, before_hash,
  after_geometry, after_attributes, after_hash FROM (
  SELECT e.*, row_number() OVER w AS n, sum(coalesce(octet_length(before_geometry), 0)
    + coalesce(octet_length(before_attributes), 0) + coalesce(octet_length(after_geometry), 0)
    + coalesce(octet_length(after_attributes), 0)) OVER w AS total
  FROM change_log_entry e
  WHERE dataset = :d AND position > coalesce((SELECT cut_position FROM dataset_state WHERE dataset = :d), 0)
  WINDOW w AS (ORDER BY position ROWS UNBOUNDED PRECEDING)
  ORDER BY position LIMIT :n
) s WHERE n = 1 OR total <= :b ORDER BY position
"""


class PostgresPublishUnitOfWork:
    def __init__(self, engine: AsyncEngine, codecs: Codecs) -> None:
        self._engine = engine
        self._codecs = codecs
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> PostgresPublishUnitOfWork:
        self._conn = await self._engine.connect()
        # each statement sees what committed before it began: the cut's reads, after its lock, see every change
        # recorded under the shared lock (a transaction-wide snapshot would be taken before the lock wait)
        await self._conn.execution_options(isolation_level="READ COMMITTED")
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
        assert self._conn is not None
        return self._conn

    async def record_changes(self, changes: Sequence[ReceivedChange], received_at: datetime) -> int:
        if not changes:
            return 0
        unique = list({c.change_id: c for c in reversed(changes)}.values())[::-1]  # relay resends: first wins
        # the datasets' cut locks, shared, in key order, before any position is taken: a cut of one of them waits
        # for this transaction's commit, and a cut under way makes it wait (positions after the cut's range)
        await self.conn.execute(
            text(_CUT_LOCK_SHARED),
            {"ds": sorted({c.dataset for c in unique})},
        )
        # the changes new to the log (two statements, not one with a data-modifying CTE: pg_stat_statements counts
        # a statement's own rows only, and benchmarks/write_count.py reads the writes there)
        added = (
            await self.conn.execute(
                text(
                    "INSERT INTO change_log_entry (change_id, dataset, commune, feature_id, kind, before_geometry, "
                    "before_attributes, before_hash, after_geometry, after_attributes, after_hash, received_at, "
                    "position) SELECT *, CAST(:received_at AS timestamptz), nextval('change_log_position') "
                    "FROM unnest(CAST(:ids AS bigint[]), CAST(:ds AS text[]), CAST(:cs AS text[]), "
                    "CAST(:fs AS text[]), CAST(:ks AS text[]), CAST(:bg AS text[]), CAST(:ba AS text[]), "
                    "CAST(:bh AS text[]), CAST(:ag AS text[]), CAST(:aa AS text[]), CAST(:ah AS text[])) "
                    "ON CONFLICT DO NOTHING RETURNING dataset"
                ),
                {
                    "ids": [c.change_id for c in unique],
                    "ds": [c.dataset for c in unique],
                    "cs": [c.commune for c in unique],
                    "fs": [c.feature_id for c in unique],
                    "ks": [c.kind.value for c in unique],
                    **_state_arrays(("bg", "ba", "bh"), [c.before for c in unique]),
                    **_state_arrays(("ag", "aa", "ah"), [c.after for c in unique]),
                    "received_at": received_at,
                },
            )
        ).scalars()
        per_dataset = Counter(added)
        if per_dataset:
            # one tally row per dataset, appended: recorders of one dataset never wait for each other on a counter;
            # the dataset's next cut folds its tallies into dataset_state (publish 0009)
            await self.conn.execute(
                text(
                    "INSERT INTO pending_tally (dataset, changes, newest_received_at) "
                    "SELECT *, CAST(:t AS timestamptz) FROM unnest(CAST(:ds AS text[]), CAST(:ns AS bigint[]))"
                ),
                {"ds": list(per_dataset), "ns": list(per_dataset.values()), "t": received_at},
            )
        return sum(per_dataset.values())

    async def pending_summaries(self) -> dict[str, PendingSummary]:
        rows = await self.conn.execute(text(_PENDING_SUMMARIES))
        return {d: PendingSummary(n, lo, hi) for d, n, lo, hi in rows}

    async def lock_dataset(self, dataset: str) -> DatasetState:
        # exclusive: waits for the transactions recording this dataset's changes (they hold it shared) to end
        await self.conn.execute(text(_CUT_LOCK_EXCLUSIVE), {"d": dataset})
        await self.conn.execute(
            text(
                "INSERT INTO dataset_state (dataset, last_version, feature_count, content_hash, updated_at) "
                "VALUES (:d, 0, 0, :h, now()) ON CONFLICT DO NOTHING"
            ),
            {"d": dataset, "h": EMPTY_HASH},
        )
        row = (
            await self.conn.execute(
                text(
                    "SELECT last_version, feature_count, content_hash, incomplete, cut_position FROM dataset_state "
                    "WHERE dataset = :d FOR UPDATE"
                ),
                {"d": dataset},
            )
        ).one()
        return DatasetState(dataset, row[0], row[1], row[2], row[3], row[4])

    async def pending_changes(self, dataset: str, limit: int, max_bytes: int) -> PendingChanges:
        """The first changes after the cut position (a range of the log), at most ``limit`` and, past the first,
        ``max_bytes`` of them (``versioning.change_bytes``), given in change_id order. The bound is applied in
        the database: the rows past it are never sent."""
        rows = (await self.conn.execute(text(_PENDING_CHANGES), {"d": dataset, "n": limit, "b": max_bytes})).all()
        if not rows:
            cut = (
                await self.conn.execute(
                    text("SELECT cut_position FROM dataset_state WHERE dataset = :d"), {"d": dataset}
                )
            ).scalar()
            return PendingChanges((), int(cut or 0))
        changes = sorted(
            (
                ReceivedChange(
                    r[1],
                    dataset,
                    r[2],
                    r[3],
                    change_kind(r[4]),
                    _state(r[5], r[6], r[7]),
                    _state(r[8], r[9], r[10]),
                )
                for r in rows
            ),
            key=lambda c: c.change_id,
        )
        return PendingChanges(tuple(changes), int(rows[-1][0]))

    async def save_version(self, write: VersionWrite) -> None:
        """Write what the domain decided (version_transaction.decide_version): nothing is decided here, and no
        change row is written: the version is the range ``write.first_position`` .. ``write.last_position``."""
        draft, notice = write.draft, write.notice
        # either way the range's changes are no longer pending (the dataset's tallies folded in, publish 0009)
        await self.conn.execute(text(_FOLD_TALLIES), {"k": write.changes, "d": write.dataset})
        if draft is None or notice is None:  # absorbed: only the cut moves
            await self.conn.execute(
                text("UPDATE dataset_state SET cut_position = :p WHERE dataset = :d"),
                {"p": write.state_after.cut_position, "d": write.dataset},
            )
            return
        await self.conn.execute(
            text(
                "INSERT INTO dataset_version (dataset, version, published_at, added, updated, removed, feature_count, "
                "content_hash, first_change_id, last_change_id, incomplete, first_position, last_position) VALUES "
                "(:dataset, :version, :published_at, :added, :updated, :removed, :feature_count, :content_hash, "
                ":first_change_id, :last_change_id, :incomplete, :first_position, :last_position)"
            ),
            {
                k: getattr(draft, k)
                for k in (
                    "dataset",
                    "version",
                    "published_at",
                    "added",
                    "updated",
                    "removed",
                    "feature_count",
                    "content_hash",
                    "first_change_id",
                    "last_change_id",
                    "incomplete",
                )
            }
            | {"first_position": write.first_position, "last_position": write.last_position},
        )
        # the diff is not copied: the version_diff view derives it from the version's range (migrations 0005, 0007)
        after = write.state_after
        await self.conn.execute(
            text(
                "UPDATE dataset_state SET last_version = :v, feature_count = :n, content_hash = :h, updated_at = :t, "
                "incomplete = :i, cut_position = :p WHERE dataset = :d"
            ),
            {
                "p": after.cut_position,
                "v": after.last_version,
                "n": after.feature_count,
                "i": after.incomplete,
                "h": after.content_hash,
                "t": draft.published_at,
                "d": after.dataset,
            },
        )
        await self._publish_state(draft)
        attrs = notice.attributes
        await self.conn.execute(
            text(
                "INSERT INTO notification_outbox (dataset, version, event_id, headers, payload, created_at) "
                "VALUES (:d, :v, :e, CAST(:h AS jsonb), :p, :t)"
            ),
            {
                "d": draft.dataset,
                "v": draft.version,
                "e": attrs.id,
                "h": json.dumps([[k, v.decode()] for k, v in attrs.kafka_headers()]),
                "p": self._codecs.encode_dataset_version(notice.record),
                "t": draft.published_at,
            },
        )
        await self.conn.execute(
            text("INSERT INTO version_event (dataset, version, event_id, body) VALUES (:d, :v, :e, :b)"),
            {"d": draft.dataset, "v": draft.version, "e": attrs.id, "b": notice.structured_body},
        )
        # one delivery per matching webhook subscription, in the same transaction (the per-subscription outbox)
        await self.conn.execute(
            text(
                "INSERT INTO webhook_delivery (subscription_id, dataset, version, event_id, state, attempts, "
                "next_attempt_at, created_at) SELECT id, :d, :v, :e, 'pending', 0, :t, :t FROM webhook_subscription "
                "WHERE active AND (datasets IS NULL OR :d = ANY(datasets)) ON CONFLICT DO NOTHING"
            ),
            {"d": draft.dataset, "v": draft.version, "e": attrs.id, "t": draft.published_at},
        )

    async def _publish_state(self, draft: VersionDraft) -> None:
        """Bring published_feature to this version: one row touched per diff entry."""
        removed = [e for e in draft.entries if e.after is None]
        upserts = [e for e in draft.entries if e.after is not None]
        if removed:
            await self.conn.execute(
                text(
                    "DELETE FROM published_feature WHERE dataset = :d AND (commune, feature_id) IN "
                    "(SELECT * FROM unnest(CAST(:c AS text[]), CAST(:f AS text[])))"
                ),
                {"d": draft.dataset, "c": [e.commune for e in removed], "f": [e.feature_id for e in removed]},
            )
        if upserts:
            # one row per feature: a version's entries are collapsed per feature (versioning.collapse)
            await self.conn.execute(
                text(
                    "INSERT INTO published_feature (dataset, commune, feature_id, geom, geometry, attributes, "
                    "content_hash, version) SELECT CAST(:d AS text), u.c, u.f, "
                    "ST_SetSRID(ST_GeomFromGeoJSON(u.g), 4326), u.g, u.a, u.h, CAST(:v AS bigint) "
                    "FROM unnest(CAST(:cs AS text[]), CAST(:fs AS text[]), CAST(:gs AS text[]), CAST(:as_ AS text[]), "
                    "CAST(:hs AS text[])) AS u(c, f, g, a, h) "
                    "ON CONFLICT (dataset, commune, feature_id) DO UPDATE SET geom = EXCLUDED.geom, "
                    "geometry = EXCLUDED.geometry, attributes = EXCLUDED.attributes, "
                    "content_hash = EXCLUDED.content_hash, version = EXCLUDED.version"
                ),
                {
                    "d": draft.dataset,
                    "v": draft.version,
                    "cs": [e.commune for e in upserts],
                    "fs": [e.feature_id for e in upserts],
                    **_state_arrays(("gs", "as_", "hs"), [e.after for e in upserts]),
                },
            )

    async def commit(self) -> None:
        await self.conn.commit()
