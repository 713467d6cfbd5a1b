"""The dedup claim rides on the change row (issue #16, item 2): an applied change no longer writes a
``processed_event`` row; the event ids already processed are those in ``processed_event`` (events that changed
nothing) and those the change rows carry, looked up by this index. Not unique: the same-place path writes every
change that dissolves a previous-model group under the id of the event that reached it (one event, several rows).

Nothing prunes ``feature_change_outbox`` today (only relayed rejections are pruned), but a deleted change row would
take its event's dedup memory with it: a statement trigger copies the ids of deleted change rows into
``processed_event`` in the deleting transaction, so a retention job or a hand-made ``DELETE`` keeps the answer
right. ``TRUNCATE`` fires no delete trigger: it is a reset, to be done with ``processed_event`` alike.

Rows of the previous release need nothing: their ``processed_event`` rows stay, and stay right.

Plain ``CREATE INDEX``: alembic runs the upgrade in a transaction, where ``CONCURRENTLY`` is refused, so the build
holds a SHARE lock on ``feature_change_outbox`` (the normaliser's batches wait for it; the relay can still read).
On a large store an operator can build it first with ``CREATE INDEX CONCURRENTLY feature_change_outbox_event_id
ON feature_change_outbox (event_id)``: the upgrade then keeps it (``IF NOT EXISTS``).

Revision 0007 follows 0005 on the branch that wrote it; 0006 is another branch's, and the merge re-chains
``down_revision`` after it.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS feature_change_outbox_event_id ON feature_change_outbox (event_id)")
    op.execute(
        "CREATE OR REPLACE FUNCTION odc_keep_dedup_memory() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO processed_event (event_id) SELECT DISTINCT event_id FROM deleted_changes "
        "ON CONFLICT DO NOTHING; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER feature_change_outbox_keep_dedup_memory AFTER DELETE ON feature_change_outbox "
        "REFERENCING OLD TABLE AS deleted_changes FOR EACH STATEMENT EXECUTE FUNCTION odc_keep_dedup_memory()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS feature_change_outbox_keep_dedup_memory ON feature_change_outbox")
    op.execute("DROP FUNCTION IF EXISTS odc_keep_dedup_memory()")
    op.execute("DROP INDEX IF EXISTS feature_change_outbox_event_id")
