"""Mirror a published snapshot: compare it with the last one applied and say what changed. Pure.

A snapshot's records are indexed by (commune, feature id) with a fingerprint of their *business* content:
the values of the dataset's schema fields, less those the definition lists as volatile, and the geometry.
Anything else the source sends (live counts, a ``last_update`` timestamp, extra columns) cannot make a
record "changed". New keys are upserts, changed fingerprints are upserts, keys that disappeared are deletes.

The guard holds a run for confirmation instead of applying it when the snapshot is empty although the
last one was not (a feed outage, not "everything was demolished"), or when it would delete more than a
given share of the features.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from services.contract.datasets.catalogue import DatasetDefinition
from services.contract.messages import ChangeEvent, Operation
from services.ingest.domain.change_events import upsert_events
from services.ingest.domain.source_records import SourceRecord

EMPTY_SNAPSHOT = "empty_snapshot"
TOO_MANY_DELETES = "too_many_deletes"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


@dataclass(frozen=True, order=True)
class FeatureRef:
    commune: str
    feature_id: str


@dataclass(frozen=True)
class SnapshotEntry:
    ref: FeatureRef
    fingerprint: str
    record: SourceRecord


@dataclass(frozen=True)
class SnapshotIndex:
    entries: dict[FeatureRef, SnapshotEntry]
    records: int  # records read from the snapshot
    unidentified: int  # no feature id or no commune: cannot be mirrored (reported)
    duplicates: int  # same key twice in one snapshot: the last one is kept
    other_commune: int  # records of another commune than the connector's (skipped)


@dataclass(frozen=True)
class SnapshotDiff:
    added: tuple[FeatureRef, ...]
    changed: tuple[FeatureRef, ...]
    removed: tuple[FeatureRef, ...]
    unchanged: int

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


def _fold(name: str) -> str:
    s = unicodedata.normalize("NFKD", name)
    return _NOT_ALNUM.sub("", "".join(ch for ch in s if not unicodedata.combining(ch)).lower())


def business_fields(definition: DatasetDefinition) -> tuple[str, ...]:
    """The schema's fields less the volatile ones (``volatile_fields`` in the definition, when it has any)."""
    volatile = set(definition.volatile_fields)
    return tuple(f for f in definition.field_names if f not in volatile)


def fingerprint(record: SourceRecord, fields: Iterable[str]) -> str:
    """Hash of the record's business values (matched by name, then by folded name) and geometry."""
    wanted = {_fold(f): f for f in fields}
    exact = set(wanted.values())
    values: dict[str, object] = {}
    for key, value in record.attributes.items():
        if key in exact:
            values[key] = value
    for key, value in record.attributes.items():
        target = wanted.get(_fold(key))
        if key not in exact and target is not None and target not in values:
            values[target] = value
    h = hashlib.sha256(json.dumps(values, sort_keys=True, ensure_ascii=False, default=str).encode())
    h.update(b"\x00")
    if record.geometry is not None:
        h.update(record.geometry.encoding.value.encode() + b"\x00" + (record.geometry.crs or "").encode() + b"\x00")
        h.update(record.geometry.value)
    return h.hexdigest()


def _identified(records: list[SourceRecord], definition: DatasetDefinition) -> list[ChangeEvent]:
    """Each record's feature id and commune, read exactly as the upsert events will (change_events.py)."""
    return list(
        upsert_events(records, definition, commune=None, source="", sequence=0, occurred_at=_EPOCH, new_id=lambda: "")
    )


def index_snapshot(
    records: Iterable[SourceRecord], definition: DatasetDefinition, *, commune: str | None
) -> SnapshotIndex:
    """``commune``: the connector's commune (its records only), or None for a Métropole connector that
    mirrors every commune of the file (each record's commune from the dataset's commune field)."""
    fields = business_fields(definition)
    entries: dict[FeatureRef, SnapshotEntry] = {}
    records = list(records)
    unidentified = duplicates = other = 0
    for record, ev in zip(records, _identified(records, definition), strict=True):
        record_commune = ev.commune
        if commune is not None:
            if record_commune and record_commune != commune:
                other += 1
                continue
            record_commune = commune
        if not ev.feature_id or not record_commune:
            unidentified += 1
            continue
        ref = FeatureRef(record_commune, ev.feature_id)
        if ref in entries:
            duplicates += 1
        entries[ref] = SnapshotEntry(ref, fingerprint(record, fields), record)
    return SnapshotIndex(entries, len(records), unidentified, duplicates, other)


def diff(previous: Mapping[FeatureRef, str], current: SnapshotIndex) -> SnapshotDiff:
    added, changed = [], []
    unchanged = 0
    for ref, entry in current.entries.items():
        before = previous.get(ref)
        if before is None:
            added.append(ref)
        elif before != entry.fingerprint:
            changed.append(ref)
        else:
            unchanged += 1
    removed = [ref for ref in previous if ref not in current.entries]
    return SnapshotDiff(tuple(sorted(added)), tuple(sorted(changed)), tuple(sorted(removed)), unchanged)


def hold_reason(previous_count: int, current: SnapshotIndex, d: SnapshotDiff, max_delete_share: float) -> str | None:
    """Why this run must wait for confirmation, or None to apply it."""
    if previous_count > 0 and not current.entries:
        return EMPTY_SNAPSHOT
    if previous_count > 0 and len(d.removed) / previous_count > max_delete_share:
        return TOO_MANY_DELETES
    return None


def mirror_events(
    index: SnapshotIndex,
    d: SnapshotDiff,
    definition: DatasetDefinition,
    *,
    source: str,
    sequence: int,
    occurred_at: datetime,
    new_id: Callable[[], str],
) -> Iterator[ChangeEvent]:
    """Upserts for added and changed features, then deletes for removed ones."""
    by_commune: dict[str, list[FeatureRef]] = {}
    for ref in (*d.added, *d.changed):
        by_commune.setdefault(ref.commune, []).append(ref)
    for group_commune, refs in by_commune.items():
        produced = upsert_events(
            [index.entries[ref].record for ref in refs],
            definition,
            commune=group_commune,
            source=source,
            sequence=sequence,
            occurred_at=occurred_at,
            new_id=new_id,
        )
        for ref, ev in zip(refs, produced, strict=True):
            yield replace(ev, feature_id=ref.feature_id)
    for ref in d.removed:
        yield ChangeEvent(
            event_id=new_id(),
            dataset=definition.id,
            commune=ref.commune,
            feature_id=ref.feature_id,
            operation=Operation.DELETE,
            occurred_at=occurred_at,
            sequence=sequence,
            source=source,
        )
