"""Standard Webhooks (issue #15.4): a rotated-out secret still signed with until the overlap ends, the
subscriptions registered before (their secrets are not ``whsec_``) marked ``legacy_signature`` so they keep
the old ``X-Odc-Signature`` header for one release, and when a receiver's 410 Gone disabled a subscription.

Revision 0003 of the publish schema (after 0002).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhook_subscription", sa.Column("previous_secret", sa.Text(), nullable=True))
    op.add_column("webhook_subscription", sa.Column("previous_secret_until", sa.DateTime(timezone=True), nullable=True))
    # every subscription existing now was registered before Standard Webhooks: legacy
    op.add_column(
        "webhook_subscription",
        sa.Column("legacy_signature", sa.Boolean(), nullable=False, server_default=sa.text("true")),
    )
    op.alter_column("webhook_subscription", "legacy_signature", server_default=sa.text("false"))
    op.add_column("webhook_subscription", sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("webhook_subscription", sa.Column("disabled_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    for column in ("disabled_reason", "disabled_at", "legacy_signature", "previous_secret_until", "previous_secret"):
        op.drop_column("webhook_subscription", column)
