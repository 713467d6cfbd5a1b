"""Idempotency keys of push requests in PostgreSQL (claimed before publishing, completed after)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.infrastructure.database import is_transient
from services.ingest.service_layer.ports import StoredResponse, StoreUnavailable


class PostgresIdempotencyStore:
    def __init__(self, engine: AsyncEngine, ttl_hours: float = 24.0) -> None:
        self._engine = engine
        self._ttl = ttl_hours

    async def get(self, scope: str, key: str) -> StoredResponse | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT request_sha256, status, body FROM idempotency_record WHERE scope = :s AND key = :k "
                        "AND created_at > now() - make_interval(secs => :ttl)"
                    ),
                    {"s": scope, "k": key, "ttl": self._ttl * 3600},
                )
            ).first()
        return None if row is None else StoredResponse(row[0], None if row[1] is None else int(row[1]), row[2])

    async def claim(self, scope: str, key: str, request_sha256: str) -> bool:
        async with self._engine.begin() as conn:
            # an expired record of the same key is replaced
            await conn.execute(
                text(
                    "DELETE FROM idempotency_record WHERE scope = :s AND key = :k "
                    "AND created_at <= now() - make_interval(secs => :ttl)"
                ),
                {"s": scope, "k": key, "ttl": self._ttl * 3600},
            )
            res = await conn.execute(
                text(
                    "INSERT INTO idempotency_record (scope, key, request_sha256) VALUES (:s, :k, :h) "
                    "ON CONFLICT DO NOTHING"
                ),
                {"s": scope, "k": key, "h": request_sha256},
            )
        return bool(res.rowcount)

    async def complete(self, scope: str, key: str, status: int, body: dict[str, Any]) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    text(
                        "UPDATE idempotency_record SET status = :st, body = CAST(:b AS jsonb) "
                        "WHERE scope = :s AND key = :k"
                    ),
                    {"s": scope, "k": key, "st": status, "b": json.dumps(body, ensure_ascii=False)},
                )
        except Exception as exc:
            if is_transient(exc):
                raise StoreUnavailable(f"idempotency record not stored: {type(exc).__name__}") from exc
            raise

    async def release(self, scope: str, key: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM idempotency_record WHERE scope = :s AND key = :k AND status IS NULL"),
                {"s": scope, "k": key},
            )
