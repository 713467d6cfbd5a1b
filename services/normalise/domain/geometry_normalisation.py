"""Turn a geometry as sent (GeoJSON / WKT / WKB, any of the CRSs communes use, axes possibly swapped)
into a valid WGS84 (lon, lat) shapely geometry of the dataset's type, or a specific rejection.

Pure: shapely and pyproj do the maths; no I/O. Transformers are cached per source CRS.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Point, shape
from shapely.geometry.base import BaseGeometry

from services.contract.messages import GeometryEncoding, RawGeometry

SUPPORTED_EPSG = {4326, 4171, 2154, 3946, 3857}
MAX_VERTICES = 200_000
MAX_GEOMETRY_BYTES = 5_000_000
_EPSG_RE = re.compile(r"(?:EPSG)(?::|::|/0/|/)(\d+)$", re.IGNORECASE)


class GeometryRejected(Exception):
    def __init__(
        self, rule: str, en: str, fr: str, value: str | None = None, also: tuple[GeometryRejected, ...] = ()
    ) -> None:
        super().__init__(en)
        self.rule, self.en, self.fr, self.value = rule, en, fr, value
        self.also = also  # further problems of the same geometry, reported with this one (all at once)


_FAMILY = {"MultiPoint": "Point", "MultiLineString": "LineString", "MultiPolygon": "Polygon"}


def _type_problem(geom: BaseGeometry, expected_type: str) -> tuple[GeometryRejected, ...]:
    """The wrong-type problem of a geometry that is refused for another reason first (its area), so that the
    sender learns both at once: a Polygon sent for a Point dataset is not only "outside the area"."""
    got = geom.geom_type
    if _FAMILY.get(got, got) == _FAMILY.get(expected_type, expected_type):
        return ()
    return (
        GeometryRejected(
            "geometry_type", f"expected {expected_type}, got {got}", f"{expected_type} attendu, {got} reçu", got
        ),
    )


def _not_finite() -> GeometryRejected:
    return GeometryRejected("coordinates_not_finite", "NaN or infinite coordinate", "coordonnée NaN ou infinie")


def _placeholder(x: float, y: float) -> GeometryRejected:
    return GeometryRejected(
        "placeholder_coordinates",
        f"placeholder coordinates ({x:g}, {y:g}) instead of a position",
        f"coordonnées fictives ({x:g}, {y:g}) au lieu d'une position",
        f"{x:g},{y:g}",
    )


DATASET_AREA = ("the dataset's area", "de la zone du jeu de données")


def _out_of_area(lon: float, lat: float, area_name: tuple[str, str] = DATASET_AREA) -> GeometryRejected:
    """``area_name``: the area in words (en, fr), e.g. ("the territory of X", "du territoire de X")."""
    return GeometryRejected(
        "out_of_area",
        f"geometry at ({lon:.5f}, {lat:.5f}) is outside {area_name[0]}",
        f"géométrie en ({lon:.5f}, {lat:.5f}) hors {area_name[1]}",
        f"{lon:.5f},{lat:.5f}",
    )


def _source_epsg(crs: str | None, x: float, y: float, corrections: list[str]) -> int:
    """The EPSG code the coordinates are in: declared, or inferred from the first position (noted)."""
    declared = parse_crs(crs)
    if declared is None:
        epsg = infer_epsg(x, y)
        if epsg is None:
            raise GeometryRejected(
                "crs",
                "no CRS declared and the coordinates match none of the supported ones",
                "aucun système de coordonnées déclaré et les coordonnées n'en correspondent à aucun",
                f"{x},{y}",
            )
        if epsg != 4326:
            corrections.append(f"crs_inferred:{epsg}")
    else:
        epsg = declared
    if epsg not in SUPPORTED_EPSG:
        raise GeometryRejected(
            "crs", f"unsupported CRS EPSG:{epsg}", f"système de coordonnées EPSG:{epsg} non pris en charge", str(epsg)
        )
    return epsg


@dataclass(frozen=True)
class NormalisedGeometry:
    geometry: BaseGeometry  # WGS84, x=lon, y=lat
    source_epsg: int
    corrections: tuple[str, ...]  # e.g. "axis_swapped", "crs_inferred:2154", "repaired", "promoted_to_multi"


def parse_crs(declared: str | None) -> int | None:
    """Return an EPSG code for a declared CRS string; CRS84 counts as 4326 (lon, lat)."""
    if declared is None or not declared.strip():
        return None
    text = declared.strip()
    if text.upper().endswith("CRS84") or text.upper() == "OGC:CRS84":
        return 4326
    m = _EPSG_RE.search(text)
    if m is None and text.isdigit():
        return int(text)
    if m is None:
        raise GeometryRejected(
            "crs", f"unrecognised CRS {text!r}", f"système de coordonnées non reconnu {text!r}", text[:100]
        )
    return int(m.group(1))


def infer_epsg(x: float, y: float) -> int | None:
    """Recognise a CRS from the value range of a coordinate in or around France."""
    if -180 <= x <= 180 and -90 <= y <= 90:
        return 4326
    if 1_000_000 <= x <= 2_300_000 and 5_000_000 <= y <= 5_400_000:
        return 3946  # CC46, the zone of the Lyon area (data.grandlyon.com)
    if 0 <= x <= 1_300_000 and 6_000_000 <= y <= 7_200_000:
        return 2154  # Lambert-93
    if -700_000 <= x <= 1_200_000 and 5_000_000 <= y <= 6_700_000:
        return 3857  # Web Mercator over France
    return None


@lru_cache(maxsize=16)
def _transformer(epsg: int) -> Transformer:
    return Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)


Box = tuple[float, float, float, float]
PLACEHOLDERS = ((0.0, 0.0), (1.0, 1.0))  # what exports write when a position is unknown


def _inside(boxes: tuple[Box, ...], x: float, y: float) -> bool:
    for b in boxes:  # noqa: SIM110 - a loop, not any(genexpr): runs twice per record, ~3x cheaper
        if b[0] <= x <= b[2] and b[1] <= y <= b[3]:
            return True
    return False


def _boxes(area: Box | tuple[Box, ...]) -> tuple[Box, ...]:
    return (area,) if isinstance(area[0], int | float) else area


def is_placeholder(coords: Any) -> bool:
    """Every vertex at (0, 0) or at (1, 1): a placeholder, not a position."""
    return any(bool(np.all(np.abs(coords - np.array(p)) < 1e-9)) for p in PLACEHOLDERS)


def _load(raw: RawGeometry) -> BaseGeometry:
    if len(raw.value) > MAX_GEOMETRY_BYTES:
        raise GeometryRejected(
            "geometry_size",
            f"geometry larger than {MAX_GEOMETRY_BYTES} bytes",
            f"géométrie de plus de {MAX_GEOMETRY_BYTES} octets",
        )
    try:
        if raw.encoding is GeometryEncoding.GEOJSON:
            text = raw.value.decode("utf-8")
            fast = _from_geojson(text)
            if fast is not None:
                return fast
            obj = json.loads(text)
            if not isinstance(obj, dict) or "type" not in obj:
                raise ValueError("not a GeoJSON geometry object")
            if obj.get("type") == "Feature":
                obj = obj.get("geometry")
            return shape(obj)
        if raw.encoding is GeometryEncoding.WKT:
            return shapely.from_wkt(raw.value.decode("utf-8"))
        return shapely.from_wkb(raw.value)
    except GeometryRejected:
        raise
    except Exception as exc:
        text = raw.value[:100].decode("utf-8", "replace")
        raise GeometryRejected(
            "geometry_syntax",
            f"unreadable {raw.encoding.value} geometry: {exc}",
            f"géométrie {raw.encoding.value} illisible : {exc}",
            text,
        ) from exc


def _from_geojson(text: str) -> BaseGeometry | None:
    """GEOS's own GeoJSON reader (C): ~10x cheaper than json.loads + shape() on polygons, whose coordinates
    shape() walks in Python. Anything it refuses or reads as a collection (a FeatureCollection, say) goes the
    json.loads + shape() way, which accepts more (strings as numbers, unclosed rings) and words the refusals."""
    try:
        g = shapely.from_geojson(text, on_invalid="raise")
    except Exception:  # noqa: BLE001 - the slower reader decides
        return None
    return None if g is None or g.geom_type == "GeometryCollection" else g


def _swap(g: BaseGeometry) -> BaseGeometry:
    return shapely.transform(g, lambda c: c[:, ::-1])


def normalise_geometry(
    raw: RawGeometry,
    expected_type: str,
    area: Box | tuple[Box, ...],
    *,
    out_of_area: str = "reject",
    placeholder: str = "reject",
    area_name: tuple[str, str] = DATASET_AREA,
) -> NormalisedGeometry:
    """``out_of_area`` and ``placeholder`` are the dataset's policies: "reject" refuses the record, "flag"
    accepts it and records ``flagged:<rule>`` among its corrections.

    A plain point (GeoJSON ``Point`` or WKT ``POINT (x y)``, what most records carry) takes a float-only path
    with the very same rules; everything else goes through shapely. A property test holds the two paths to the
    same results (tests/unit/test_geometry_normalisation.py)."""
    if expected_type == "Point" and len(raw.value) <= MAX_GEOMETRY_BYTES:
        xy = _plain_point(raw)
        if xy is not None:
            return _normalise_point(xy[0], xy[1], raw.crs, _boxes(area), out_of_area, placeholder, area_name)
    return normalise_general(
        raw, expected_type, area, out_of_area=out_of_area, placeholder=placeholder, area_name=area_name
    )


_NUM = r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_WKT_POINT = re.compile(rf"\s*POINT\s*\(\s*({_NUM})\s+({_NUM})(?:\s+{_NUM})?\s*\)\s*", re.IGNORECASE)


def _plain_point(raw: RawGeometry) -> tuple[float, float] | None:
    """(x, y) of a plain 2D/3D point, or None to let the general path read (and judge) the geometry."""
    try:
        if raw.encoding is GeometryEncoding.GEOJSON:
            obj = json.loads(raw.value.decode("utf-8"))
            if not isinstance(obj, dict) or obj.get("type") != "Point":
                return None
            c = obj.get("coordinates")
            if (
                isinstance(c, list)
                and len(c) in (2, 3)
                and all(type(v) in (int, float) for v in c)  # not bool, not str
            ):
                return float(c[0]), float(c[1])
            return None
        if raw.encoding is GeometryEncoding.WKT:
            m = _WKT_POINT.fullmatch(raw.value.decode("ascii"))
            return (float(m.group(1)), float(m.group(2))) if m else None
    except (ValueError, UnicodeDecodeError, OverflowError, RecursionError):
        return None
    return None


def _normalise_point(
    x: float,
    y: float,
    crs: str | None,
    boxes: tuple[Box, ...],
    out_of_area: str,
    placeholder: str,
    area_name: tuple[str, str] = DATASET_AREA,
) -> NormalisedGeometry:
    """normalise_general's rules for one point, in floats."""
    if not (math.isfinite(x) and math.isfinite(y)):
        raise _not_finite()
    corrections: list[str] = []
    if any(abs(x - px) < 1e-9 and abs(y - py) < 1e-9 for px, py in PLACEHOLDERS):
        if placeholder == "reject":
            raise _placeholder(x, y)
        return NormalisedGeometry(Point(x, y), 4326, ("flagged:placeholder",))
    epsg = _source_epsg(crs, x, y, corrections)
    lon, lat = (x, y) if epsg == 4326 else _transformer(epsg).transform(x, y)
    lon, lat = float(lon), float(lat)
    if not (math.isfinite(lon) and math.isfinite(lat)):  # a projection can fail into inf
        raise _not_finite()
    if not _inside(boxes, lon, lat) and _inside(boxes, lat, lon) and epsg in (4326, 4171):
        corrections.append("axis_swapped")
        lon, lat = lat, lon
    if not _inside(boxes, lon, lat):
        if out_of_area == "reject":
            raise _out_of_area(
                lon + 0.0, lat + 0.0, area_name
            )  # -0.0 shown as 0.0, as the general path's mean gives it
        corrections.append("flagged:out_of_area")
    geom: BaseGeometry = Point(lon, lat)
    if epsg != 4326:
        geom = shapely.set_precision(geom, 1e-7)
    return NormalisedGeometry(geom, epsg, tuple(corrections))


