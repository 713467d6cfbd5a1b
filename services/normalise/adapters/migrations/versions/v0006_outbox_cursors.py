"""The normaliser's relays keep a cursor instead of marking each row sent (issue #16.2): one write per change
in ``feature_change_outbox`` instead of two.

Each outbox row gets its writer's transaction id (``txid xid8 DEFAULT pg_current_xact_id()``) and an index on
``(txid, id)``; ``outbox_cursor`` holds one row per outbox table, the last ``(txid, id)`` sent
(services/infrastructure/outbox_relay.py, TxidCursor). ``sent_at`` and its partial index go: "sent" is now
"at or before the cursor".

Rows already there: every one gets txid 0, below any real transaction id (the first is 3), by a constant
default (no table rewrite); those not yet sent then get txid 1, and each cursor starts at (0, the table's
largest id). So the rows already sent are at or before the cursor and never sent again, whatever their order,
and the unsent ones come right after it, in id order, before any row written from now on.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OUTBOXES = (
    ("feature_change_outbox", "change_id", "feature_change_outbox_unsent"),
    ("rejection", "seq", "rejection_unsent"),
)


def upgrade() -> None:
    op.execute(
        "CREATE TABLE outbox_cursor (outbox text PRIMARY KEY, txid xid8 NOT NULL, last_id bigint NOT NULL, "
        "moved_at timestamptz NOT NULL DEFAULT now())"
    )
    for table, id_column, unsent_index in OUTBOXES:
        op.execute(f"ALTER TABLE {table} ADD COLUMN txid xid8 NOT NULL DEFAULT '0'")
        op.execute(f"UPDATE {table} SET txid = '1' WHERE sent_at IS NULL")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN txid SET DEFAULT pg_current_xact_id()")
        op.execute(
            f"INSERT INTO outbox_cursor (outbox, txid, last_id) "
            f"SELECT '{table}', '0', coalesce(max({id_column}), 0) FROM {table}"
        )
        op.execute(f"DROP INDEX {unsent_index}")
        op.execute(f"ALTER TABLE {table} DROP COLUMN sent_at")
        op.execute(f"CREATE INDEX {table}_by_txid ON {table} (txid, {id_column})")


def downgrade() -> None:
    for table, id_column, unsent_index in OUTBOXES:
        op.execute(f"ALTER TABLE {table} ADD COLUMN sent_at timestamptz")
        op.execute(
            f"UPDATE {table} o SET sent_at = c.moved_at FROM outbox_cursor c "
            f"WHERE c.outbox = '{table}' AND (o.txid, o.{id_column}) <= (c.txid, c.last_id)"
        )
        op.execute(f"CREATE INDEX {unsent_index} ON {table} ({id_column}) WHERE sent_at IS NULL")
        op.execute(f"DROP INDEX {table}_by_txid")
        op.execute(f"ALTER TABLE {table} DROP COLUMN txid")
    op.execute("DROP TABLE outbox_cursor")
