"""Read-only queries behind the publish HTTP API (versions, diffs, snapshots, change feed, history, OGC items).

Versions are immutable, so a version's documents never change once it exists. "As of version n" is the
after-state of each feature's latest diff row at or before n (removed features drop out); for the latest
version it is the ``published_feature`` table, maintained per version and spatially indexed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contract.messages import FeatureState
from services.publish.domain.api_documents import DatasetSummary, FeedRow, HistoryRow, VersionRecord
from services.publish.domain.change_feed import FeedPosition
from services.publish.domain.dcat import VersionSummary
from services.publish.domain.feature_documents import StoredFeature
from services.publish.domain.ogc_filter import SqlFilter
from services.publish.domain.versioning import DiffEntry, DiffKind


def _state(g: str | None, a: str | None, h: str | None) -> FeatureState | None:
    return None if a is None or h is None else FeatureState(g, a, h)


_DIFF_COLS = (
    "commune, feature_id, kind, before_geometry, before_attributes, before_hash, after_geometry, after_attributes, "
    "after_hash"
)


def _entry(r: Any, at: int = 0) -> DiffEntry:
    return DiffEntry(
        r[at],
        r[at + 1],
        DiffKind(r[at + 2]),
        _state(r[at + 3], r[at + 4], r[at + 5]),
        _state(r[at + 6], r[at + 7], r[at + 8]),
    )


def _summary(r: Any) -> VersionSummary:
    return VersionSummary(
        version=r.version,
        published_at=r.published_at,
        feature_count=r.feature_count,
        added=r.added,
        updated=r.updated,
        removed=r.removed,
        content_hash=r.content_hash,
        incomplete=r.incomplete,
    )


class PostgresReadModel:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _all(self, sql: str, **params: Any) -> list[Any]:
        async with self._engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())

    # -- datasets and versions ----------------------------------------------------------------------
    async def datasets(self) -> dict[str, DatasetSummary]:
        rows = await self._all(
            "SELECT dataset, last_version, feature_count, content_hash, updated_at, incomplete FROM dataset_state"
        )
        return {r[0]: DatasetSummary(*r) for r in rows}

    async def latest_versions(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in await self._all("SELECT dataset, last_version FROM dataset_state")}

    async def versions(self, dataset: str, after: int, limit: int, newest_first: bool = False) -> list[VersionSummary]:
        order = "DESC" if newest_first else "ASC"
        cond = "version < :after" if newest_first else "version > :after"
        rows = await self._all(
            "SELECT version, published_at, feature_count, added, updated, removed, content_hash, incomplete "
            "FROM dataset_version "
            f"WHERE dataset = :d AND {cond} ORDER BY version {order} LIMIT :n",
            d=dataset,
            after=after,
            n=limit,
        )
        return [_summary(r) for r in rows]

    async def version(self, dataset: str, version: int) -> VersionRecord | None:
        rows = await self._all(
            "SELECT version, published_at, feature_count, added, updated, removed, content_hash, first_change_id, "
            "last_change_id, incomplete FROM dataset_version WHERE dataset = :d AND version = :v",
            d=dataset,
            v=version,
        )
        if not rows:
            return None
        r = rows[0]
        return VersionRecord(dataset, _summary(r), r.first_change_id, r.last_change_id)

    async def diff(self, dataset: str, version: int) -> list[DiffEntry]:
        rows = await self._all(
            f"SELECT {_DIFF_COLS} FROM version_diff WHERE dataset = :d AND version = :v ORDER BY commune, feature_id",
            d=dataset,
            v=version,
        )
        return [_entry(r) for r in rows]

    # -- snapshots ----------------------------------------------------------------------------------
    async def snapshot(self, dataset: str, version: int) -> AsyncIterator[StoredFeature]:
        """Every live feature as of ``version`` (which must exist), in (commune, feature_id) order, streamed.
        One REPEATABLE READ transaction, so a version cut meanwhile cannot mix into the answer."""
        async with self._engine.connect() as conn:
            await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                latest = (
                    await conn.execute(
                        text("SELECT last_version FROM dataset_state WHERE dataset = :d"), {"d": dataset}
                    )
                ).scalar()
                if latest == version:
                    sql = (
                        "SELECT commune, feature_id, geometry, attributes FROM published_feature WHERE dataset = :d "
                        "ORDER BY commune, feature_id"
                    )
                else:
                    sql = (
                        "SELECT commune, feature_id, after_geometry, after_attributes FROM (SELECT DISTINCT ON "
                        "(commune, feature_id) commune, feature_id, after_geometry, after_attributes, after_hash "
                        "FROM version_diff WHERE dataset = :d AND version <= :v ORDER BY commune, feature_id, "
                        "version DESC) s WHERE after_hash IS NOT NULL ORDER BY commune, feature_id"
                    )
                result = await conn.stream(text(sql), {"d": dataset, "v": version})
                async for r in result:
                    yield StoredFeature(r[0], r[1], r[2], r[3])

    # -- change feed and history --------------------------------------------------------------------
    async def changes(self, dataset: str, start: FeedPosition | None, since: int, limit: int) -> list[FeedRow]:
        """Up to ``limit`` diff rows after ``start`` (a cursor) or, without one, of versions after ``since``.

        ``version_diff`` derives each version's rows from its changes (publish migration 0005), so the page reads
        only the versions it can reach: those after the cursor's own until their entry counts (dataset_version:
        added + updated + removed, exactly the diff's rows) cover ``limit``."""
        params: dict[str, Any]
        if start is None:
            first, cond, params = since + 1, "vd.version > :since", {"since": since}
        else:
            first, cond = start.version, "(vd.version, vd.commune, vd.feature_id) > (:v, :c, :f)"
            params = {"v": start.version, "c": start.commune, "f": start.feature_id}
        reachable: list[int] = []
        covered = 0
        for version, entries in await self._all(
            "SELECT version, added + updated + removed FROM dataset_version WHERE dataset = :d AND version >= :first "
            "ORDER BY version LIMIT :n",
            d=dataset,
            first=first,
            n=limit + 1,
        ):
            reachable.append(version)
            if start is None or version != start.version:  # the cursor's version may hold fewer rows after it
                covered += entries
            if covered >= limit:
                break
        if not reachable:
            return []
        rows = await self._all(
            "SELECT vd.version, dv.published_at, vd.commune, vd.feature_id, vd.kind, vd.before_geometry, "
            "vd.before_attributes, vd.before_hash, vd.after_geometry, vd.after_attributes, vd.after_hash "
            "FROM version_diff vd JOIN dataset_version dv ON dv.dataset = vd.dataset AND dv.version = vd.version "
            "WHERE vd.dataset = :d AND vd.version = ANY(CAST(:vs AS bigint[])) AND dv.version = ANY(CAST(:vs AS bigint[])) "
            f"AND {cond} "
            "ORDER BY vd.version, vd.commune, vd.feature_id LIMIT :n",
            d=dataset,
            vs=reachable,
            n=limit,
            **params,
        )
        return [FeedRow(FeedPosition(r[0], r[2], r[3]), r[1], _entry(r, 2)) for r in rows]

    async def feature_history(self, dataset: str, commune: str, feature_id: str) -> list[HistoryRow]:
        rows = await self._all(
            "SELECT vd.version, dv.published_at, vd.commune, vd.feature_id, vd.kind, vd.before_geometry, "
            "vd.before_attributes, vd.before_hash, vd.after_geometry, vd.after_attributes, vd.after_hash "
            "FROM version_diff vd JOIN dataset_version dv ON dv.dataset = vd.dataset AND dv.version = vd.version "
            "WHERE vd.dataset = :d AND vd.commune = :c AND vd.feature_id = :f ORDER BY vd.version",
            d=dataset,
            c=commune,
            f=feature_id,
        )
        return [HistoryRow(r[0], r[1], _entry(r, 2)) for r in rows]

    async def pending_change_count(self, dataset: str, commune: str, feature_id: str) -> int:
        rows = await self._all(
            "SELECT count(*) FROM change_log_entry WHERE dataset = :d AND commune = :c AND feature_id = :f "
            "AND position > coalesce((SELECT cut_position FROM dataset_state WHERE dataset = :d), 0)",
            d=dataset,
            c=commune,
            f=feature_id,
        )
        return int(rows[0][0])

    # -- current data (OGC API – Features) ----------------------------------------------------------
    async def extent(self, dataset: str) -> tuple[float, float, float, float] | None:
        rows = await self._all(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) AS e "
            "FROM published_feature WHERE dataset = :d) s",
            d=dataset,
        )
        r = rows[0]
        return None if r[0] is None else (float(r[0]), float(r[1]), float(r[2]), float(r[3]))

    async def first_published(self, dataset: str) -> datetime | None:
        """When the dataset's first version was published: the start of its features' temporal extent."""
        rows = await self._all(
            "SELECT published_at FROM dataset_version WHERE dataset = :d ORDER BY version LIMIT 1", d=dataset
        )
        return rows[0][0] if rows else None

    async def items(
        self,
        dataset: str,
        bbox: tuple[float, float, float, float] | None,
        limit: int,
        offset: int,
        period: tuple[datetime | None, datetime | None] | None = None,
        where: SqlFilter | None = None,
    ) -> tuple[int, list[StoredFeature]]:
        """(numberMatched, the page) from one snapshot. ``bbox`` includes its edges (a degenerate box is a
        line or a point, not an empty polygon; minLon > maxLon crosses the antimeridian). ``period`` selects
        features whose current state was published within it (both ends inclusive, None open). Without a
        filter, numberMatched is dataset_state's live count rather than a count(*). ``where`` is a CQL2 filter's
        condition (constant text and generated parameter names only; its values are bound parameters)."""
        cond = "dataset = :d"
        params: dict[str, Any] = {"d": dataset, "n": limit, "o": offset}
        if bbox is not None:
            x0, y0, x1, y1 = bbox
            spans = [(x0, x1)] if x0 <= x1 else [(x0, 180.0), (-180.0, x1)]  # across the antimeridian: two
            boxes = []
            for i, (a, b) in enumerate(spans):
                box = (
                    f"ST_Envelope(ST_SetSRID(ST_MakeLine(ST_MakePoint(:xa{i}, :y0), ST_MakePoint(:xb{i}, :y1)), 4326))"
                )
                boxes.append(f"(geom && {box} AND ST_Intersects(geom, {box}))")
                params.update({f"xa{i}": a, f"xb{i}": b})
            params.update(y0=y0, y1=y1)
            cond += f" AND ({' OR '.join(boxes)})"
        if period is not None:
            cond += (
                " AND version IN (SELECT version FROM dataset_version WHERE dataset = :d"
                " AND published_at >= coalesce(CAST(:t0 AS timestamptz), '-infinity'::timestamptz)"
                " AND published_at <= coalesce(CAST(:t1 AS timestamptz), 'infinity'::timestamptz))"
            )
            params.update(t0=period[0], t1=period[1])
        if where is not None:
            cond += " AND " + where.sql
            params.update(where.params)
        count_sql = (
            f"SELECT count(*) FROM published_feature WHERE {cond}"
            if bbox is not None or period is not None or where is not None
            else "SELECT coalesce((SELECT feature_count FROM dataset_state WHERE dataset = :d), 0)"
        )
        async with self._engine.connect() as conn:
            await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                matched = int((await conn.execute(text(count_sql), params)).scalar() or 0)
                rows = (
                    await conn.execute(
                        text(
                            f"SELECT commune, feature_id, geometry, attributes FROM published_feature WHERE {cond} "
                            "ORDER BY commune, feature_id LIMIT :n OFFSET :o"
                        ),
                        params,
                    )
                ).all()
        return matched, [StoredFeature(r[0], r[1], r[2], r[3]) for r in rows]

    async def item(self, dataset: str, commune: str, feature_id: str) -> StoredFeature | None:
        rows = await self._all(
            "SELECT commune, feature_id, geometry, attributes FROM published_feature WHERE dataset = :d AND "
            "commune = :c AND feature_id = :f",
            d=dataset,
            c=commune,
            f=feature_id,
        )
        return StoredFeature(*rows[0]) if rows else None

    # -- events (SSE) -------------------------------------------------------------------------------
    async def events_after(self, dataset: str, after: int, limit: int = 100) -> list[tuple[int, bytes]]:
        rows = await self._all(
            "SELECT version, body FROM version_event WHERE dataset = :d AND version > :v ORDER BY version LIMIT :n",
            d=dataset,
            v=after,
            n=limit,
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]
