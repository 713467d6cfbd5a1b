"""Push receipts in PostgreSQL (``push_receipt``): the ReceiptStore port."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.service_layer.ports import StoredReceipt


class PostgresReceiptStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def save(self, receipt_id: str, commune: str | None, dataset: str, body: dict[str, Any]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO push_receipt (receipt_id, commune, dataset, body) "
                    "VALUES (:r, :c, :d, CAST(:b AS jsonb)) ON CONFLICT DO NOTHING"
                ),
                {"r": receipt_id, "c": commune, "d": dataset, "b": json.dumps(body, ensure_ascii=False)},
            )

    async def get(self, receipt_id: str) -> StoredReceipt | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT commune, dataset, body FROM push_receipt WHERE receipt_id = :r"), {"r": receipt_id}
                )
            ).first()
        return None if row is None else StoredReceipt(receipt_id, row[0], row[1], dict(row[2]))
