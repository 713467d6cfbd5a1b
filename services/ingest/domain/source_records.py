"""Read a commune's file (bytes) into source records: attributes + raw geometry. One reader per format,
registered in ``READERS`` (add a format by adding a function, not an ``if``)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from services.contract.messages import AttributeValue, GeometryEncoding, RawGeometry


class UnreadableFile(ValueError):
    pass


@dataclass(frozen=True)
class SourceRecord:
    line: int  # 1-based position in the file (feature index or CSV line)
    attributes: dict[str, AttributeValue]
    geometry: RawGeometry | None


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


def read_geojson(data: bytes) -> Iterator[SourceRecord]:
    try:
        doc = json.loads(decode_text(data))
    except json.JSONDecodeError as exc:
        raise UnreadableFile(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise UnreadableFile("GeoJSON must be an object")
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


_LON = ("xlong", "x_long", "longitude", "lon", "lng", "long", "x")
_LAT = ("ylat", "y_lat", "latitude", "lat", "y")
_WKT = ("wkt", "geometry", "geom", "the_geom", "geometrie")
_GEOPOINT = ("geo_point_2d", "geopoint", "geo_point", "coordonnees", "coordinates")


def read_csv(data: bytes) -> Iterator[SourceRecord]:
    text = decode_text(data)
    sample = text[:20000]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=";,\t|")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ";" if sample.count(";") > sample.count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    if not reader.fieldnames:
        raise UnreadableFile("CSV has no header line")
    lower = {name.strip().lower(): name for name in reader.fieldnames if name}
    lon_col = next((lower[c] for c in _LON if c in lower), None)
    lat_col = next((lower[c] for c in _LAT if c in lower), None)
    wkt_col = next((lower[c] for c in _WKT if c in lower), None)
    gp_col = next((lower[c] for c in _GEOPOINT if c in lower), None)
    for row in reader:
        line = reader.line_num
        attrs: dict[str, AttributeValue] = {str(k).strip(): v for k, v in row.items() if k is not None}
        geometry = None
        if lon_col and lat_col and row.get(lon_col) and row.get(lat_col):
            x = row[lon_col].strip().replace(",", ".")
            y = row[lat_col].strip().replace(",", ".")
            geometry = RawGeometry(GeometryEncoding.WKT, f"POINT ({x} {y})".encode(), None)
        elif wkt_col and row.get(wkt_col):
            geometry = RawGeometry(GeometryEncoding.WKT, row[wkt_col].strip().encode(), None)
        elif gp_col and row.get(gp_col):
            parts = [p.strip() for p in row[gp_col].replace(";", ",").split(",")]
            if len(parts) == 2:  # "lat, lon" as in OpenDataSoft exports
                geometry = RawGeometry(GeometryEncoding.WKT, f"POINT ({parts[1]} {parts[0]})".encode(), "EPSG:4326")
        yield SourceRecord(line, attrs, geometry)


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
