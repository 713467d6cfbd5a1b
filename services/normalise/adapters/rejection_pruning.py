"""Prune rejections past their retention, in batches (each its own short transaction, so a large backlog
never holds one long lock). Only rejections already relayed to ``odc.rejected`` are pruned: the topic keeps
them after that for its own retention. Relayed = at or before the relay's cursor (outboxes.REJECTIONS_CURSOR's
``sent_condition``, written out here)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_PRUNE_BATCH = text("""
DELETE FROM rejection WHERE rejection_id IN (
  SELECT rejection_id FROM rejection
  WHERE rejected_at < :cutoff
    AND (rejection.txid, rejection.seq) <= (SELECT c.txid, c.last_id FROM outbox_cursor c WHERE c.outbox = 'rejection')
  ORDER BY rejected_at
  LIMIT :batch_rows
  FOR UPDATE SKIP LOCKED)
""")


async def prune_rejections(engine: AsyncEngine, cutoff: datetime, batch_rows: int = 5000) -> int:
    """Delete every relayed rejection recorded before ``cutoff``; returns how many were deleted."""
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = (await conn.execute(_PRUNE_BATCH, {"cutoff": cutoff, "batch_rows": batch_rows})).rowcount
        total += deleted
        if deleted < batch_rows:
            return total