def normalise_general(
    raw: RawGeometry,
    expected_type: str,
    area: Box | tuple[Box, ...],
    *,
    out_of_area: str = "reject",
    placeholder: str = "reject",
    area_name: tuple[str, str] = DATASET_AREA,
) -> NormalisedGeometry:
    """Any geometry, through shapely (see normalise_geometry)."""
    boxes = _boxes(area)
    geom = _load(raw)
    if geom is None or geom.is_empty:
        raise GeometryRejected("geometry_empty", "empty geometry", "géométrie vide")
    n = shapely.get_num_coordinates(geom)
    if n > MAX_VERTICES:
        raise GeometryRejected(
            "geometry_size", f"{n} vertices (limit {MAX_VERTICES})", f"{n} sommets (limite {MAX_VERTICES})"
        )
    coords = shapely.get_coordinates(geom)
    if not bool(np.isfinite(coords).all()):
        raise _not_finite()
    if shapely.has_z(geom):
        geom = shapely.force_2d(geom)
        coords = coords[:, :2]
    corrections: list[str] = []
    if is_placeholder(coords):
        x0, y0 = float(coords[0][0]), float(coords[0][1])
        if placeholder == "reject":
            raise _placeholder(x0, y0)
        return NormalisedGeometry(
            _as_type(geom, expected_type, corrections), 4326, (*corrections, "flagged:placeholder")
        )

    x0, y0 = float(coords[0][0]), float(coords[0][1])
    epsg = _source_epsg(raw.crs, x0, y0, corrections)
    if epsg != 4326:
        geom = shapely.transform(geom, lambda c: _stack(_transformer(epsg).transform(c[:, 0], c[:, 1])))
        if not bool(np.isfinite(shapely.get_coordinates(geom)).all()):  # a projection can fail into inf
            raise _not_finite()

    # Per-feature axis order: WFS 2.0 with EPSG:4326/4171 is lat-first, often re-labelled as CRS84.
    c = shapely.get_coordinates(geom)
    lon, lat = float(c[:, 0].mean()), float(c[:, 1].mean())
    if not _inside(boxes, lon, lat) and _inside(boxes, lat, lon) and epsg in (4326, 4171):
        geom = _swap(geom)
        corrections.append("axis_swapped")
        lon, lat = lat, lon
    if not _inside(boxes, lon, lat):
        if out_of_area == "reject":
            refused = _out_of_area(lon, lat, area_name)
            refused.also = _type_problem(geom, expected_type)
            raise refused
        corrections.append("flagged:out_of_area")

    geom = _as_type(geom, expected_type, corrections)
    if not geom.is_valid:
        repaired = shapely.make_valid(geom)
        if expected_type == "MultiPolygon":
            polys = [p for p in getattr(repaired, "geoms", [repaired]) if p.geom_type in ("Polygon", "MultiPolygon")]
            parts = [q for p in polys for q in (p.geoms if p.geom_type == "MultiPolygon" else [p])]
            repaired = MultiPolygon(parts) if parts else repaired
        geom = repaired
        corrections.append("repaired")
    if geom.geom_type != expected_type:
        raise GeometryRejected(
            "geometry_type",
            f"expected {expected_type}, got {geom.geom_type}",
            f"{expected_type} attendu, {geom.geom_type} reçu",
            geom.geom_type,
        )
    geom = shapely.set_precision(geom, 1e-7) if epsg != 4326 else geom
    return NormalisedGeometry(geom, epsg, tuple(corrections))


