"""What the release before migrations re-ran at every start, run once: ``canonical_feature.compared_folded``
for stores created before that column existed (5c2a305). A no-op on a store made by d9e54e3 or by v0001.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE canonical_feature ADD COLUMN IF NOT EXISTS compared_folded jsonb")


def downgrade() -> None:
    pass  # the column belongs to the baseline (v0001) now: removing it would break d9e54e3-shaped stores
