"""Baseline of the shared tables of services/infrastructure (``api_token``, ``commune_signing_key``): the
schema of the last release without migrations (d9e54e3), frozen. Creates only what is missing
(``checkfirst``), so a store made by that release passes through it unchanged. Later changes are new
revisions: never edit this file.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, DateTime, Index, LargeBinary, MetaData, Table, Text, text

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

metadata = MetaData()

api_token = Table(
    "api_token",
    metadata,
    Column("token_id", Text, primary_key=True),
    Column("commune", Text, nullable=True),
    Column("secret_sha256", Text, nullable=False),
    Column("label", Text, nullable=False, server_default=text("''")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
Index("api_token_by_commune", api_token.c.commune)

commune_signing_key = Table(
    "commune_signing_key",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("commune", Text, nullable=True),
    Column("secret", LargeBinary, nullable=False),
    Column("label", Text, nullable=False, server_default=text("''")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


def upgrade() -> None:
    metadata.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
