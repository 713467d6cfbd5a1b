"""Prune the normaliser's outbox tables past their retention, in batches (each its own short transaction, so a
large backlog never holds one long lock). Only rows already relayed are pruned: at or before the relay's cursor
(outboxes' ``sent_condition``, written out here); the topics keep them after that for their own retention.

- ``rejection``: a rejection's per-field errors and the bounded original (``odc report`` reads them).
- ``feature_change_outbox``: a change row is needed until it is relayed, then only as the dedup record of its
  event id (normalise 0007). Its delete trigger moves the ids of the deleted rows to ``processed_event`` in the
  deleting transaction, so a redelivered event is still a duplicate after its change row is gone; what goes is
  the row's before/after geometry and attributes, most of the normaliser's disk (issue #16, fifth session)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

_PRUNE_REJECTIONS = text("""
DELETE FROM rejection WHERE rejection_id IN (
  SELECT rejection_id FROM rejection
  WHERE rejected_at < :cutoff
    AND (rejection.txid, rejection.seq) <= (SELECT c.txid, c.last_id FROM outbox_cursor c WHERE c.outbox = 'rejection')
  ORDER BY rejected_at
  LIMIT :batch_rows
  FOR UPDATE SKIP LOCKED)
""")

# The oldest rows first, a batch of the primary key's head at a time: the head is read, not the table (an index on
# applied_at would cost a write per change). Pruning stops at a head with nothing to prune (rows within the
# retention or not yet relayed); change ids grow with time, so what is left behind is pruned at a later round.
_PRUNE_FEATURE_CHANGES = text("""
DELETE FROM feature_change_outbox
WHERE change_id IN (
    SELECT change_id FROM feature_change_outbox ORDER BY change_id LIMIT :batch_rows FOR UPDATE SKIP LOCKED)
  AND applied_at < :cutoff
  AND (feature_change_outbox.txid, feature_change_outbox.change_id) <= (SELECT c.txid, c.last_id FROM outbox_cursor c WHERE c.outbox = 'feature_change_outbox')
""")


async def _prune(engine: AsyncEngine, statement: TextClause, cutoff: datetime, batch_rows: int) -> int:
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = (await conn.execute(statement, {"cutoff": cutoff, "batch_rows": batch_rows})).rowcount
        total += deleted
        if deleted < batch_rows:
            return total


async def prune_rejections(engine: AsyncEngine, cutoff: datetime, batch_rows: int = 5000) -> int:
    """Delete every relayed rejection recorded before ``cutoff``; returns how many were deleted."""
    return await _prune(engine, _PRUNE_REJECTIONS, cutoff, batch_rows)


async def prune_feature_changes(engine: AsyncEngine, cutoff: datetime, batch_rows: int = 5000) -> int:
    """Delete every relayed change row applied before ``cutoff`` (their event ids stay known as processed);
    returns how many were deleted."""
    return await _prune(engine, _PRUNE_FEATURE_CHANGES, cutoff, batch_rows)
