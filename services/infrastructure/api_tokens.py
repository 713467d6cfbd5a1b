"""API bearer tokens in PostgreSQL (table ``api_token``): issue (the secret is shown once, its hash
stored), revoke, list, look up. Used by the ingest push API and the publish API (subscription management);
the token format and the check are pure, in services/contract/api_tokens.py."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, MetaData, Table, Text, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contract.api_tokens import StoredToken, format_token, hash_secret

metadata = MetaData()

# Only the SHA-256 of the secret part is kept.
api_token = Table(
    "api_token",
    metadata,
    Column("token_id", Text, primary_key=True),
    Column("commune", Text, nullable=True),  # null: the Métropole's admin (operator) token
    Column("secret_sha256", Text, nullable=False),
    Column("label", Text, nullable=False, server_default=text("''")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
Index("api_token_by_commune", api_token.c.commune)


async def create_api_token_schema(engine: AsyncEngine) -> None:
    """Upgrade the shared tables (this one and ``commune_signing_key``) to their latest migration."""
    from services.infrastructure.schema_migrations import upgrade_schema
    from services.infrastructure.shared_schema import SHARED_SCHEMA

    await upgrade_schema(engine, SHARED_SCHEMA)


class PostgresTokenStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, token_id: str) -> StoredToken | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        api_token.c.token_id, api_token.c.commune, api_token.c.secret_sha256, api_token.c.revoked_at
                    ).where(api_token.c.token_id == token_id)
                )
            ).first()
        return None if row is None else StoredToken(row[0], row[1], row[2], row[3] is not None)

    async def issue(self, commune: str | None, label: str = "") -> tuple[str, str]:
        """A new token for ``commune`` (None: admin). Returns (token id, full token text)."""
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        async with self._engine.begin() as conn:
            await conn.execute(
                api_token.insert().values(
                    token_id=token_id,
                    commune=commune,
                    secret_sha256=hash_secret(secret),
                    label=label,
                    created_at=datetime.now(UTC),
                )
            )
        return token_id, format_token(token_id, secret)

    async def revoke(self, token_id: str) -> bool:
        async with self._engine.begin() as conn:
            res = await conn.execute(
                update(api_token)
                .where(api_token.c.token_id == token_id, api_token.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return bool(res.rowcount)

    async def list_all(self, commune: str | None = None) -> list[dict[str, Any]]:
        q = select(
            api_token.c.token_id, api_token.c.commune, api_token.c.label, api_token.c.created_at, api_token.c.revoked_at
        ).order_by(api_token.c.created_at)
        if commune is not None:
            q = q.where(api_token.c.commune == commune)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [
            {
                "token_id": r[0],
                "commune": r[1],
                "admin": r[1] is None,
                "label": r[2],
                "created_at": r[3].isoformat(),
                "revoked_at": r[4].isoformat() if r[4] else None,
            }
            for r in rows
        ]
