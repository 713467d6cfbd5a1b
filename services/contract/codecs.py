"""Wire dicts <-> message types, for every message in ``schemas/avro``. The only module that knows
Avro field names. ``encode_*`` returns single-object-encoded bytes; ``decode_*`` raises
``UndecodableMessage`` (with a reason code) for anything it cannot turn into a message."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from services.contract.avro_catalogue import HEADER_LEN, MAGIC, SchemaCatalogue, UndecodableMessage
from services.contract.messages import (
    ChangedFeature,
    ChangeEvent,
    ChangeEvents,
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


def _avro_long(n: int) -> bytes:
    """Avro's zig-zag variable-length encoding of a long."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- the logical types and enums of a record read by SchemaCatalogue.decode_plain, converted as fastavro does ---
# (fastavro 1.x, _logical_readers: read_uuid is uuid.UUID(text); read_timestamp_millis is epoch + timedelta), so a
# message reads to exactly what the reference path (catalogue.decode, then *_from_wire) gives; any failure here
# sends the message to the reference path, which words it as before (tests/unit/test_avro_decode_equivalence.py).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
_OPERATIONS = {m.value: m for m in Operation}
_ENCODINGS = {m.value: m for m in GeometryEncoding}
_KINDS = {m.value: m for m in ChangeKind}
# a failure of the conversions above (a uuid or an instant that does not convert, an enum symbol we lack)
_CONVERSION_FAILED = (ValueError, OverflowError, KeyError)


def _uuid_text(text: str) -> str:
    """``str(uuid.UUID(text))``: the text itself when it is already in that form (the common case)."""
    return text if _CANONICAL_UUID(text) else str(uuid.UUID(text))


def _instant(millis: int, seen: dict[int, datetime]) -> datetime:
    """A timestamp-millis as a UTC datetime; ``seen`` holds those of the message already built (a batch's changes
    share their applied_at, and often their occurred_at)."""
    at = seen.get(millis)
    if at is None:
        at = seen[millis] = _EPOCH + timedelta(microseconds=millis * 1000)
    return at


