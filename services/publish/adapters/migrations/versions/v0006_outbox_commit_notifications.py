"""Notification rows wake their relay at commit (issue #16, item 4): a statement-level trigger on
``notification_outbox`` sends ``NOTIFY notification_outbox`` in the version's transaction, delivered at its
commit; the relays of other publisher processes LISTEN (the cutting process also wakes its own relay in
process). The poll stays as a fallback."""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE OR REPLACE FUNCTION odc_notify_notification_outbox() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_notify(TG_TABLE_NAME, ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER notification_outbox_notify AFTER INSERT ON notification_outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION odc_notify_notification_outbox()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS notification_outbox_notify ON notification_outbox")
    op.execute("DROP FUNCTION IF EXISTS odc_notify_notification_outbox()")
