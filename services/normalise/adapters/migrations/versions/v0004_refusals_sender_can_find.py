"""Refusals the sender can find (issue #14): the record's row in the sent file (``source_row``), and when the same
source record was later accepted (``resolved_at``: it then leaves ``odc report``); the unresolved ones indexed."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rejection", sa.Column("source_row", sa.BigInteger()))
    op.add_column("rejection", sa.Column("resolved_at", sa.DateTime(timezone=True)))
    op.create_index(
        "rejection_unresolved",
        "rejection",
        ["dataset", "commune", "feature_id"],
        postgresql_where=sa.text("resolved_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("rejection_unresolved", table_name="rejection")
    op.drop_column("rejection", "resolved_at")
    op.drop_column("rejection", "source_row")
