"""Tables owned by the ingest service (SQLAlchemy Core). Changed only through migrations (./migrations),
upgraded to head at start and by the CLI."""

from __future__ import annotations

from pathlib import Path

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

from services.infrastructure.schema_migrations import SchemaOwner, upgrade_schema
from services.infrastructure.shared_schema import SHARED_SCHEMA

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
    Column("profile", Text, nullable=True),  # a saved source profile's source name (issue 14.1)
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

# Source profiles (services/ingest/domain/source_profiles.py): a commune's file layout per (commune, dataset,
# source), each save a new version. commune '*' is a Métropole profile whose file names each record's commune.
source_profile = Table(
    "source_profile",
    metadata,
    Column("commune", Text, nullable=False),
    Column("dataset", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("profile", JSONB, nullable=False),
    Column("saved_by", Text, nullable=False, server_default=""),
    Column("saved_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("commune", "dataset", "source", "version", name="source_profile_pk"),
)


INGEST_SCHEMA = SchemaOwner("ingest", Path(__file__).with_name("migrations"), (metadata,))


async def create_ingest_schema(engine: AsyncEngine) -> None:
    """Upgrade the ingest tables and the shared ones (push API tokens, signing keys) to their latest migration."""
    await upgrade_schema(engine, INGEST_SCHEMA, SHARED_SCHEMA)
