"""What the normaliser's two outboxes send: canonical feature changes and rejections."""

from __future__ import annotations

import json
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Row

from services.contract.codecs import Codecs
from services.contract.messages import FeatureChange, FeatureState, FieldError, Rejection, SourcePosition, change_kind
from services.infrastructure.outbox_relay import OutboxSpec, OutgoingMessage, TxidCursor

FEATURE_CHANGES_LOCK = 7431002
REJECTIONS_LOCK = 7431003

# Where each relay is (normalise migration 0006): one cursor row per outbox table, moved once per relayed batch,
# instead of an UPDATE of every row sent.
FEATURE_CHANGES_CURSOR = TxidCursor(table="feature_change_outbox", id_column="change_id", cursor_table="outbox_cursor")
REJECTIONS_CURSOR = TxidCursor(table="rejection", id_column="seq", cursor_table="outbox_cursor")


def _state(geometry: str | None, attributes: str | None, chash: str | None) -> FeatureState | None:
    if attributes is None or chash is None:
        return None
    return FeatureState(geometry, attributes, chash)


# the columns of a feature_change_outbox row a FeatureChange is made of, in the order _changes unpacks them
_CHANGE_COLUMNS = (
    "change_id", "event_id", "dataset", "commune", "feature_id", "kind", "sequence", "occurred_at", "applied_at",
    "before_geometry", "before_attributes", "before_hash", "after_geometry", "after_attributes", "after_hash",
)  # fmt: skip


def _changes(rows: Sequence[Row[Any]]) -> list[FeatureChange]:
    """The rows' changes. Their columns are read by position, found once from the first row's field names: by
    name, SQLAlchemy's ``Row`` costs ~4 µs a row for these 15 (benchmarked in docs/performance.md)."""
    if not rows:
        return []
    fields = rows[0]._fields
    columns = itemgetter(*(fields.index(c) for c in _CHANGE_COLUMNS))
    out: list[FeatureChange] = []
    for r in rows:
        cid, eid, dataset, commune, fid, kind, seq, occurred, applied, bg, ba, bh, ag, aa, ah = columns(r)
        out.append(
            FeatureChange(
                change_id=cid,
                event_id=eid,
                dataset=dataset,
                commune=commune,
                feature_id=fid,
                kind=change_kind(kind),
                sequence=seq,
                occurred_at=occurred,
                applied_at=applied,
                before=_state(bg, ba, bh),
                after=_state(ag, aa, ah),
            )
        )
    return out


def feature_changes_outbox(codecs: Codecs, topic: str) -> OutboxSpec:
    # Keyed by dataset: one partition holds a dataset's changes in order, which versioning needs.
    def to_message(r: Row[Any]) -> OutgoingMessage:
        return OutgoingMessage(r.dataset.encode(), codecs.encode_feature_change(_changes([r])[0]))

    # Sent grouped: one FeatureChangeBatch per dataset and relayed batch (its rows in change_id order, split
    # under the size limit), so the relay and the publisher encode and decode once per batch (issue #16.3).
    def to_group_message(rows: Sequence[Row[Any]]) -> OutgoingMessage:
        dataset = rows[0].dataset
        return OutgoingMessage(dataset.encode(), codecs.encode_feature_change_batch(dataset, _changes(rows)))

    return OutboxSpec(
        name="feature_changes",
        lock_id=FEATURE_CHANGES_LOCK,
        topic=topic,
        progress=FEATURE_CHANGES_CURSOR,
        to_message=to_message,
        notify_channel="feature_change_outbox",  # migration 0005
        group_key=lambda r: r.dataset,
        to_group_message=to_group_message,
    )


def rejections_outbox(codecs: Codecs, topic: str) -> OutboxSpec:
    def to_message(r: Row[Any]) -> OutgoingMessage:
        errors = r.errors if isinstance(r.errors, list) else json.loads(r.errors)
        rej = Rejection(
            rejection_id=r.rejection_id,
            rejected_at=r.rejected_at,
            stage=r.stage,
            reason=r.reason,
            message=r.message,
            source=SourcePosition(r.source_topic, r.source_partition, r.source_offset),
            original=bytes(r.original),
            original_sha256=r.original_sha256,
            original_size=r.original_size,
            event_id=r.event_id,
            dataset=r.dataset,
            commune=r.commune,
            feature_id=r.feature_id,
            errors=tuple(
                FieldError(
                    rule=e["rule"],
                    message_en=e["message_en"],
                    message_fr=e["message_fr"],
                    field=e.get("field"),
                    value=e.get("value"),
                )
                for e in errors
            ),
        )
        return OutgoingMessage((r.commune or "").encode() or None, codecs.encode_rejection(rej))

    return OutboxSpec(
        name="rejections",
        lock_id=REJECTIONS_LOCK,
        topic=topic,
        progress=REJECTIONS_CURSOR,
        to_message=to_message,
        notify_channel="rejection",  # migration 0005
    )
