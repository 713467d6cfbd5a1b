"""Features as documents: public ids, GeoJSON (RFC 7946) features and collections, CSV in the dataset's
schema column layout. Pure: stored JSON text in, text out.

A feature's public id is ``<commune>:<feature_id>``: stable across versions (it is the canonical key)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import shapely

from services.contract.conformance_levels import is_incomplete_json
from services.contract.datasets.catalogue import DatasetDefinition


class BadFeatureId(ValueError):
    pass


@dataclass(frozen=True)
class StoredFeature:
    """A feature as the read model holds it: GeoJSON geometry text (WGS84) and attributes JSON text."""

    commune: str
    feature_id: str
    geometry_geojson: str | None
    attributes_json: str

    @property
    def public_id(self) -> str:
        return public_feature_id(self.commune, self.feature_id)


def public_feature_id(commune: str, feature_id: str) -> str:
    return f"{commune}:{feature_id}"


def parse_public_feature_id(value: str) -> tuple[str, str]:
    commune, sep, fid = value.partition(":")
    if not sep or not commune or not fid:
        raise BadFeatureId(f"feature id {value[:100]!r} is not <commune>:<feature_id>")
    return commune, fid


def feature_dict(public_id: str, geometry_geojson: str | None, attributes_json: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": public_id,
        "geometry": None if geometry_geojson is None else json.loads(geometry_geojson),
        "properties": json.loads(attributes_json),
    }


def feature_json(f: StoredFeature) -> str:
    """One GeoJSON Feature as text, composed from the stored JSON texts without re-parsing them."""
    geometry = f.geometry_geojson if f.geometry_geojson is not None else "null"
    return (
        f'{{"type":"Feature","id":{json.dumps(f.public_id, ensure_ascii=False)},'
        f'"geometry":{geometry},"properties":{f.attributes_json}}}'
    )


def feature_collection_chunks(features: Iterable[StoredFeature], members: dict[str, Any]) -> Iterator[str]:
    """A FeatureCollection as text chunks (for streaming): ``members`` first, then the features."""
    head = {"type": "FeatureCollection", **members}
    yield json.dumps(head, ensure_ascii=False)[:-1] + ',"features":['
    first = True
    for f in features:
        yield ("" if first else ",") + feature_json(f)
        first = False
    yield "]}"


# -- CSV ------------------------------------------------------------------------------------------------

GEOMETRY_COLUMN = "geometry"


def csv_columns(definition: DatasetDefinition) -> list[str]:
    """The schema's fields in their order. Where a national schema exists, exactly its columns (its layout
    says where coordinates go, if anywhere); otherwise a trailing ``geometry`` column in WKT (WGS84)."""
    columns = list(definition.field_names)
    if definition.national_schema is None and definition.geometry.type != "None":
        columns.append(GEOMETRY_COLUMN)
    return columns


def _boolean_literals(field: dict[str, Any]) -> tuple[str, str]:
    trues = field.get("trueValues") or ["true"]
    falses = field.get("falseValues") or ["false"]
    return ("true" if "true" in trues else str(trues[0])), ("false" if "false" in falses else str(falses[0]))


def _cell(value: Any, field: dict[str, Any] | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        t, f = _boolean_literals(field or {})
        return t if value else f
    if isinstance(value, float) and value.is_integer() and (field or {}).get("type") == "integer":
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


LEFT_OUT_HEADER = "X-Odc-Left-Out"  # how many records a national-layout CSV leaves out, and why


def conformance_json(feature_count: int, incomplete: int) -> dict[str, int]:
    """Counts per level of a version's features (refused records are never in a version)."""
    return {"conforming": feature_count - incomplete, "incomplete": incomplete}


def left_out_note(incomplete: int, geojson_url: str) -> str:
    """The CSV's note on the records it leaves out (an HTTP header value: ASCII only)."""
    return (
        f"{incomplete} incomplete record(s) left out: they lack fields the national schema requires; "
        f"they are in {geojson_url} with odc:conformance=incomplete and odc:missing"
    )


class CsvLayout:
    """Renders features as CSV rows in a dataset's column layout. Only conforming records belong to it: the
    file must stay valid against the national schema (``includes``)."""

    def __init__(self, definition: DatasetDefinition) -> None:
        self.columns = csv_columns(definition)
        self._fields = {f["name"]: f for f in definition.table_schema.get("fields", [])}

    def header(self) -> str:
        return self._line(self.columns)

    @staticmethod
    def includes(f: StoredFeature) -> bool:
        return not is_incomplete_json(f.attributes_json)

    def row(self, f: StoredFeature) -> str:
        attributes = json.loads(f.attributes_json)
        cells = []
        for name in self.columns:
            if name == GEOMETRY_COLUMN and name not in self._fields:
                cells.append("" if f.geometry_geojson is None else shapely.from_geojson(f.geometry_geojson).wkt)
            else:
                cells.append(_cell(attributes.get(name), self._fields.get(name)))
        return self._line(cells)

    @staticmethod
    def _line(cells: list[str]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\r\n").writerow(cells)
        return buf.getvalue()

    def chunks(self, features: Iterable[StoredFeature]) -> Iterator[str]:
        yield self.header()
        for f in features:
            if self.includes(f):
                yield self.row(f)
