"""Source profiles in PostgreSQL: one row per saved version of a (commune, dataset, source) profile."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.adapters.tables import source_profile
from services.ingest.service_layer.ports import StoredProfile

_T = source_profile


def _stored(row: Any) -> StoredProfile:
    return StoredProfile(
        commune=row.commune,
        dataset=row.dataset,
        source=row.source,
        version=int(row.version),
        profile=dict(row.profile),
        saved_by=row.saved_by,
        saved_at=row.saved_at,
    )


class PostgresProfileStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def save(
        self, commune: str, dataset: str, source: str, profile: dict[str, Any], saved_by: str
    ) -> StoredProfile:
        """A new version (1, 2, ...). Two concurrent saves of one key are serialised by an advisory lock."""
        async with self._engine.begin() as conn:
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": f"odc-profile/{commune}/{dataset}/{source}"},
            )
            last = await conn.scalar(
                select(func.max(_T.c.version)).where(
                    _T.c.commune == commune, _T.c.dataset == dataset, _T.c.source == source
                )
            )
            row = (
                await conn.execute(
                    _T.insert()
                    .values(
                        commune=commune,
                        dataset=dataset,
                        source=source,
                        version=(last or 0) + 1,
                        profile=profile,
                        saved_by=saved_by,
                    )
                    .returning(*_T.c)
                )
            ).one()
        return _stored(row)

    async def get(self, commune: str, dataset: str, source: str, version: int | None = None) -> StoredProfile | None:
        q = select(_T).where(_T.c.commune == commune, _T.c.dataset == dataset, _T.c.source == source)
        q = q.where(_T.c.version == version) if version is not None else q.order_by(_T.c.version.desc()).limit(1)
        async with self._engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return _stored(row) if row is not None else None

    async def list_latest(self, commune: str | None = None, dataset: str | None = None) -> list[StoredProfile]:
        q = select(_T).ext(distinct_on(_T.c.commune, _T.c.dataset, _T.c.source))
        if commune is not None:
            q = q.where(_T.c.commune == commune)
        if dataset is not None:
            q = q.where(_T.c.dataset == dataset)
        q = q.order_by(_T.c.commune, _T.c.dataset, _T.c.source, _T.c.version.desc())
        async with self._engine.connect() as conn:
            return [_stored(r) for r in (await conn.execute(q)).all()]

    async def versions(self, commune: str, dataset: str, source: str) -> list[StoredProfile]:
        q = (
            select(_T)
            .where(_T.c.commune == commune, _T.c.dataset == dataset, _T.c.source == source)
            .order_by(_T.c.version)
        )
        async with self._engine.connect() as conn:
            return [_stored(r) for r in (await conn.execute(q)).all()]
