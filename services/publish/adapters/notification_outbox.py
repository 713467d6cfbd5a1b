"""The publisher's outbox: version notifications as CloudEvents (binary mode) on Kafka."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from services.infrastructure.outbox_relay import MarkedRows, OutboxSpec, OutgoingMessage

NOTIFICATIONS_LOCK = 7431004


def notifications_outbox(topic: str) -> OutboxSpec:
    def to_message(r: Row[Any]) -> OutgoingMessage:
        headers = [(k, v.encode()) for k, v in r.headers]
        return OutgoingMessage(r.dataset.encode(), bytes(r.payload), headers)

    return OutboxSpec(
        name="notifications",
        lock_id=NOTIFICATIONS_LOCK,
        topic=topic,
        # one row per version, not per change: marked as sent (a cursor would save one row per version)
        progress=MarkedRows(
            select_sql="SELECT id, dataset, headers, payload FROM notification_outbox WHERE sent_at IS NULL "
            "ORDER BY id LIMIT :limit",
            mark_sql="UPDATE notification_outbox SET sent_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))",
            id_of=lambda r: r.id,
        ),
        to_message=to_message,
        notify_channel="notification_outbox",  # migration 0005
    )
