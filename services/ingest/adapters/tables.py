"""Tables owned by the ingest service (SQLAlchemy Core). Created idempotently at start and by the CLI."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from services.infrastructure.api_tokens import create_api_token_schema
from services.infrastructure.signing_keys import create_signing_key_schema

metadata = MetaData()

# Idempotency-Key of push requests, per rate-limit scope (a commune, or one admin token).
idempotency_record = Table(
    "idempotency_record",
    metadata,
    Column("scope", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("request_sha256", Text, nullable=False),
    Column("status", BigInteger, nullable=True),  # null while in progress
    Column("body", JSONB, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("scope", "key", name="idempotency_record_pk"),
)
Index("idempotency_record_created", idempotency_record.c.created_at)

# The receipt of each accepted push request: what was accepted (index, event id, feature) and refused at the
# door; GET /v1/receipts/{id} adds each record's outcome in the pipeline.
push_receipt = Table(
    "push_receipt",
    metadata,
    Column("receipt_id", Text, primary_key=True),
    Column("commune", Text, nullable=True),  # the token's commune (null: admin token)
    Column("dataset", Text, nullable=False),
    Column("body", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)
Index("push_receipt_created", push_receipt.c.created_at)

snapshot_connector = Table(
    "snapshot_connector",
    metadata,
    Column("name", Text, primary_key=True),
    Column("commune", Text, nullable=True),
    Column("dataset", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("format", Text, nullable=True),
    Column("every_seconds", Float, nullable=False),
    Column("max_delete_share", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_run_at", DateTime(timezone=True), nullable=True),
    Column("last_status", Text, nullable=True),
    Column("last_summary", JSONB, nullable=True),
)

# The last applied snapshot of each connector: one fingerprint of business content per feature.
connector_feature = Table(
    "connector_feature",
    metadata,
    Column("connector", Text, nullable=False),
    Column("commune", Text, nullable=False),
    Column("feature_id", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    PrimaryKeyConstraint("connector", "commune", "feature_id", name="connector_feature_pk"),
)

# Every run: applied, held (with the reason), failed, up to date.
connector_run = Table(
    "connector_run",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("connector", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("summary", JSONB, nullable=False),
)
Index("connector_run_by_connector", connector_run.c.connector, connector_run.c.id)


async def create_ingest_schema(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(7431004)"))  # concurrent starters
        await conn.run_sync(metadata.create_all)
    await create_api_token_schema(engine)  # the push API's tokens (shared with the publish API)
    await create_signing_key_schema(engine)
