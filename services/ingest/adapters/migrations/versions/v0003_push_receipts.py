"""Push receipts (issue #14): what each accepted push request accepted and refused at the door, read back with
each record's outcome by ``GET /v1/receipts/{id}``."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_receipt",
        sa.Column("receipt_id", sa.Text(), primary_key=True),
        sa.Column("commune", sa.Text(), nullable=True),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("body", JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )
    op.create_index("push_receipt_created", "push_receipt", ["created_at"])


def downgrade() -> None:
    op.drop_index("push_receipt_created", table_name="push_receipt")
    op.drop_table("push_receipt")
