"""Bounded rejection storage (issue #13): each rejection keeps a prefix of the original bytes
(``services/contract/size_limits.py``) plus the SHA-256 and size of the whole message, and old rejections are
pruned by time (``rejection_by_time``). Rows written before keep their whole original, with NULL hash and size.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rejection", sa.Column("original_sha256", sa.Text()))
    op.add_column("rejection", sa.Column("original_size", sa.BigInteger()))
    op.create_index("rejection_by_time", "rejection", ["rejected_at"])


def downgrade() -> None:
    op.drop_index("rejection_by_time", table_name="rejection")
    op.drop_column("rejection", "original_size")
    op.drop_column("rejection", "original_sha256")
