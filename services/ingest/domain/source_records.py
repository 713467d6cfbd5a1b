"""Read a commune's file (bytes) into source records: attributes + raw geometry. One reader per format,
registered in ``READERS`` (add a format by adding a function, not an ``if``)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from services.contract.messages import AttributeValue, GeometryEncoding, RawGeometry


class UnreadableFile(ValueError):
    pass


@dataclass(frozen=True)
class SourceRecord:
    line: int  # 1-based position in the file (feature index or CSV line)
    attributes: dict[str, AttributeValue]
    geometry: RawGeometry | None
    commune: str | None = None  # read by a source profile's commune column (source_profiles.py)


def _flat(value: object) -> AttributeValue:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return json.dumps(value, ensure_ascii=False)


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), else Windows-1252/Latin-1 as French exports often are."""
    for enc in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    raise UnreadableFile("cannot decode the file as UTF-8 or Latin-1")  # latin-1 never fails; kept for clarity


def _flat_records(rows: list[object]) -> Iterator[SourceRecord]:
    """A JSON array of flat objects (a real-time feed, a portal's JSON service): one record per object,
    its position read from coordinate members the same way as CSV columns."""
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            yield SourceRecord(i, {}, None)
            continue
        attrs = {str(k): _flat(v) for k, v in row.items()}
        yield SourceRecord(i, attrs, _xy_geometry(attrs, _columns(list(attrs))))


def read_geojson(data: bytes) -> Iterator[SourceRecord]:
    try:
        doc = json.loads(decode_text(data))
    except json.JSONDecodeError as exc:
        raise UnreadableFile(f"not valid JSON: {exc}") from exc
    if isinstance(doc, list):
        yield from _flat_records(doc)
        return
    if not isinstance(doc, dict):
        raise UnreadableFile("GeoJSON must be an object")
    if isinstance(doc.get("values"), list) and "type" not in doc:  # data.grandlyon.com datapusher answer
        yield from _flat_records(doc["values"])
        return
    if doc.get("type") == "Feature":
        features = [doc]
    elif doc.get("type") == "FeatureCollection" and isinstance(doc.get("features"), list):
        features = doc["features"]
    else:
        raise UnreadableFile("expected a GeoJSON FeatureCollection or Feature")
    crs = None
    crs_member = doc.get("crs")
    if isinstance(crs_member, dict) and isinstance(crs_member.get("properties"), dict):
        crs = crs_member["properties"].get("name")
    for i, feat in enumerate(features, start=1):
        if not isinstance(feat, dict):
            yield SourceRecord(i, {}, None)
            continue
        props = feat.get("properties") or {}
        attrs = {str(k): _flat(v) for k, v in props.items()} if isinstance(props, dict) else {}
        if "id" in feat and "id" not in attrs:
            attrs["id"] = _flat(feat["id"])
        geom = feat.get("geometry")
        raw = None
        if geom is not None:
            raw = RawGeometry(GeometryEncoding.GEOJSON, json.dumps(geom, separators=(",", ":")).encode(), crs)
        yield SourceRecord(i, attrs, raw)


_LON = ("xlong", "x_long", "longitude", "lon", "lng", "long", "x", "coord_x", "coordx", "xcoord", "long_coor1")
_LAT = ("ylat", "y_lat", "latitude", "lat", "y", "coord_y", "coordy", "ycoord", "lat_coor1")
_WKT = ("wkt", "geometry", "geom", "the_geom", "geometrie", "geom_wkt", "wkt_geom")
_GEOPOINT = ("geo_point_2d", "geopoint", "geo_point", "coordonnees", "coordinates", "coordonneesxy")
_DBF_SUFFIX = re.compile(r",(?:[CDLFM]|[CN],\d+|N,\d+,\d+)$")  # ogr2ogr from a shapefile: "Nom,C,254", "Id,N,9,0"


def clean_header(name: str) -> str:
    """A column name as the source meant it: DBF type suffixes and stray spaces removed."""
    return _DBF_SUFFIX.sub("", name.strip().lstrip("\ufeff")).strip()


@dataclass(frozen=True)
class _Columns:
    lon: str | None
    lat: str | None
    wkt: str | None
    geopoint: str | None


