"""The messages that cross service boundaries, as plain frozen dataclasses.

Wire field names live in ``codecs.py`` only; everything else works with these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

AttributeValue = None | bool | int | float | str


class Operation(str, Enum):
    UPSERT = "UPSERT"
    DELETE = "DELETE"


class GeometryEncoding(str, Enum):
    GEOJSON = "GEOJSON"
    WKT = "WKT"
    WKB = "WKB"


class ChangeKind(str, Enum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"


_CHANGE_KINDS = {k.value: k for k in ChangeKind}


def change_kind(value: str) -> ChangeKind:
    """``ChangeKind(value)`` by a dict lookup (the enum call costs ~1 µs, paid per change by the stores that read
    kinds back); a value that is no kind fails as ``ChangeKind(value)`` does."""
    return _CHANGE_KINDS.get(value) or ChangeKind(value)


@dataclass(frozen=True)
class RawGeometry:
    encoding: GeometryEncoding
    value: bytes
    crs: str | None = None


@dataclass(frozen=True)
class ChangeEvent:
    event_id: str
    dataset: str
    commune: str
    feature_id: str
    operation: Operation
    occurred_at: datetime
    sequence: int
    source: str
    geometry: RawGeometry | None = None
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    source_row: int | None = None  # CSV line (header = 1) or 1-based feature/record index in the sent file


@dataclass(frozen=True)
class ChangeEvents:
    """What one message of the input topic carries: one ChangeEvent (the single form) or, in the bulk form
    (change_event_batch), many events of ONE dataset and ONE commune. ``dataset`` and ``commune`` are the
    message's own (for the single form, its event's); ``bulk`` says which form it was."""

    dataset: str
    commune: str
    events: tuple[ChangeEvent, ...]
    bulk: bool


@dataclass(frozen=True)
class FieldError:
    rule: str
    message_en: str
    message_fr: str
    field: str | None = None
    value: str | None = None
    column: str | None = None  # the column (or member) of the sent file that held the value, as it was named


@dataclass(frozen=True)
class SourcePosition:
    topic: str
    partition: int
    offset: int

    def as_id(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class RefusedBatch:
    """A record batch refused before any of its records was read: it expands past ``limit`` bytes once
    decompressed (services/infrastructure/kafka_decompression.py)."""

    codec: str
    limit: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True)
class Rejection:
    rejection_id: str
    rejected_at: datetime
    stage: str
    reason: str
    message: str
    source: SourcePosition
    original: bytes
    event_id: str | None = None
    dataset: str | None = None
    commune: str | None = None
    feature_id: str | None = None
    errors: tuple[FieldError, ...] = ()
    # ``original`` may be a prefix of what was received (services/contract/size_limits.py): these describe the
    # whole. None when ``original`` is the whole message (as every rejection written before schema v2).
    original_sha256: str | None = None
    original_size: int | None = None
    source_row: int | None = None  # the event's source_row: where the record is in the sent file


@dataclass(frozen=True)
class FeatureState:
    geometry_geojson: str | None
    attributes_json: str
    content_hash: str


@dataclass(frozen=True)
class FeatureChange:
    change_id: int
    event_id: str
    dataset: str
    commune: str
    feature_id: str
    kind: ChangeKind
    sequence: int
    occurred_at: datetime
    applied_at: datetime
    before: FeatureState | None
    after: FeatureState | None


@dataclass(frozen=True)
class Link:
    rel: str
    href: str
    type: str


@dataclass(frozen=True)
class ChangedFeature:
    """One feature of a version's diff; ``kind`` is ``added``, ``updated`` or ``removed``."""

    commune: str
    feature_id: str
    kind: str
    before: FeatureState | None
    after: FeatureState | None


@dataclass(frozen=True)
class DatasetVersionPublished:
    dataset: str
    version: int
    published_at: datetime
    added: int
    updated: int
    removed: int
    feature_count: int
    content_hash: str
    first_change_id: int
    last_change_id: int
    links: tuple[Link, ...] = ()
    changes_included: bool = False  # True when ``changes`` is the whole diff (small enough to inline)
    changes: tuple[ChangedFeature, ...] = ()
    incomplete: int = 0  # features of this version published incomplete (docs/validation.md)
