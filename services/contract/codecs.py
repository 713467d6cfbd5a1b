"""Wire dicts <-> message types, for every message in ``schemas/avro``. The only module that knows
Avro field names. ``encode_*`` returns single-object-encoded bytes; ``decode_*`` raises
``UndecodableMessage`` (with a reason code) for anything it cannot turn into a message."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from services.contract.avro_catalogue import SchemaCatalogue, UndecodableMessage
from services.contract.messages import (
    ChangedFeature,
    ChangeEvent,
    ChangeKind,
    DatasetVersionPublished,
    FeatureChange,
    FeatureState,
    FieldError,
    GeometryEncoding,
    Link,
    Operation,
    RawGeometry,
    Rejection,
    SourcePosition,
)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Codecs:
    """Encoders/decoders bound to one schema catalogue (build once per process)."""

    def __init__(self, catalogue: SchemaCatalogue | None = None) -> None:
        self.catalogue = catalogue or SchemaCatalogue()

    # -- change events ---------------------------------------------------------------------------
    def encode_change_event(self, ev: ChangeEvent) -> bytes:
        geometry = None
        if ev.geometry is not None:
            geometry = {"encoding": ev.geometry.encoding.value, "value": ev.geometry.value, "crs": ev.geometry.crs}
        return self.catalogue.encode(
            "change_event",
            {
                "event_id": ev.event_id,
                "dataset": ev.dataset,
                "commune": ev.commune,
                "feature_id": ev.feature_id,
                "operation": ev.operation.value,
                "occurred_at": _utc(ev.occurred_at),
                "sequence": ev.sequence,
                "source": ev.source,
                "geometry": geometry,
                "attributes": dict(ev.attributes),
                "source_row": ev.source_row,
            },
        )

    def decode_change_event(self, data: bytes) -> ChangeEvent:
        d = self.catalogue.decode(data, "change_event")
        g = d["geometry"]
        geometry = None
        if g is not None:
            geometry = RawGeometry(GeometryEncoding(g["encoding"]), bytes(g["value"]), g["crs"])
        return ChangeEvent(
            event_id=str(d["event_id"]),
            dataset=d["dataset"],
            commune=d["commune"],
            feature_id=d["feature_id"],
            operation=Operation(d["operation"]),
            occurred_at=_utc(d["occurred_at"]),
            sequence=d["sequence"],
            source=d["source"],
            geometry=geometry,
            attributes=dict(d["attributes"]),
            source_row=d.get("source_row"),
        )

    # -- rejections ------------------------------------------------------------------------------
    def encode_rejection(self, r: Rejection) -> bytes:
        return self.catalogue.encode(
            "rejection",
            {
                "rejection_id": r.rejection_id,
                "rejected_at": _utc(r.rejected_at),
                "stage": r.stage,
                "reason": r.reason,
                "message": r.message,
                "event_id": r.event_id,
                "dataset": r.dataset,
                "commune": r.commune,
                "feature_id": r.feature_id,
                "errors": [
                    {
                        "field": e.field,
                        "rule": e.rule,
                        "value": e.value,
                        "message_en": e.message_en,
                        "message_fr": e.message_fr,
                    }
                    for e in r.errors
                ],
                "source_topic": r.source.topic,
                "source_partition": r.source.partition,
                "source_offset": r.source.offset,
                "original": r.original,
                "original_sha256": r.original_sha256,
                "original_size": r.original_size,
            },
        )

    def decode_rejection(self, data: bytes) -> Rejection:
        d = self.catalogue.decode(data, "rejection")
        return Rejection(
            rejection_id=d["rejection_id"],
            rejected_at=_utc(d["rejected_at"]),
            stage=d["stage"],
            reason=d["reason"],
            message=d["message"],
            source=SourcePosition(d["source_topic"], d["source_partition"], d["source_offset"]),
            original=bytes(d["original"]),
            original_sha256=d["original_sha256"],
            original_size=d["original_size"],
            event_id=d["event_id"],
            dataset=d["dataset"],
            commune=d["commune"],
            feature_id=d["feature_id"],
            errors=tuple(
                FieldError(
                    rule=e["rule"],
                    message_en=e["message_en"],
                    message_fr=e["message_fr"],
                    field=e["field"],
                    value=e["value"],
                )
                for e in d["errors"]
            ),
        )

    # -- canonical feature changes ---------------------------------------------------------------
    @staticmethod
    def _state_to_wire(s: FeatureState | None) -> dict[str, Any] | None:
        if s is None:
            return None
        return {"geometry": s.geometry_geojson, "attributes": s.attributes_json, "content_hash": s.content_hash}

    @staticmethod
    def _state_from_wire(d: dict[str, Any] | None) -> FeatureState | None:
        if d is None:
            return None
        return FeatureState(d["geometry"], d["attributes"], d["content_hash"])

    def _feature_change_to_wire(self, c: FeatureChange) -> dict[str, Any]:
        return {
            "change_id": c.change_id,
            "event_id": c.event_id,
            "dataset": c.dataset,
            "commune": c.commune,
            "feature_id": c.feature_id,
            "kind": c.kind.value,
            "sequence": c.sequence,
            "occurred_at": _utc(c.occurred_at),
            "applied_at": _utc(c.applied_at),
            "before": self._state_to_wire(c.before),
            "after": self._state_to_wire(c.after),
        }

    def encode_feature_change(self, c: FeatureChange) -> bytes:
        return self.catalogue.encode("feature_change", self._feature_change_to_wire(c))

    def encode_feature_change_batch(self, dataset: str, changes: Sequence[FeatureChange]) -> bytes:
        """One message for many changes of one dataset (feature_change_batch), in the order given."""
        return self.catalogue.encode(
            "feature_change_batch",
            {"dataset": dataset, "changes": [self._feature_change_to_wire(c) for c in changes]},
        )

    def decode_feature_change(self, data: bytes) -> FeatureChange:
        return self._feature_change_from_wire(self.catalogue.decode(data, "feature_change"))

    def decode_feature_changes(self, data: bytes) -> list[FeatureChange]:
        """The changes of a message of odc.feature-changes in either form: one FeatureChange (written before the
        batch form, still on the topic at an upgrade) or a FeatureChangeBatch."""
        if self.catalogue.writer_name(data) == "feature_change":
            return [self.decode_feature_change(data)]
        d = self.catalogue.decode(data, "feature_change_batch")
        return [self._feature_change_from_wire(c) for c in d["changes"]]

    @classmethod
    def _feature_change_from_wire(cls, d: dict[str, Any]) -> FeatureChange:
        return FeatureChange(
            change_id=d["change_id"],
            event_id=d["event_id"],
            dataset=d["dataset"],
            commune=d["commune"],
            feature_id=d["feature_id"],
            kind=ChangeKind(d["kind"]),
            sequence=d["sequence"],
            occurred_at=_utc(d["occurred_at"]),
            applied_at=_utc(d["applied_at"]),
            before=cls._state_from_wire(d["before"]),
            after=cls._state_from_wire(d["after"]),
        )

    # -- dataset versions ------------------------------------------------------------------------
    def encode_dataset_version(self, v: DatasetVersionPublished) -> bytes:
        return self.catalogue.encode(
            "dataset_version",
            {
                "dataset": v.dataset,
                "version": v.version,
                "published_at": _utc(v.published_at),
                "added": v.added,
                "updated": v.updated,
                "removed": v.removed,
                "feature_count": v.feature_count,
                "content_hash": v.content_hash,
                "first_change_id": v.first_change_id,
                "last_change_id": v.last_change_id,
                "links": [{"rel": lk.rel, "href": lk.href, "type": lk.type} for lk in v.links],
                "changes_included": v.changes_included,
                "changes": [
                    {
                        "commune": c.commune,
                        "feature_id": c.feature_id,
                        "kind": c.kind,
                        "before": self._state_to_wire(c.before),
                        "after": self._state_to_wire(c.after),
                    }
                    for c in v.changes
                ],
                "incomplete": v.incomplete,
            },
        )

    def decode_dataset_version(self, data: bytes) -> DatasetVersionPublished:
        d = self.catalogue.decode(data, "dataset_version")
        return DatasetVersionPublished(
            dataset=d["dataset"],
            version=d["version"],
            published_at=_utc(d["published_at"]),
            added=d["added"],
            updated=d["updated"],
            removed=d["removed"],
            feature_count=d["feature_count"],
            content_hash=d["content_hash"],
            first_change_id=d["first_change_id"],
            last_change_id=d["last_change_id"],
            links=tuple(Link(lk["rel"], lk["href"], lk["type"]) for lk in d["links"]),
            changes_included=d["changes_included"],
            changes=tuple(
                ChangedFeature(
                    c["commune"],
                    c["feature_id"],
                    c["kind"],
                    self._state_from_wire(c["before"]),
                    self._state_from_wire(c["after"]),
                )
                for c in d["changes"]
            ),
            incomplete=d.get("incomplete", 0),
        )


__all__ = ["Codecs", "UndecodableMessage"]
