"""A commune's file layout, described once: which source column holds which canonical field, how its local
values translate into the schema's, where the position is (and in which CRS), which columns identify a
record and which one names its commune. Applying a profile to a source record is a pure function.

A profile is saved per (commune, dataset, source) and versioned (services/ingest/adapters/profile_store.py);
``odc profile suggest`` proposes one from a file (services/ingest/domain/profile_suggestion.py).

Source columns the profile does not map are kept with the record, as JSON text under the ``odc:extra``
attribute (the Avro contract's attribute map carries it unchanged; the normaliser ignores names that are
not schema fields), and listed in the suggestion report: nothing is dropped silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from services.contract.messages import AttributeValue, GeometryEncoding, RawGeometry
from services.ingest.domain.source_records import SourceRecord

EXTRA_ATTRIBUTE = "odc:extra"
PROFILE_FORMAT = "odc-source-profile/1"

# Where a record's position is. A plugin table of readers, keyed by kind (no if-chains).
FEATURE = "feature"  # the file's own geometry (GeoJSON feature)
XY = "xy"  # two columns: x/longitude/easting then y/latitude/northing
POINT_TEXT = "point_text"  # one text column "lat, lon" or "lon, lat" (order says which)
GEOJSON_CELL = "geojson_cell"  # a GeoJSON geometry written in a cell
WKT_CELL = "wkt_cell"  # WKT written in a cell
NO_GEOMETRY = "none"
LATLON, LONLAT = "latlon", "lonlat"


class ProfileError(ValueError):
    """A profile document that cannot be used (unknown kind, missing column list...)."""


@dataclass(frozen=True)
class GeometrySource:
    kind: str = FEATURE
    columns: tuple[str, ...] = ()
    crs: str | None = None  # EPSG:4326, EPSG:2154, EPSG:3946...; None: as the file declares (or sniffed downstream)
    order: str = LONLAT  # point_text (and xy when the columns are really lat then lon): the axis order as written


@dataclass(frozen=True)
class FieldMapping:
    column: str  # the source column
    field: str  # the canonical (schema) field
    values: tuple[tuple[str, AttributeValue], ...] = ()  # value map: source text (as written) -> schema value
    confidence: float = 1.0  # how sure the suggestion was (1.0 for a confirmed mapping)
    why: str = ""  # how it was found (exact name, alias, fuzzy name, values...)

    def translate(self, value: AttributeValue) -> AttributeValue:
        if not self.values or value is None:
            return value
        key = str(value).strip()
        for source, target in self.values:
            if source == key:
                return target
        folded = key.casefold()
        for source, target in self.values:
            if source.casefold() == folded:
                return target
        return value


@dataclass(frozen=True)
class SourceProfile:
    dataset: str
    fields: tuple[FieldMapping, ...] = ()
    geometry: GeometrySource = field(default_factory=GeometrySource)
    id_columns: tuple[str, ...] = ()  # joined with '-' into the identity field when the dataset has one
    commune_column: str | None = None
    note: str = ""

    @property
    def used_columns(self) -> frozenset[str]:
        return frozenset(
            [
                *(m.column for m in self.fields),
                *self.geometry.columns,
                *self.id_columns,
                *([self.commune_column] if self.commune_column else []),
            ]
        )


@dataclass(frozen=True)
class ProfiledRecord:
    record: SourceRecord  # canonical attribute names, the position as a raw geometry
    commune: str | None  # from the commune column, when the profile names one
    extra: tuple[str, ...]  # source columns kept under odc:extra


_NUMBER = re.compile(r"^\s*[-+]?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?\s*$")


def _number_text(value: AttributeValue) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if not _NUMBER.match(text):
        return None
    return text.replace(",", ".")


def split_pair(text: str) -> tuple[str, str] | None:
    """``45.7, 4.8`` / ``45.7;4.8`` / ``[4.8, 45.7]`` / ``45,7 4,8`` -> the two numbers as written."""
    t = text.strip().strip("[]()").strip()
    for sep in (";", ", ", ",", " "):
        parts = [p for p in (x.strip() for x in t.split(sep)) if p]
        if len(parts) == 2 and all(_number_text(p) is not None for p in parts):
            a, b = (_number_text(p) for p in parts)
            assert a is not None and b is not None
            return a, b
    return None


def _xy(profile: GeometrySource, record: SourceRecord) -> RawGeometry | None:
    if len(profile.columns) != 2:
        return None
    x, y = (_number_text(record.attributes.get(c)) for c in profile.columns)
    if x is None or y is None:
        return None
    if profile.order == LATLON:
        x, y = y, x
    return RawGeometry(GeometryEncoding.WKT, f"POINT ({x} {y})".encode(), profile.crs)


def _point_text(profile: GeometrySource, record: SourceRecord) -> RawGeometry | None:
    value = record.attributes.get(profile.columns[0]) if profile.columns else None
    pair = split_pair(str(value)) if isinstance(value, str) else None
    if pair is None:
        return None
    a, b = pair
    x, y = (b, a) if profile.order == LATLON else (a, b)
    return RawGeometry(GeometryEncoding.WKT, f"POINT ({x} {y})".encode(), profile.crs)


def _cell(encoding: GeometryEncoding) -> Any:
    def read(profile: GeometrySource, record: SourceRecord) -> RawGeometry | None:
        value = record.attributes.get(profile.columns[0]) if profile.columns else None
        if not isinstance(value, str) or not value.strip():
            return None
        return RawGeometry(encoding, value.strip().encode(), profile.crs)

    return read


def _feature(profile: GeometrySource, record: SourceRecord) -> RawGeometry | None:
    if record.geometry is None or profile.crs is None:
        return record.geometry
    return replace(record.geometry, crs=profile.crs)


GEOMETRY_READERS: dict[str, Any] = {
    FEATURE: _feature,
    XY: _xy,
    POINT_TEXT: _point_text,
    GEOJSON_CELL: _cell(GeometryEncoding.GEOJSON),
    WKT_CELL: _cell(GeometryEncoding.WKT),
    NO_GEOMETRY: lambda profile, record: None,
}


def _blank(value: AttributeValue) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def apply_profile(profile: SourceProfile, record: SourceRecord, *, identity_field: str | None = None) -> ProfiledRecord:
    """The record in canonical names: each mapped column's value (translated by its value map) under its
    field, the identity from the id columns, the position read as the profile says, and every other
    column under ``odc:extra``. ``identity_field``: the dataset's (single) identity field."""
    attrs: dict[str, AttributeValue] = {}
    for m in profile.fields:
        if m.column in record.attributes:
            value = m.translate(record.attributes[m.column])
            if m.field not in attrs or _blank(attrs[m.field]):
                attrs[m.field] = value
    if identity_field and profile.id_columns:
        parts = [str(record.attributes.get(c) or "").strip() for c in profile.id_columns]
        parts = [p for p in parts if p]
        if parts and (identity_field not in attrs or _blank(attrs[identity_field])):
            attrs[identity_field] = "-".join(parts)
    used = profile.used_columns
    extra = {k: v for k, v in record.attributes.items() if k not in used and k != EXTRA_ATTRIBUTE}
    if extra:
        attrs[EXTRA_ATTRIBUTE] = json.dumps(extra, ensure_ascii=False, default=str)
    reader = GEOMETRY_READERS[profile.geometry.kind]
    geometry = reader(profile.geometry, record)
    commune = record.commune
    if profile.commune_column:
        raw = record.attributes.get(profile.commune_column)
        commune = None if _blank(raw) else str(raw).strip()
    return ProfiledRecord(SourceRecord(record.line, attrs, geometry, commune), commune, tuple(sorted(extra)))