def _as_type(geom: BaseGeometry, expected_type: str, corrections: list[str]) -> BaseGeometry:
    if expected_type == "MultiPolygon" and geom.geom_type == "Polygon":
        corrections.append("promoted_to_multi")
        return MultiPolygon([geom])
    if expected_type == "MultiPoint" and geom.geom_type == "Point":
        corrections.append("promoted_to_multi")
        return shapely.multipoints([geom])
    return geom


def _stack(xy: tuple[Any, Any]) -> Any:
    return np.column_stack(xy)


# --- a batch of points at once ----------------------------------------------------------------------------

# A GeoJSON point exactly as the stream's senders write it: {"type": "Point", "coordinates": [x, y(, z)]},
# numbers in JSON's own grammar (what json.loads accepts as int or float).
_JSON_NUM = rb"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?"
_WS = rb"[ \t\n\r]*"  # JSON's whitespace (not \s: it takes \f and \v, which json.loads refuses)
_GEOJSON_POINT = re.compile(
    _WS
    + rb"\{"
    + _WS
    + rb'"type"'
    + _WS
    + rb":"
    + _WS
    + rb'"Point"'
    + _WS
    + rb","
    + _WS
    + rb'"coordinates"'
    + _WS
    + rb":"
    + _WS
    + rb"\["
    + _WS
    + rb"("
    + _JSON_NUM
    + rb")"
    + _WS
    + rb","
    + _WS
    + rb"("
    + _JSON_NUM
    + rb")"
    + _WS
    + rb"(?:,"
    + _WS
    + _JSON_NUM
    + _WS
    + rb")?\]"
    + _WS
    + rb"\}"
    + _WS
)


