"""``normalise_geometries`` (a batch, points judged as arrays) against ``normalise_geometry`` record for record:
same geometry to the bit, same CRS, same corrections, same refusal in the same words."""

from __future__ import annotations

import json

import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import GeometryEncoding, RawGeometry
from services.normalise.domain import geometry_normalisation as gn
from services.normalise.domain.geometry_normalisation import (
    GeometryRejected,
    NormalisedGeometry,
    normalise_geometries,
    normalise_geometry,
)
from tests.unit.bundled_samples import sample_events

LYON = ((4.6, 45.5, 5.2, 46.0),)
NAME = ("the territory of Lyon", "du territoire de Lyon")
TO_2154 = Transformer.from_crs("EPSG:4326", "EPSG:2154", always_xy=True)
TO_3946 = Transformer.from_crs("EPSG:4326", "EPSG:3946", always_xy=True)
TO_3857 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)


def outcome(
    raw: RawGeometry, expected: str, out_of_area: str, placeholder: str
) -> NormalisedGeometry | GeometryRejected:
    try:
        return normalise_geometry(raw, expected, LYON, out_of_area=out_of_area, placeholder=placeholder, area_name=NAME)
    except GeometryRejected as bad:
        return bad


def comparable(o: NormalisedGeometry | GeometryRejected) -> tuple[object, ...]:
    if isinstance(o, GeometryRejected):
        return ("refused", o.rule, o.en, o.fr, o.value, tuple(comparable(a) for a in o.also))
    return ("ok", shapely.to_wkb(o.geometry), o.geometry.geom_type, o.source_epsg, o.corrections)


def number_text(v: float, style: int) -> str:
    if style == 0:
        return json.dumps(v)
    if style == 1:
        return f"{v:.7f}"
    if style == 2:
        return f"{v:.3e}"
    return str(int(v)) if abs(v) < 1e15 else json.dumps(v)


@st.composite
def positions(draw: st.DrawFn) -> tuple[float, float]:
    lon, lat = draw(st.floats(4.4, 5.4)), draw(st.floats(45.3, 46.2))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return lat, lon  # axes swapped
    if kind == 1:
        return tuple(map(float, TO_2154.transform(lon, lat)))  # type: ignore[return-value]
    if kind == 2:
        return tuple(map(float, TO_3946.transform(lon, lat)))  # type: ignore[return-value]
    if kind == 3:
        return tuple(map(float, TO_3857.transform(lon, lat)))  # type: ignore[return-value]
    if kind == 4:
        return draw(st.sampled_from([(0.0, 0.0), (1.0, 1.0), (-0.0, 0.0), (2.35, 48.85), (1e400, 45.0)]))
    if kind == 5:
        return draw(st.floats(allow_nan=False, allow_infinity=False)), draw(st.floats(-1e8, 1e8))
    return lon, lat


@st.composite
def raw_points(draw: st.DrawFn) -> RawGeometry:
    x, y = draw(positions())
    style = draw(st.integers(0, 3))
    space = draw(st.sampled_from(["", " ", "\n", "\f", "\t "]))
    z = draw(st.sampled_from(["", ", 12", ", 1.5e2", ", true"]))
    coords = f"[{space}{number_text(x, style)},{space}{number_text(y, style)}{z}]"
    form = draw(st.integers(0, 6))
    if form == 0:
        text = json.dumps({"coordinates": [x, y], "type": "Point"})  # another key order
    elif form == 1:
        text = f'{{"type": "Feature", "geometry": {{"type": "Point", "coordinates": {coords}}}}}'
    elif form == 2:
        text = f'{{"type":"LineString","coordinates":[{coords},{coords}]}}'
    else:
        text = f'{space}{{"type":{space}"Point", "coordinates": {coords}}}{space}'
    crs = draw(
        st.sampled_from(
            [None, None, "EPSG:4326", "EPSG:2154", "urn:ogc:def:crs:OGC:1.3:CRS84", "EPSG:9999", "n'importe"]
        )
    )
    if draw(st.integers(0, 4)) == 0:
        word = draw(st.sampled_from(["POINT", "point", "Point Z", "POINT"]))
        wkt = f"{space}{word}{space}({number_text(x, style)} {number_text(y, style)}{z.replace(',', '')})"
        return RawGeometry(GeometryEncoding.WKT, wkt.encode(), crs)
    return RawGeometry(GeometryEncoding.GEOJSON, text.encode(), crs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(raw_points(), max_size=30),
    st.sampled_from(["Point", "MultiPoint"]),
    st.sampled_from(["reject", "flag"]),
    st.sampled_from(["reject", "flag"]),
)
def test_a_batch_gives_what_each_record_gives(
    raws: list[RawGeometry], expected: str, out_of_area: str, placeholder: str
) -> None:
    batch = normalise_geometries(raws, expected, LYON, out_of_area=out_of_area, placeholder=placeholder, area_name=NAME)
    assert [comparable(o) for o in batch] == [comparable(outcome(r, expected, out_of_area, placeholder)) for r in raws]


def test_plain_points_take_the_array_path(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A batch of plain points is judged without one call to the per-record path; the others still are."""
    calls: list[RawGeometry] = []
    per_record = gn.normalise_geometry

    def counting(raw: RawGeometry, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(raw)
        return per_record(raw, *args, **kwargs)

    monkeypatch.setattr(gn, "normalise_geometry", counting)
    plain = [
        RawGeometry(GeometryEncoding.GEOJSON, f'{{"type": "Point", "coordinates": [4.8{i}, 45.7]}}'.encode())
        for i in range(50)
    ]
    swapped = RawGeometry(GeometryEncoding.GEOJSON, b'{"type": "Point", "coordinates": [45.7, 4.85]}')
    lambert = RawGeometry(GeometryEncoding.GEOJSON, b'{"type": "Point", "coordinates": [842000.5, 6519000.25]}')
    outside = RawGeometry(GeometryEncoding.GEOJSON, b'{"type": "Point", "coordinates": [2.35, 48.85]}')
    wkt = RawGeometry(GeometryEncoding.WKT, b"POINT (4.85 45.75)")  # as carrier_geometry builds it
    got = normalise_geometries([*plain, swapped, lambert, outside, wkt], "Point", LYON, area_name=NAME)
    assert calls == [outside]  # only the refusal is worded by the per-record path
    assert got[50].corrections == ("axis_swapped",)  # type: ignore[union-attr]
    assert got[51].corrections == ("crs_inferred:2154",)  # type: ignore[union-attr]
    assert isinstance(got[52], GeometryRejected) and got[52].rule == "out_of_area"
    assert comparable(got[53]) == comparable(normalise_geometry(wkt, "Point", LYON))


def test_the_bundled_toilets_batch_equals_per_record() -> None:

    d = DatasetCatalogue.load().get("public_toilets")
    assert d is not None
    raws = [e.geometry for e in sample_events("public_toilets", 600) if e.geometry is not None]
    assert len(raws) == 600
    spec = d.geometry
    batch = normalise_geometries(raws, spec.type, d.boxes, out_of_area=spec.out_of_area, placeholder=spec.placeholder)
    single = [
        normalise_geometry(r, spec.type, d.boxes, out_of_area=spec.out_of_area, placeholder=spec.placeholder)
        for r in raws
    ]
    assert [comparable(o) for o in batch] == [comparable(o) for o in single]