# ------------------------------------------------------------------------------------- JSON documents
def profile_to_dict(profile: SourceProfile) -> dict[str, Any]:
    return {
        "format": PROFILE_FORMAT,
        "dataset": profile.dataset,
        "fields": [
            {
                "column": m.column,
                "field": m.field,
                **({"values": {k: v for k, v in m.values}} if m.values else {}),
                "confidence": round(m.confidence, 2),
                **({"why": m.why} if m.why else {}),
            }
            for m in profile.fields
        ],
        "geometry": {
            "kind": profile.geometry.kind,
            "columns": list(profile.geometry.columns),
            "crs": profile.geometry.crs,
            "order": profile.geometry.order,
        },
        "id_columns": list(profile.id_columns),
        "commune_column": profile.commune_column,
        **({"note": profile.note} if profile.note else {}),
    }


def _scalar(value: Any) -> AttributeValue:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ProfileError(f"a value map's target must be text, a number, true/false or null, not {value!r}")


def profile_from_dict(doc: Mapping[str, Any]) -> SourceProfile:
    """Read a profile document (as written by ``profile_to_dict`` and edited by hand); ProfileError if unusable."""
    try:
        if not isinstance(doc, Mapping):
            raise ProfileError("a profile is a JSON object")
        fmt = doc.get("format", PROFILE_FORMAT)
        if fmt != PROFILE_FORMAT:
            raise ProfileError(f"unknown profile format {fmt!r} (expected {PROFILE_FORMAT})")
        fields = []
        for f in doc.get("fields", []):
            values = f.get("values") or {}
            if not isinstance(values, Mapping):
                raise ProfileError(
                    f"field {f.get('field')!r}: 'values' must be an object (source value -> schema value)"
                )
            fields.append(
                FieldMapping(
                    column=str(f["column"]),
                    field=str(f["field"]),
                    values=tuple((str(k), _scalar(v)) for k, v in values.items()),
                    confidence=float(f.get("confidence", 1.0)),
                    why=str(f.get("why", "")),
                )
            )
        g = doc.get("geometry") or {}
        geometry = GeometrySource(
            kind=str(g.get("kind", FEATURE)),
            columns=tuple(str(c) for c in g.get("columns", ())),
            crs=g.get("crs"),
            order=str(g.get("order", LONLAT)),
        )
        if geometry.kind not in GEOMETRY_READERS:
            raise ProfileError(f"unknown geometry kind {geometry.kind!r} (one of {', '.join(GEOMETRY_READERS)})")
        needed = {XY: 2, POINT_TEXT: 1, GEOJSON_CELL: 1, WKT_CELL: 1}.get(geometry.kind, 0)
        if len(geometry.columns) != needed:
            raise ProfileError(f"geometry kind {geometry.kind!r} needs {needed} column(s), got {len(geometry.columns)}")
        if geometry.order not in (LATLON, LONLAT):
            raise ProfileError(f"geometry order must be {LATLON!r} or {LONLAT!r}")
        commune_column = doc.get("commune_column")
        return SourceProfile(
            dataset=str(doc["dataset"]),
            fields=tuple(fields),
            geometry=geometry,
            id_columns=tuple(str(c) for c in doc.get("id_columns", ())),
            commune_column=None if commune_column in (None, "") else str(commune_column),
            note=str(doc.get("note", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"malformed profile: {exc!r}") from exc


def apply_to_records(
    profile: SourceProfile, records: list[SourceRecord], identity_fields: tuple[str, ...]
) -> list[SourceRecord]:
    """Every record of a file through the profile (``identity_fields``: the dataset's)."""
    identity = identity_fields[0] if len(identity_fields) == 1 else None
    return [apply_profile(profile, r, identity_field=identity).record for r in records]