def normalise_geometries(
    raws: list[RawGeometry],
    expected_type: str,
    area: Box | tuple[Box, ...],
    *,
    out_of_area: str = "reject",
    placeholder: str = "reject",
    area_name: tuple[str, str] = DATASET_AREA,
) -> list[NormalisedGeometry | GeometryRejected]:
    """``normalise_geometry`` over a batch: the outcome of each, the refusal as the exception object.

    Plain points (GeoJSON, or WKT as a record's coordinate columns give them: the common case) are judged as
    arrays: numpy for finiteness, placeholders, the CRS inferred from the value range, the area boxes and the
    axis order; pyproj on each CRS's coordinate arrays; shapely 2 builds the points and rounds reprojected ones
    at once. A point these rules would refuse, and any
    other geometry, goes through ``normalise_geometry`` itself, which words the refusal. A Hypothesis test holds
    the batch to ``normalise_geometry`` record for record (tests/unit/test_geometry_batches.py)."""
    out: list[NormalisedGeometry | GeometryRejected | None] = [None] * len(raws)
    boxes = _boxes(area)
    plain: list[int] = []
    xs: list[float] = []
    ys: list[float] = []
    epsgs: list[int] = []
    declared: dict[str | None, int | None] = {}
    if expected_type == "Point":
        for i, raw in enumerate(raws):
            if len(raw.value) > 200:
                continue
            xy = _plain_xy(raw)
            if xy is None:
                continue
            if raw.crs not in declared:
                try:
                    declared[raw.crs] = parse_crs(raw.crs)
                except GeometryRejected:
                    declared[raw.crs] = -1  # refused: normalise_geometry words it
            epsg = declared[raw.crs]
            if epsg == -1 or (epsg is not None and epsg not in SUPPORTED_EPSG):
                continue
            plain.append(i)
            xs.append(xy[0])
            ys.append(xy[1])
            epsgs.append(0 if epsg is None else epsg)
    if plain:
        _points_as_arrays(
            raws, out, plain, np.array(xs), np.array(ys), np.array(epsgs), boxes, out_of_area, placeholder
        )
    for i, raw in enumerate(raws):
        if out[i] is None:
            try:
                out[i] = normalise_geometry(
                    raw, expected_type, area, out_of_area=out_of_area, placeholder=placeholder, area_name=area_name
                )
            except GeometryRejected as bad:
                out[i] = bad
    return out  # type: ignore[return-value]  # every slot filled above


