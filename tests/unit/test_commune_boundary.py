"""Positions checked against the boundary of the commune that sent them (real, simplified boundaries)."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime

import pytest
from shapely.geometry import Point, box

from services.contract.datasets.catalogue import (
    BOUNDARIES_FILE,
    DatasetCatalogue,
    GeometrySpec,
    load_commune_boundaries,
)
from services.contract.messages import ChangeEvent, GeometryEncoding, Operation, RawGeometry
from services.normalise.domain.canonical_feature import Candidate, EventNormaliser, Invalid
from services.normalise.domain.commune_boundary import CommuneBoundaries

NOW = datetime(2026, 6, 1, tzinfo=UTC)
VILLEURBANNE_TOWN_HALL = (4.8796, 45.7663)  # place Lazare-Goujon
LYON_PLACE_BELLECOUR = (4.8320, 45.7578)


@pytest.fixture(scope="module")
def catalogue() -> DatasetCatalogue:
    return DatasetCatalogue.load()


@pytest.fixture(scope="module")
def normaliser(catalogue: DatasetCatalogue) -> EventNormaliser:
    return EventNormaliser(catalogue)


def test_the_58_communes_and_lyons_arrondissements_are_known() -> None:
    raw = json.loads(BOUNDARIES_FILE.read_text(encoding="utf-8"))
    kinds = [f["properties"]["type"] for f in raw["features"]]
    assert kinds.count("COM") == 58 and kinds.count("ARM") == 9
    codes = load_commune_boundaries()
    assert {"69123", "69266", "69149", "69381", "69389"} <= set(codes)
    assert "69152" not in codes  # Pierre-Bénite merged into Oullins-Pierre-Bénite (69149) in 2024


def test_inside_outside_and_distance_on_the_real_boundaries(catalogue: DatasetCatalogue) -> None:
    b = CommuneBoundaries(catalogue.commune_boundaries)
    assert b.outside("69266", Point(*VILLEURBANNE_TOWN_HALL), 0) is None
    assert b.outside("69123", Point(*LYON_PLACE_BELLECOUR), 0) is None
    assert b.outside("69382", Point(*LYON_PLACE_BELLECOUR), 0) is None  # Bellecour is in the 2nd arrondissement
    out = b.outside("69266", Point(*LYON_PLACE_BELLECOUR), 100)  # Bellecour sent as Villeurbanne
    assert out is not None and out.commune == "69266" and 1_000 < out.distance_m < 5_000
    assert out.flag == f"outside_commune:69266:{out.distance_m:.0f}m"
    assert b.outside("75056", Point(*LYON_PLACE_BELLECOUR), 0) is None  # boundary unknown: not checked


@pytest.mark.parametrize(("metres_outside", "tolerance", "flagged"), [(0, 0, False), (40, 50, False), (60, 50, True)])
def test_the_tolerance_is_in_metres(metres_outside: float, tolerance: float, flagged: bool) -> None:
    square = box(5.0, 45.0, 5.01, 45.01)
    b = CommuneBoundaries({"99001": square.__geo_interface__})
    lon = 5.0 - metres_outside / (111_195.0 * math.cos(math.radians(45.005)))
    out = b.outside("99001", Point(lon, 45.005), tolerance)
    assert (out is not None) is flagged
    if out is not None:
        assert out.distance_m == pytest.approx(metres_outside, abs=1)


def test_a_polygon_is_judged_at_a_point_inside_it() -> None:
    b = CommuneBoundaries({"99001": box(5.0, 45.0, 5.01, 45.01).__geo_interface__})
    mostly_inside = box(5.005, 45.005, 5.0105, 45.006)  # pokes 39 m over the eastern border
    assert b.outside("99001", mostly_inside, 0) is None
    assert b.outside("99001", box(5.02, 45.0, 5.03, 45.01), 0) is not None


def event(dataset: str, commune: str, lon: float, lat: float, attributes: dict[str, object]) -> ChangeEvent:
    return ChangeEvent(
        str(uuid.uuid4()),
        dataset,
        commune,
        str(attributes.get("gid") or attributes.get("id_bureau")),
        Operation.UPSERT,
        NOW,
        1,
        "test",
        RawGeometry(GeometryEncoding.GEOJSON, json.dumps({"type": "Point", "coordinates": [lon, lat]}).encode()),
        attributes,  # type: ignore[arg-type]
    )


def test_flag_policy_accepts_and_records_the_flag(normaliser: EventNormaliser) -> None:
    assert normaliser.catalogue.get("public_toilets").geometry.outside_commune == "flag"  # type: ignore[union-attr]
    inside = normaliser.normalise(
        event("public_toilets", "69266", *VILLEURBANNE_TOWN_HALL, {"gid": 1, "codinsee": "69266"}), NOW
    )
    assert isinstance(inside, Candidate) and inside.feature is not None
    assert not [c for c in inside.feature.corrections if c.startswith("outside_commune")]
    outside = normaliser.normalise(
        event("public_toilets", "69266", *LYON_PLACE_BELLECOUR, {"gid": 2, "codinsee": "69266"}), NOW
    )
    assert isinstance(outside, Candidate) and outside.feature is not None
    assert [c for c in outside.feature.corrections if c.startswith("outside_commune:69266:")]


def test_reject_policy_rejects_with_a_specific_reason(normaliser: EventNormaliser) -> None:
    assert normaliser.catalogue.get("polling_stations").geometry.outside_commune == "reject"  # type: ignore[union-attr]
    station = {"id_bureau": "69266-1", "code_insee": "69266", "numero": 1, "nom_lieu": "Hôtel de ville"}
    ok = normaliser.normalise(event("polling_stations", "69266", *VILLEURBANNE_TOWN_HALL, station), NOW)
    assert isinstance(ok, Candidate)
    bad = normaliser.normalise(event("polling_stations", "69266", *LYON_PLACE_BELLECOUR, station), NOW)
    assert isinstance(bad, Invalid) and bad.reason == "invalid_geometry"
    (err,) = bad.errors
    assert err.rule == "outside_commune" and err.field == "geometry"
    assert "69266" in err.message_en and "hors des limites" in err.message_fr


def test_the_policy_fields_are_checked_when_a_definition_is_loaded() -> None:
    from services.contract.datasets.catalogue import DefinitionError, _definition_from_dict

    schema = {"fields": [{"name": "id", "type": "string"}]}
    raw = {"id": "x", "title": {"fr": "x", "en": "x"}, "identity_field": "id", "area": "metropole_de_lyon"}
    for bad in ({"outside_commune": "ignore"}, {"commune_tolerance_m": -1}):
        with pytest.raises(DefinitionError):
            _definition_from_dict({**raw, "geometry": {"type": "Point", **bad}}, schema, "x")
    d = _definition_from_dict({**raw, "geometry": {"type": "Point"}}, schema, "x")
    assert d.geometry == GeometrySpec(type="Point")
    assert (d.geometry.outside_commune, d.geometry.commune_tolerance_m) == ("flag", 100.0)