def _columns(names: list[str]) -> _Columns:
    lower = {name.strip().lower(): name for name in names if name}

    def first(candidates: tuple[str, ...]) -> str | None:
        return next((lower[c] for c in candidates if c in lower), None)

    return _Columns(first(_LON), first(_LAT), first(_WKT), first(_GEOPOINT))


def _number_text(value: AttributeValue) -> str:
    return str(value).strip().replace(",", ".")


def _xy_geometry(row: dict[str, AttributeValue], cols: _Columns) -> RawGeometry | None:
    if cols.lon and cols.lat and row.get(cols.lon) not in (None, "") and row.get(cols.lat) not in (None, ""):
        x, y = _number_text(row[cols.lon]), _number_text(row[cols.lat])
        return RawGeometry(GeometryEncoding.WKT, f"POINT ({x} {y})".encode(), None)
    if cols.wkt and isinstance(row.get(cols.wkt), str) and str(row[cols.wkt]).strip():
        text = str(row[cols.wkt]).strip()
        if text.startswith("{"):  # a GeoJSON geometry written into a CSV column
            return RawGeometry(GeometryEncoding.GEOJSON, text.encode(), None)
        return RawGeometry(GeometryEncoding.WKT, text.encode(), None)
    value = row.get(cols.geopoint) if cols.geopoint else None
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.startswith("{"):
            return RawGeometry(GeometryEncoding.GEOJSON, text.encode(), None)
        if text.startswith("["):  # Table Schema geopoint "array" format: [lon, lat]
            parts = [p.strip() for p in text.strip("[] \n").split(",")]
            if len(parts) == 2:
                return RawGeometry(GeometryEncoding.WKT, f"POINT ({parts[0]} {parts[1]})".encode(), None)
            return None
        parts = [p.strip() for p in text.replace(";", ",").split(",")]
        if len(parts) == 2:
            # OpenDataSoft's geo_point_2d is "lat, lon"; Table Schema's geopoint is "lon, lat". The per-feature
            # axis check of the normaliser settles which one a value is, so keep the order as written
            # for a Table Schema geopoint and swap only for the known lat-first columns.
            if cols.geopoint and cols.geopoint.lower() in ("geo_point_2d", "geo_point"):
                return RawGeometry(GeometryEncoding.WKT, f"POINT ({parts[1]} {parts[0]})".encode(), "EPSG:4326")
            return RawGeometry(GeometryEncoding.WKT, f"POINT ({parts[0]} {parts[1]})".encode(), None)
    return None


def read_csv(data: bytes) -> Iterator[SourceRecord]:
    text = decode_text(data)
    sample = text[:20000]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=";,\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ";" if sample.count(";") > sample.count(",") else ","
    # newline="": the csv module handles \r, \n and \r\n itself (a bare \r inside a field was a crash: fuzz finding)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        yield from _csv_records(reader)
    except csv.Error as exc:
        raise UnreadableFile(f"CSV is malformed near line {reader.line_num}: {exc}") from exc


def _csv_records(reader: Any) -> Iterator[SourceRecord]:
    try:
        header = [clean_header(h) for h in next(reader)]
    except StopIteration:
        raise UnreadableFile("CSV has no header line") from None
    if not any(header):
        raise UnreadableFile("CSV has no header line")
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            raise UnreadableFile(f"column {name!r} appears twice in the header: which one holds the value is ambiguous")
        seen.add(name)
    cols = _columns(header)
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue  # blank line
        line = reader.line_num
        attrs: dict[str, AttributeValue] = {name: cell for name, cell in zip(header, cells, strict=False) if name}
        if len(cells) > len(header):
            attrs["_extra_cells"] = json.dumps(cells[len(header) :], ensure_ascii=False)
        yield SourceRecord(line, attrs, _xy_geometry(attrs, cols))


READERS: dict[str, Callable[[bytes], Iterator[SourceRecord]]] = {
    "geojson": read_geojson,
    "json": read_geojson,
    "csv": read_csv,
}


def reader_for(filename: str, explicit: str | None = None) -> Callable[[bytes], Iterator[SourceRecord]]:
    fmt = (explicit or filename.rsplit(".", 1)[-1]).lower()
    if fmt not in READERS:
        raise UnreadableFile(f"unsupported format {fmt!r} (supported: {', '.join(sorted(READERS))})")
    return READERS[fmt]