def _plain_xy(raw: RawGeometry) -> tuple[float, float] | None:
    """(x, y) of a point ``_plain_point`` reads the same way, or None (then ``normalise_geometry`` decides)."""
    if raw.encoding is GeometryEncoding.GEOJSON:
        m = _GEOJSON_POINT.fullmatch(raw.value)
        return (float(m.group(1)), float(m.group(2))) if m else None
    if raw.encoding is GeometryEncoding.WKT:  # what a record's x/y or geopoint columns become (carrier_geometry)
        try:
            text = raw.value.decode("ascii")
        except UnicodeDecodeError:
            return None
        w = _WKT_POINT.fullmatch(text)  # _plain_point's own expression
        return (float(w.group(1)), float(w.group(2))) if w else None
    return None


def _inside_any(boxes: tuple[Box, ...], x: Any, y: Any) -> Any:
    inside = np.zeros(len(x), dtype=bool)
    for b in boxes:
        inside |= (b[0] <= x) & (x <= b[2]) & (b[1] <= y) & (y <= b[3])
    return inside


def _points_as_arrays(
    raws: list[RawGeometry],
    out: list[NormalisedGeometry | GeometryRejected | None],
    plain: list[int],
    x: Any,
    y: Any,
    epsg: Any,
    boxes: tuple[Box, ...],
    out_of_area: str,
    placeholder: str,
) -> None:
    """``_normalise_point``'s rules over arrays; the points they would refuse are left for it (``out`` None)."""
    ok = np.isfinite(x) & np.isfinite(y)
    for px, py in PLACEHOLDERS:
        ok &= ~((np.abs(x - px) < 1e-9) & (np.abs(y - py) < 1e-9))  # placeholders: normalise_geometry decides
    inferred = epsg == 0
    guess = np.select(
        [
            (x >= -180) & (x <= 180) & (y >= -90) & (y <= 90),
            (x >= 1_000_000) & (x <= 2_300_000) & (y >= 5_000_000) & (y <= 5_400_000),
            (x >= 0) & (x <= 1_300_000) & (y >= 6_000_000) & (y <= 7_200_000),
            (x >= -700_000) & (x <= 1_200_000) & (y >= 5_000_000) & (y <= 6_700_000),
        ],
        [4326, 3946, 2154, 3857],
        default=0,
    )  # infer_epsg, in its order
    epsg = np.where(inferred, guess, epsg)
    ok &= epsg != 0  # no CRS recognised: refused
    lon, lat = x.copy(), y.copy()
    for code in np.unique(epsg[ok & (epsg != 4326)]):
        sel = ok & (epsg == code)
        tx, ty = _transformer(int(code)).transform(x[sel], y[sel])
        lon[sel], lat[sel] = tx, ty
    ok &= np.isfinite(lon) & np.isfinite(lat)
    inside = _inside_any(boxes, lon, lat)
    swap = ~inside & _inside_any(boxes, lat, lon) & ((epsg == 4326) | (epsg == 4171))
    lon, lat = np.where(swap, lat, lon), np.where(swap, lon, lat)
    outside = ~(inside | swap)
    if out_of_area == "reject":
        ok &= ~outside
    keep = np.flatnonzero(ok)
    if len(keep) == 0:
        return
    points = shapely.points(np.column_stack((lon[keep], lat[keep])))
    projected = epsg[keep] != 4326
    if projected.any():
        points[projected] = shapely.set_precision(points[projected], 1e-7)
    for j, k in enumerate(keep.tolist()):
        code = int(epsg[k])
        corrections: list[str] = []
        if inferred[k] and code != 4326:
            corrections.append(f"crs_inferred:{code}")
        if swap[k]:
            corrections.append("axis_swapped")
        if outside[k]:
            corrections.append("flagged:out_of_area")
        out[plain[k]] = NormalisedGeometry(points[j], code, tuple(corrections))
