"""Baseline of the ingest service's tables: the schema of the last release without migrations (d9e54e3),
frozen. Creates only what is missing (``checkfirst``), so a store made by that release, which has these
tables but no version table, passes through it unchanged. Later changes are new revisions: never edit this.
"""

from __future__ import annotations

from alembic import op
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

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

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


def upgrade() -> None:
    metadata.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
