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


def feature_json(f: StoredFeature, public_id: str | None = None) -> str:
    """One GeoJSON Feature as text, composed from the stored JSON texts without re-parsing them; its id is
    ``public_id`` (default ``<commune>:<feature_id>``)."""
    geometry = f.geometry_geojson if f.geometry_geojson is not None else "null"
    return (
        f'{{"type":"Feature","id":{json.dumps(public_id or f.public_id, ensure_ascii=False)},'
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

# The geometry column, in WKT (WGS84 longitude/latitude): GDAL's CSV driver takes a column named "WKT" for the
# geometry without any open option (https://gdal.org/drivers/vector/csv.html), and QGIS's delimited-text provider
# offers it as the geometry field.
GEOMETRY_COLUMN = "WKT"
# Python's csv module refuses a field longer than this by default (csv.field_size_limit()); a WKT cell is written
# with 7 decimals (~1 cm), then 6 (~10 cm) and 5 (~1 m) if needed to stay under it. The GeoJSON export is exact.
CSV_FIELD_LIMIT = 131_072
WKT_DECIMALS = (7, 6, 5)


def csv_columns(definition: DatasetDefinition, with_wkt: bool = False) -> list[str]:
    """The schema's fields in their order. Where a national schema exists, exactly its columns (its layout
    says where coordinates go, if anywhere), plus a trailing ``WKT`` column only when asked (``with_wkt``: the
    file is then no longer valid against the national schema); otherwise always a trailing ``WKT`` column."""
    columns = list(definition.field_names)
    if definition.geometry.type == "None" or GEOMETRY_COLUMN in columns:
        return columns
    if definition.national_schema is None or with_wkt:
        columns.append(GEOMETRY_COLUMN)
    return columns


def wkt_cell(geometry_geojson: str | None) -> str:
    """A geometry as WKT short enough for Python's csv module: 7 decimals, fewer only if the cell would be
    longer than CSV_FIELD_LIMIT (a geometry of thousands of vertices)."""
    if geometry_geojson is None:
        return ""
    geometry = shapely.from_geojson(geometry_geojson)
    text = ""
    for decimals in WKT_DECIMALS:
        text = shapely.to_wkt(geometry, rounding_precision=decimals, trim=True)
        if len(text) < CSV_FIELD_LIMIT:
            break
    return text


# GDAL's CSV driver reads a ``.csvt`` file next to the CSV (one line: each column's type, in column order) and
# a ``.prj`` file (the CRS). Table Schema types map to its types; other columns are strings of the width of the
# longest value in the file (UTF-8 bytes, as GDAL counts them), so a copy to a shapefile or a database
# truncates nothing.
CSVT_TYPES = {"integer": "Integer64", "number": "Real", "year": "Integer", "date": "Date", "datetime": "DateTime", "time": "Time"}  # fmt: skip
ISO_FORMATS = {"default", "any", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%H:%M:%S"}
WGS84_PRJ = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],'
    'UNIT["degree",0.0174532925199433]]'
)


def _csvt_type(field: dict[str, Any] | None, width: int) -> str:
    kind = (field or {}).get("type", "string")
    if kind == "boolean" and _boolean_literals(field or {}) == ("true", "false"):
        return "Integer(Boolean)"
    if kind in CSVT_TYPES and (field or {}).get("format", "default") in ISO_FORMATS:
        return CSVT_TYPES[kind]
    return f"String({max(width, 1)})"


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

    def __init__(self, definition: DatasetDefinition, with_wkt: bool = False) -> None:
        self.columns = csv_columns(definition, with_wkt)
        self._fields = {f["name"]: f for f in definition.table_schema.get("fields", [])}

    def header(self) -> str:
        return self._line(self.columns)

    @staticmethod
    def includes(f: StoredFeature) -> bool:
        return not is_incomplete_json(f.attributes_json)

    def row(self, f: StoredFeature) -> str:
        return self._line(self.cells(f))

    def cells(self, f: StoredFeature) -> list[str]:
        attributes = json.loads(f.attributes_json)
        cells = []
        for name in self.columns:
            if name == GEOMETRY_COLUMN and name not in self._fields:
                cells.append(wkt_cell(f.geometry_geojson))
            else:
                cells.append(_cell(attributes.get(name), self._fields.get(name)))
        return cells

    def csvt(self, widths: list[int]) -> str:
        """The ``.csvt`` line for these columns, given the widest value of each (see ``widest``)."""
        types = [
            "WKT" if name == GEOMETRY_COLUMN and name not in self._fields else _csvt_type(self._fields.get(name), w)
            for name, w in zip(self.columns, widths, strict=True)
        ]
        return self._line(types)

    def widest(self, rows: Iterable[list[str]]) -> list[int]:
        """Each column's widest value in UTF-8 bytes."""
        widths = [0] * len(self.columns)
        for cells in rows:
            widths = [max(w, len(c.encode("utf-8"))) for w, c in zip(widths, cells, strict=True)]
        return widths

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
