"""Conformance levels (issue #14): the count of incomplete live features per dataset (``dataset_state``) and in
each version (``dataset_version``); 0 for rows written before."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("dataset_state", "dataset_version"):
        op.add_column(table, sa.Column("incomplete", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in ("dataset_state", "dataset_version"):
        op.drop_column(table, "incomplete")