class Codecs:
    """Encoders/decoders bound to one schema catalogue (build once per process)."""

    def __init__(self, catalogue: SchemaCatalogue | None = None) -> None:
        self.catalogue = catalogue or SchemaCatalogue()

    # -- change events ---------------------------------------------------------------------------
    @staticmethod
    def _change_event_to_wire(ev: ChangeEvent) -> dict[str, Any]:
        geometry = None
        if ev.geometry is not None:
            geometry = {"encoding": ev.geometry.encoding.value, "value": ev.geometry.value, "crs": ev.geometry.crs}
        return {
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
        }

    @staticmethod
    def _change_event_from_wire(d: dict[str, Any]) -> ChangeEvent:
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

    @staticmethod
    def _change_event_from_plain(d: dict[str, Any], seen: dict[int, datetime]) -> ChangeEvent:
        """``_change_event_from_wire`` of a record read by ``decode_plain`` (the same event)."""
        g = d["geometry"]
        return ChangeEvent(
            _uuid_text(d["event_id"]),
            d["dataset"],
            d["commune"],
            d["feature_id"],
            _OPERATIONS[d["operation"]],
            _instant(d["occurred_at"], seen),
            d["sequence"],
            d["source"],
            None if g is None else RawGeometry(_ENCODINGS[g["encoding"]], bytes(g["value"]), g["crs"]),
            d["attributes"],  # a dict of fastavro's own, not shared
            d.get("source_row"),
        )

    def encode_change_event(self, ev: ChangeEvent) -> bytes:
        return self.catalogue.encode("change_event", self._change_event_to_wire(ev))

    def decode_change_event(self, data: bytes) -> ChangeEvent:
        try:
            return self._change_event_from_plain(self.catalogue.decode_plain(data, "change_event"), {})
        except _CONVERSION_FAILED:  # UndecodableMessage included: the reference path raises it as worded before
            return self.decode_change_event_reference(data)

    def decode_change_event_reference(self, data: bytes) -> ChangeEvent:
        """The way of decoding before issue #16's fourth session (fastavro's logical types, enum calls); the fast
        path gives exactly its results and falls back to it to word a failure. Kept for the tests and
        benchmarks/decode_cpu.py."""
        return self._change_event_from_wire(self.catalogue.decode(data, "change_event"))

    def encode_change_event_batch(self, dataset: str, commune: str, events: Sequence[ChangeEvent]) -> bytes:
        """The bulk form of odc.change-events (change_event_batch): many events of one dataset and commune."""
        return self.catalogue.encode(
            "change_event_batch",
            {"dataset": dataset, "commune": commune, "events": [self._change_event_to_wire(e) for e in events]},
        )

    def change_event_batch_of_encoded(self, dataset: str, commune: str, singles: Sequence[bytes]) -> bytes:
        """``encode_change_event_batch`` of events already encoded in the single form (by
        ``encode_change_event``), without encoding them again: the batch's items are the latest change_event
        record (a contract test holds them equal), so each item is a single message's Avro body as it is.
        Avro binary: the two strings, then one array block (count, items) and the 0 that ends the array."""
        latest = self.catalogue.latest("change_event").fingerprint
        for value in singles:
            if len(value) < HEADER_LEN or value[:2] != MAGIC or value[2:HEADER_LEN] != latest:
                raise ValueError("not a change event encoded with the latest change_event schema")
        out = bytearray(MAGIC)
        out += self.catalogue.latest("change_event_batch").fingerprint
        for text in (dataset, commune):
            raw = text.encode("utf-8")
            out += _avro_long(len(raw))
            out += raw
        if singles:
            out += _avro_long(len(singles))
            for value in singles:
                out += memoryview(value)[HEADER_LEN:]
        out += b"\x00"
        return bytes(out)

    @staticmethod
    def change_event_batch_size(dataset: str, commune: str, count: int, singles_bytes: int) -> int:
        """The size of ``change_event_batch_of_encoded`` for ``count`` single-form values of ``singles_bytes``
        bytes in all (each item is its value less the 10-byte single-object header)."""
        d, c = len(dataset.encode("utf-8")), len(commune.encode("utf-8"))
        size = HEADER_LEN + len(_avro_long(d)) + d + len(_avro_long(c)) + c + 1
        if count:
            size += len(_avro_long(count)) + singles_bytes - HEADER_LEN * count
        return size

    def decode_change_events(self, data: bytes) -> ChangeEvents:
        """The events of a message of odc.change-events in either form: one ChangeEvent (the single form, valid
        forever) or a ChangeEventBatch (the bulk form). Raises UndecodableMessage for anything else."""
        if self.catalogue.writer_name(data) != "change_event_batch":
            ev = self.decode_change_event(data)
            return ChangeEvents(ev.dataset, ev.commune, (ev,), bulk=False)
        try:
            d = self.catalogue.decode_plain(data, "change_event_batch")
            seen: dict[int, datetime] = {}
            from_plain = self._change_event_from_plain
            events = tuple([from_plain(e, seen) for e in d["events"]])
        except _CONVERSION_FAILED:  # UndecodableMessage included: the reference path raises it as worded before
            return self.decode_change_events_reference(data)
        return ChangeEvents(d["dataset"], d["commune"], events, bulk=True)

    def decode_change_events_reference(self, data: bytes) -> ChangeEvents:
        """``decode_change_events`` the way before issue #16's fourth session (see decode_change_event_reference)."""
        if self.catalogue.writer_name(data) == "change_event_batch":
            d = self.catalogue.decode(data, "change_event_batch")
            events = tuple(self._change_event_from_wire(e) for e in d["events"])
            return ChangeEvents(d["dataset"], d["commune"], events, bulk=True)
        ev = self.decode_change_event_reference(data)
        return ChangeEvents(ev.dataset, ev.commune, (ev,), bulk=False)

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
        try:
            return self._feature_changes_from_plain([self.catalogue.decode_plain(data, "feature_change")])[0]
        except _CONVERSION_FAILED:  # UndecodableMessage included: the reference path raises it as worded before
            return self.decode_feature_change_reference(data)

    def decode_feature_changes(self, data: bytes) -> list[FeatureChange]:
        """The changes of a message of odc.feature-changes in either form: one FeatureChange (written before the
        batch form, still on the topic at an upgrade) or a FeatureChangeBatch."""
        if self.catalogue.writer_name(data) == "feature_change":
            return [self.decode_feature_change(data)]
        try:
            return self._feature_changes_from_plain(
                self.catalogue.decode_plain(data, "feature_change_batch")["changes"]
            )
        except _CONVERSION_FAILED:  # UndecodableMessage included: the reference path raises it as worded before
            return self.decode_feature_changes_reference(data)

    @staticmethod
    def _feature_changes_from_plain(records: list[dict[str, Any]]) -> list[FeatureChange]:
        """``_feature_change_from_wire`` of each record read by ``decode_plain`` (the same changes)."""
        seen: dict[int, datetime] = {}
        kinds, instant = _KINDS, _instant
        return [
            FeatureChange(
                d["change_id"],
                d["event_id"],
                d["dataset"],
                d["commune"],
                d["feature_id"],
                kinds[d["kind"]],
                d["sequence"],
                instant(d["occurred_at"], seen),
                instant(d["applied_at"], seen),
                None if (b := d["before"]) is None else FeatureState(b["geometry"], b["attributes"], b["content_hash"]),
                None if (a := d["after"]) is None else FeatureState(a["geometry"], a["attributes"], a["content_hash"]),
            )
            for d in records
        ]

    def decode_feature_change_reference(self, data: bytes) -> FeatureChange:
        """The way of decoding before issue #16's fourth session (see decode_change_event_reference)."""
        return self._feature_change_from_wire(self.catalogue.decode(data, "feature_change"))

    def decode_feature_changes_reference(self, data: bytes) -> list[FeatureChange]:
        """``decode_feature_changes`` the way before issue #16's fourth session."""
        if self.catalogue.writer_name(data) == "feature_change":
            return [self.decode_feature_change_reference(data)]
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
