"""Outbox rows wake their relay at commit (issue #16, item 4): a statement-level trigger on each outbox table
sends ``NOTIFY <table>`` in the transaction that writes the rows, so it is delivered when they commit. The relay
LISTENs and keeps its poll only as a fallback."""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("feature_change_outbox", "rejection")


def upgrade() -> None:
    op.execute(
        "CREATE OR REPLACE FUNCTION odc_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_notify(TG_TABLE_NAME, ''); RETURN NULL; END $$"
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_notify AFTER INSERT ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION odc_notify_outbox()"
        )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify ON {table}")
    op.execute("DROP FUNCTION IF EXISTS odc_notify_outbox()")
