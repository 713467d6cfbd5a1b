"""Geometry as it really arrives: CRSs, swapped axes, invalid polygons, junk."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contract.messages import GeometryEncoding, RawGeometry
from services.normalise.domain.geometry_normalisation import (
    GeometryRejected,
    infer_epsg,
    normalise_geometry,
    parse_crs,
)

LYON = (4.55, 45.45, 5.20, 46.05)


def gj(obj: object, crs: str | None = None) -> RawGeometry:
    return RawGeometry(GeometryEncoding.GEOJSON, json.dumps(obj).encode(), crs)


def wkt(text: str, crs: str | None = None) -> RawGeometry:
    return RawGeometry(GeometryEncoding.WKT, text.encode(), crs)


@pytest.mark.parametrize(
    ("declared", "epsg"),
    [
        ("urn:ogc:def:crs:OGC:1.3:CRS84", 4326),
        ("EPSG:4326", 4326),
        ("urn:ogc:def:crs:EPSG::2154", 2154),
        ("EPSG:3946", 3946),
        ("http://www.opengis.net/def/crs/EPSG/0/4171", 4171),
        ("3857", 3857),
        (None, None),
        ("", None),
    ],
)
def test_declared_crs_is_parsed(declared: str | None, epsg: int | None) -> None:
    assert parse_crs(declared) == epsg


@pytest.mark.parametrize(
    ("x", "y", "epsg"),
    [
        (4.8357, 45.7640, 4326),
        (842_000, 6_519_000, 2154),
        (1_842_000, 5_175_000, 3946),
        (538_000, 5_740_000, 3857),
        (99_999_999, 5, None),
    ],
)
def test_crs_is_inferred_from_value_range(x: float, y: float, epsg: int | None) -> None:
    assert infer_epsg(x, y) == epsg


@pytest.mark.parametrize(
    ("raw", "lon", "lat", "corrections"),
    [
        (gj({"type": "Point", "coordinates": [4.8357, 45.764]}, "urn:ogc:def:crs:OGC:1.3:CRS84"), 4.8357, 45.764, ()),
        (
            gj({"type": "Point", "coordinates": [45.7268, 4.893]}, "urn:ogc:def:crs:OGC:1.3:CRS84"),
            4.893,
            45.7268,
            ("axis_swapped",),
        ),  # the toilets file's defect
        (wkt("POINT (45.7268 4.893)", "EPSG:4171"), 4.893, 45.7268, ("axis_swapped",)),
        (wkt("POINT (842000 6519000)"), 4.8270, 45.7560, ("crs_inferred:2154",)),
        (wkt("POINT (842000 6519000)", "EPSG:2154"), 4.8270, 45.7560, ()),
        (wkt("POINT (1842000 5175000)", "EPSG:3946"), 4.8262, 45.7604, ()),
        (wkt("POINT (538000 5740000)", "EPSG:3857"), 4.8330, 45.7476, ()),  # lat = atan(sinh(y/R))
        (wkt("POINT Z (4.8357 45.764 170)"), 4.8357, 45.764, ()),
    ],
)
def test_points_end_in_wgs84_lon_lat(raw: RawGeometry, lon: float, lat: float, corrections: tuple[str, ...]) -> None:
    out = normalise_geometry(raw, "Point", LYON)
    assert out.geometry.x == pytest.approx(lon, abs=2e-3)
    assert out.geometry.y == pytest.approx(lat, abs=2e-3)
    assert out.corrections == corrections
    assert not out.geometry.has_z


def test_self_intersecting_polygon_is_repaired_and_promoted() -> None:
    bowtie = {
        "type": "Polygon",
        "coordinates": [[[4.80, 45.70], [4.82, 45.72], [4.82, 45.70], [4.80, 45.72], [4.80, 45.70]]],
    }
    out = normalise_geometry(gj(bowtie), "MultiPolygon", LYON)
    assert out.geometry.geom_type == "MultiPolygon" and out.geometry.is_valid
    assert set(out.corrections) == {"promoted_to_multi", "repaired"}


@pytest.mark.parametrize(
    ("raw", "expected", "rule"),
    [
        (gj({"type": "Point", "coordinates": [0, 0]}), "Point", "placeholder_coordinates"),
        (gj({"type": "Point", "coordinates": [2.35, 48.85]}), "Point", "out_of_area"),  # Paris, not Lyon
        (wkt("POINT (1 1)"), "Point", "placeholder_coordinates"),
        (wkt("POLYGON ((0 0, 0 0, 0 0, 0 0))"), "Polygon", "placeholder_coordinates"),
        (wkt("POINT (NaN 45)"), "Point", "coordinates_not_finite"),
        (gj({"type": "Point", "coordinates": [4.8]}), "Point", "geometry_syntax"),
        (wkt("POINT (4.8 45.7"), "Point", "geometry_syntax"),
        (RawGeometry(GeometryEncoding.WKB, b"\x01\x02"), "Point", "geometry_syntax"),
        (gj({"type": "LineString", "coordinates": [[4.8, 45.7], [4.81, 45.71]]}), "Point", "geometry_type"),
        (wkt("POINT EMPTY"), "Point", "geometry_empty"),
        (wkt("POINT (4.8 45.7)", "EPSG:27572"), "Point", "crs"),
        (wkt("POINT (4.8 45.7)", "not a crs"), "Point", "crs"),
        (wkt("POINT (99999999 5)"), "Point", "crs"),
        (gj([1, 2]), "Point", "geometry_syntax"),
    ],
)
def test_bad_geometries_are_rejected_with_a_rule(raw: RawGeometry, expected: str, rule: str) -> None:
    with pytest.raises(GeometryRejected) as info:
        normalise_geometry(raw, expected, LYON)
    assert info.value.rule == rule


def test_enormous_geometry_is_refused_before_parsing() -> None:
    coords = [[4.8 + i * 1e-7, 45.7] for i in range(250_000)]
    with pytest.raises(GeometryRejected) as info:
        normalise_geometry(gj({"type": "MultiPoint", "coordinates": coords}), "MultiPoint", LYON)
    assert info.value.rule == "geometry_size"


@settings(max_examples=200, deadline=None)
@given(st.floats(4.6, 5.1), st.floats(45.5, 46.0), st.booleans())
def test_any_point_in_lyon_comes_back_in_place_whatever_its_axis_order(lon: float, lat: float, swapped: bool) -> None:
    coords = [lat, lon] if swapped else [lon, lat]
    out = normalise_geometry(gj({"type": "Point", "coordinates": coords}, "EPSG:4326"), "Point", LYON)
    assert out.geometry.x == pytest.approx(lon) and out.geometry.y == pytest.approx(lat)
    assert ("axis_swapped" in out.corrections) == swapped


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(list(GeometryEncoding)))
def test_random_geometry_bytes_are_rejections_not_crashes(data: bytes, enc: GeometryEncoding) -> None:
    with contextlib.suppress(GeometryRejected):
        normalise_geometry(RawGeometry(enc, data), "Point", LYON)


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        (wkt("POINT (1 1)"), "flagged:placeholder"),
        (gj({"type": "Point", "coordinates": [0, 0]}), "flagged:placeholder"),
        (gj({"type": "Point", "coordinates": [2.35, 48.85]}), "flagged:out_of_area"),
    ],
)
def test_a_flag_policy_accepts_the_feature_and_records_the_flag(raw: RawGeometry, rule: str) -> None:
    out = normalise_geometry(raw, "Point", LYON, out_of_area="flag", placeholder="flag")
    assert rule in out.corrections


def test_an_area_of_several_boxes_accepts_overseas_positions_and_swaps_per_box() -> None:
    france = ((-5.8, 41.2, 10.0, 51.3), (55.1, -21.5, 55.9, -20.8))  # with La Réunion
    assert normalise_geometry(wkt("POINT (55.45 -20.9)"), "Point", france).corrections == ()
    swapped = normalise_geometry(wkt("POINT (-20.9 55.45)"), "Point", france)
    assert swapped.corrections == ("axis_swapped",)
    assert (round(swapped.geometry.x, 2), round(swapped.geometry.y, 2)) == (55.45, -20.9)


def test_undeclared_lambert93_from_montpellier_is_recognised_by_its_range() -> None:
    # VilleMTP_MTP_Defibrilateurs.geojson, first feature: EPSG:2154 with no crs member
    out = normalise_geometry(
        gj({"type": "Point", "coordinates": [771027.9784, 6279070.6495]}), "Point", ((-5.8, 41.2, 10.0, 51.3),)
    )
    assert out.corrections == ("crs_inferred:2154",)
    assert abs(out.geometry.x - 3.8795) < 1e-3 and abs(out.geometry.y - 43.6071) < 1e-3


# --- the float-only point path must judge every point exactly as the general (shapely) path does ---

from services.normalise.domain.canonical_feature import wkb_2d  # noqa: E402
from services.normalise.domain.geometry_normalisation import normalise_general  # noqa: E402

_CRS = st.sampled_from(
    [
        None,
        "EPSG:4326",
        "urn:ogc:def:crs:OGC:1.3:CRS84",
        "EPSG:2154",
        "EPSG:3946",
        "EPSG:3857",
        "EPSG:4171",
        "EPSG:9999",
    ]
)
_XY = st.one_of(
    st.tuples(st.floats(4.5, 5.3), st.floats(45.3, 46.1)),  # Lyon, lon/lat
    st.tuples(st.floats(45.3, 46.1), st.floats(4.5, 5.3)),  # Lyon, swapped
    st.tuples(st.floats(780_000, 880_000), st.floats(6_500_000, 6_600_000)),  # Lambert-93
    st.tuples(st.floats(1_780_000, 1_880_000), st.floats(5_130_000, 5_230_000)),  # CC46
    st.tuples(st.floats(500_000, 600_000), st.floats(5_650_000, 5_800_000)),  # Web Mercator
    st.sampled_from([(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1e-10), (1e-10, 0.0), (1 + 5e-10, 1.0), (2e-9, 0.0)]),
    st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True)),
    st.tuples(st.integers(-(10**6), 10**7), st.integers(-(10**6), 10**7)),
)


def _outcome(f, raw: RawGeometry, policy: str):  # type: ignore[no-untyped-def]
    try:
        ng = f(raw, "Point", LYON, out_of_area=policy, placeholder=policy)
    except GeometryRejected as bad:
        return ("rejected", bad.rule, bad.en, bad.value)
    return (ng.geometry.geom_type, wkb_2d(ng.geometry), ng.source_epsg, ng.corrections)


@settings(max_examples=600, deadline=None)
@given(
    xy=_XY,
    z=st.one_of(st.none(), st.floats(-100, 1000)),
    crs=_CRS,
    as_wkt=st.booleans(),
    policy=st.sampled_from(["reject", "flag"]),
)
def test_point_fast_path_agrees_with_the_general_path(xy, z, crs, as_wkt, policy) -> None:  # type: ignore[no-untyped-def]
    x, y = xy
    coords = [x, y] if z is None else [x, y, z]
    if as_wkt:
        raw = wkt(f"POINT ({' '.join(repr(float(c)) for c in coords)})", crs)
    else:
        try:
            raw = gj({"type": "Point", "coordinates": coords}, crs)
        except ValueError:
            return
    assert _outcome(normalise_geometry, raw, policy) == _outcome(normalise_general, raw, policy)


def test_point_fast_path_is_taken_and_exercised() -> None:
    """The agreement above would be vacuous if the fast path were never used: check it reads plain points."""
    from services.normalise.domain.geometry_normalisation import _plain_point

    assert _plain_point(gj({"type": "Point", "coordinates": [4.8, 45.7]})) == (4.8, 45.7)
    assert _plain_point(wkt("POINT (4.8 45.7)")) == (4.8, 45.7)
    assert _plain_point(wkt("point(4.8 45.7 12)")) == (4.8, 45.7)
    assert _plain_point(gj({"type": "Point", "coordinates": [True, 45.7]})) is None
    assert _plain_point(gj({"type": "Feature", "geometry": {"type": "Point", "coordinates": [4.8, 45.7]}})) is None
    assert _plain_point(wkt("POINT Z (4.8 45.7 1)")) is None


@pytest.mark.parametrize(
    "geometry",
    [
        "POINT (4.8 45.7)",
        "POINT Z (4.8 45.7 3)",
        "LINESTRING (0 0, 1 1)",
        "POLYGON ((0 0, 1 0, 1 1, 0 0))",
        "POINT EMPTY",
    ],
)
def test_wkb_2d_matches_shapely(geometry: str) -> None:
    import shapely

    g = shapely.from_wkt(geometry)
    assert wkb_2d(g) == shapely.to_wkb(g, output_dimension=2, byte_order=1, include_srid=False)
