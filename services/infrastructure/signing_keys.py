"""The per-commune signing keys of the Kafka path, in PostgreSQL: created and revoked by ``odc key``
(ingest side), read by the normaliser to verify events (services/contract/event_signature.py).

HMAC verification needs the secret itself, so secrets are stored as they are (a hash would not do).
Threat model, in docs/ingest.md: this table sits in the database whose ``canonical_feature`` it protects;
whoever can read it could already write the features directly. Grant it to the normaliser and ingest
roles only.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, LargeBinary, MetaData, Table, Text, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contract.event_signature import SigningKey

metadata = MetaData()

signing_key = Table(
    "commune_signing_key",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("commune", Text, nullable=True),  # null: the Métropole's admin key
    Column("secret", LargeBinary, nullable=False),
    Column("label", Text, nullable=False, server_default=text("''")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


async def create_signing_key_schema(engine: AsyncEngine) -> None:
    """Upgrade the shared tables (this one and ``api_token``) to their latest migration."""
    from services.infrastructure.schema_migrations import upgrade_schema
    from services.infrastructure.shared_schema import SHARED_SCHEMA

    await upgrade_schema(engine, SHARED_SCHEMA)


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    secret: bytes
    commune: str | None

    def as_signing_key(self) -> SigningKey:
        return SigningKey(self.key_id, self.secret, self.commune)


async def issue_signing_key(engine: AsyncEngine, commune: str | None, label: str = "") -> IssuedKey:
    """A new random key (256 bits) for ``commune`` (None: admin)."""
    await create_signing_key_schema(engine)
    key_id = f"k-{commune or 'admin'}-{secrets.token_hex(4)}"
    secret = secrets.token_bytes(32)
    async with engine.begin() as conn:
        await conn.execute(
            signing_key.insert().values(
                key_id=key_id, commune=commune, secret=secret, label=label, created_at=datetime.now(UTC)
            )
        )
    return IssuedKey(key_id, secret, commune)


async def named_admin_key(engine: AsyncEngine, key_id: str, label: str) -> SigningKey:
    """The admin key ``key_id`` (a service's own key, e.g. the ingest API's), created on first use."""
    await create_signing_key_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO commune_signing_key (key_id, commune, secret, label, created_at) "
                "VALUES (:k, NULL, :s, :l, now()) ON CONFLICT (key_id) DO NOTHING"
            ),
            {"k": key_id, "s": secrets.token_bytes(32), "l": label},
        )
        row = (
            await conn.execute(
                select(signing_key.c.secret, signing_key.c.revoked_at).where(signing_key.c.key_id == key_id)
            )
        ).one()
    return SigningKey(key_id, bytes(row[0]), None, row[1] is not None)


async def revoke_signing_key(engine: AsyncEngine, key_id: str) -> bool:
    await create_signing_key_schema(engine)
    async with engine.begin() as conn:
        res = await conn.execute(
            update(signing_key)
            .where(signing_key.c.key_id == key_id, signing_key.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    return bool(res.rowcount)


async def list_signing_keys(engine: AsyncEngine, commune: str | None = None) -> list[dict[str, object]]:
    await create_signing_key_schema(engine)
    q = select(
        signing_key.c.key_id,
        signing_key.c.commune,
        signing_key.c.label,
        signing_key.c.created_at,
        signing_key.c.revoked_at,
    ).order_by(signing_key.c.created_at)
    if commune is not None:
        q = q.where(signing_key.c.commune == commune)
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    return [
        {
            "key_id": r[0],
            "commune": r[1],
            "label": r[2],
            "created_at": r[3].isoformat(),
            "revoked_at": r[4].isoformat() if r[4] else None,
        }
        for r in rows
    ]


async def load_signing_keys(engine: AsyncEngine) -> dict[str, SigningKey]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(signing_key.c.key_id, signing_key.c.secret, signing_key.c.commune, signing_key.c.revoked_at)
            )
        ).all()
    return {r[0]: SigningKey(r[0], bytes(r[1]), r[2], r[3] is not None) for r in rows}


class SigningKeyCache:
    """The keys as of at most ``max_age`` seconds ago, so a revocation takes effect within that delay; a
    key id not in the cache is looked up at once (at most one query per batch), so a new key works at once."""

    def __init__(self, engine: AsyncEngine, max_age: float = 5.0) -> None:
        self._engine = engine
        self._max_age = max_age
        self._keys: dict[str, SigningKey] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def keys(self, needed: Iterable[str] = ()) -> dict[str, SigningKey]:
        async with self._lock:
            stale = time.monotonic() - self._loaded_at >= self._max_age
            if stale or any(k not in self._keys for k in needed):
                self._keys = await load_signing_keys(self._engine)
                self._loaded_at = time.monotonic()
            return self._keys
