"""Source profiles (issue #14): ``source_profile`` (a commune's file layout per commune, dataset and source, each
save a new version) and the connector's ``profile`` (the saved profile its runs apply)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_profile",
        sa.Column("commune", sa.Text(), nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("profile", JSONB(), nullable=False),
        sa.Column("saved_by", sa.Text(), nullable=False, server_default=""),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("commune", "dataset", "source", "version", name="source_profile_pk"),
    )
    op.add_column("snapshot_connector", sa.Column("profile", sa.Text()))


def downgrade() -> None:
    op.drop_column("snapshot_connector", "profile")
    op.drop_table("source_profile")
