"""Snapshot connectors and their last applied state in PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.tables import connector_feature, connector_run, snapshot_connector
from services.ingest.domain.snapshot_diff import FeatureRef
from services.ingest.service_layer.ports import ConnectorConfig

_LOCK_SQL = "SELECT pg_try_advisory_lock(hashtextextended('odc-connector/' || :n, 0))"
_UNLOCK_SQL = "SELECT pg_advisory_unlock(hashtextextended('odc-connector/' || :n, 0))"


class ConnectorExists(ValueError):
    pass


def _config(row: Any) -> ConnectorConfig:
    return ConnectorConfig(
        name=row.name,
        commune=row.commune,
        dataset=row.dataset,
        source=row.source,
        fmt=row.format,
        every_seconds=float(row.every_seconds),
        max_delete_share=float(row.max_delete_share),
        profile=row.profile,
    )


class PostgresConnectorStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, cfg: ConnectorConfig) -> None:
        async with self._engine.begin() as conn:
            res = await conn.execute(
                insert(snapshot_connector)
                .values(
                    name=cfg.name,
                    commune=cfg.commune,
                    dataset=cfg.dataset,
                    source=cfg.source,
                    format=cfg.fmt,
                    every_seconds=cfg.every_seconds,
                    max_delete_share=cfg.max_delete_share,
                    profile=cfg.profile,
                    created_at=datetime.now(UTC),
                )
                .on_conflict_do_nothing()
            )
        if not res.rowcount:
            raise ConnectorExists(f"a connector named {cfg.name!r} exists already")

    async def remove(self, name: str) -> bool:
        async with self._engine.begin() as conn:
            await conn.execute(delete(connector_feature).where(connector_feature.c.connector == name))
            res = await conn.execute(delete(snapshot_connector).where(snapshot_connector.c.name == name))
        return bool(res.rowcount)

    async def get(self, name: str) -> ConnectorConfig | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(snapshot_connector).where(snapshot_connector.c.name == name))).first()
        return None if row is None else _config(row)

    async def list_all(self) -> list[dict[str, Any]]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(snapshot_connector).order_by(snapshot_connector.c.name))).all()
            counts: dict[str, int] = dict(
                (await conn.execute(text("SELECT connector, count(*) FROM connector_feature GROUP BY connector"))).all()
            )
        return [
            {
                "name": r.name,
                "commune": r.commune,
                "dataset": r.dataset,
                "source": r.source,
                "format": r.format,
                "every_seconds": r.every_seconds,
                "max_delete_share": r.max_delete_share,
                "profile": r.profile,
                "features": int(counts.get(r.name, 0)),
                "last_run_at": r.last_run_at.isoformat() if r.last_run_at else None,
                "last_status": r.last_status,
                "last_summary": r.last_summary,
            }
            for r in rows
        ]

    async def due(self, now: datetime) -> list[str]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT name FROM snapshot_connector WHERE every_seconds > 0 AND (last_run_at IS NULL "
                    "OR last_run_at + make_interval(secs => every_seconds) <= :now) ORDER BY name"
                ),
                {"now": now},
            )
            return [r[0] for r in rows]

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        async with self._engine.connect() as conn:
            got = bool((await conn.execute(text(_LOCK_SQL), {"n": name})).scalar())
            await conn.commit()
            try:
                yield got
            finally:
                if got:
                    await conn.execute(text(_UNLOCK_SQL), {"n": name})
                    await conn.commit()

    async def state(self, name: str) -> dict[FeatureRef, str]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(
                    connector_feature.c.commune, connector_feature.c.feature_id, connector_feature.c.fingerprint
                ).where(connector_feature.c.connector == name)
            )
            return {FeatureRef(c, f): h for c, f, h in rows}

    async def apply(
        self, name: str, upserts: Mapping[FeatureRef, str], removed: Iterable[FeatureRef], summary: dict[str, Any]
    ) -> None:
        removed = list(removed)
        async with self._engine.begin() as conn:
            if upserts:
                stmt = insert(connector_feature).values(
                    [
                        {"connector": name, "commune": r.commune, "feature_id": r.feature_id, "fingerprint": h}
                        for r, h in upserts.items()
                    ]
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["connector", "commune", "feature_id"],
                        set_={"fingerprint": stmt.excluded.fingerprint},
                    )
                )
            if removed:
                await conn.execute(
                    text(
                        "DELETE FROM connector_feature f USING unnest(CAST(:c AS text[]), CAST(:i AS text[])) AS k(c, i) "
                        "WHERE f.connector = :n AND f.commune = k.c AND f.feature_id = k.i"
                    ),
                    {"n": name, "c": [r.commune for r in removed], "i": [r.feature_id for r in removed]},
                )
            await self._record(conn, name, "applied", summary)

    async def record_run(self, name: str, status: str, summary: dict[str, Any]) -> None:
        async with self._engine.begin() as conn:
            await self._record(conn, name, status, summary)

    @staticmethod
    async def _record(conn: Any, name: str, status: str, summary: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        doc = json.loads(json.dumps(summary, default=str))
        await conn.execute(connector_run.insert().values(connector=name, status=status, at=now, summary=doc))
        await conn.execute(
            update(snapshot_connector)
            .where(snapshot_connector.c.name == name)
            .values(last_run_at=now, last_status=status, last_summary=doc)
        )

    async def runs(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(connector_run.c.status, connector_run.c.at, connector_run.c.summary)
                .where(connector_run.c.connector == name)
                .order_by(connector_run.c.id.desc())
                .limit(limit)
            )
            return [{"status": s, "at": a.isoformat(), "summary": m} for s, a, m in rows]
