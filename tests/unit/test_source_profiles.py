"""Source profiles: applying one is a pure function; suggesting one from real files finds the position, the
identity, the commune and the key fields; the records it yields are canonical (the normaliser's own
validation takes them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import GeometryEncoding, RawGeometry
from services.ingest.domain.change_events import upsert_events
from services.ingest.domain.profile_suggestion import crs_of, suggest_profile
from services.ingest.domain.push_records import parse_batch
from services.ingest.domain.source_profiles import (
    EXTRA_ATTRIBUTE,
    FEATURE,
    GEOJSON_CELL,
    LATLON,
    POINT_TEXT,
    WKT_CELL,
    XY,
    FieldMapping,
    GeometrySource,
    ProfileError,
    SourceProfile,
    apply_profile,
    apply_to_records,
    profile_from_dict,
    profile_to_dict,
)
from services.ingest.domain.source_records import SourceRecord, reader_for
from services.normalise.domain.attribute_validation import CompiledSchema

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "source-profiles"
CATALOGUE = DatasetCatalogue.load()


def _record(**attrs: object) -> SourceRecord:
    return SourceRecord(7, dict(attrs), None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("geometry", "attrs", "expected"),
    [
        (GeometrySource(XY, ("X", "Y"), "EPSG:2154"), {"X": "842000,5", "Y": "6519000"}, b"POINT (842000.5 6519000)"),
        (GeometrySource(XY, ("lat", "lon"), "EPSG:4326", LATLON), {"lat": "45.7", "lon": "4.8"}, b"POINT (4.8 45.7)"),
        (GeometrySource(POINT_TEXT, ("geo",), "EPSG:4326", LATLON), {"geo": "45.76, 4.83"}, b"POINT (4.83 45.76)"),
        (GeometrySource(POINT_TEXT, ("geo",), "EPSG:4326"), {"geo": "[4.83, 45.76]"}, b"POINT (4.83 45.76)"),
        (
            GeometrySource(WKT_CELL, ("wkt",), "EPSG:3946"),
            {"wkt": " POINT (1842000 5176000) "},
            b"POINT (1842000 5176000)",
        ),
        (
            GeometrySource(GEOJSON_CELL, ("shape",)),
            {"shape": '{"type": "Point", "coordinates": [4.8, 45.7]}'},
            b'{"type": "Point", "coordinates": [4.8, 45.7]}',
        ),
    ],
)
def test_each_geometry_form_is_read_with_its_crs(geometry: GeometrySource, attrs: dict, expected: bytes) -> None:
    out = apply_profile(SourceProfile("drinking_fountains", geometry=geometry), _record(**attrs))
    assert out.record.geometry is not None
    assert out.record.geometry.value == expected
    assert out.record.geometry.crs == geometry.crs


def test_a_missing_or_unreadable_position_gives_no_geometry() -> None:
    xy = SourceProfile("drinking_fountains", geometry=GeometrySource(XY, ("X", "Y")))
    assert apply_profile(xy, _record(X="", Y="45.7")).record.geometry is None
    assert apply_profile(xy, _record(X="abc", Y="45.7")).record.geometry is None
    text = SourceProfile("drinking_fountains", geometry=GeometrySource(POINT_TEXT, ("g",)))
    assert apply_profile(text, _record(g="1;2;3")).record.geometry is None


def test_the_file_geometry_takes_the_profile_crs_when_it_names_one() -> None:
    raw = RawGeometry(GeometryEncoding.GEOJSON, b'{"type":"Point","coordinates":[771027.9,6279070.6]}', None)
    profile = SourceProfile("defibrillators", geometry=GeometrySource(FEATURE, (), "EPSG:2154"))
    out = apply_profile(profile, SourceRecord(1, {}, raw))
    assert out.record.geometry is not None and out.record.geometry.crs == "EPSG:2154"


def test_fields_values_identity_commune_and_extras() -> None:
    profile = SourceProfile(
        "drinking_fountains",
        fields=(
            FieldMapping("PMR", "accessible_pmr", (("Oui", True), ("Non", False), ("x", True))),
            FieldMapping("Type", "type_fontaine", (("Wallace", "fontaine type Wallace"),)),
        ),
        geometry=GeometrySource(FEATURE),
        id_columns=("quartier", "num"),
        commune_column="INSEE",
    )
    out = apply_profile(
        profile,
        _record(PMR="oui", Type="Wallace", quartier="Q3", num=12, INSEE="69381", Remarque="près du kiosque"),
        identity_field="id",
    )
    attrs = out.record.attributes
    assert attrs["accessible_pmr"] is True  # value maps ignore case
    assert attrs["type_fontaine"] == "fontaine type Wallace"
    assert attrs["id"] == "Q3-12"
    assert out.commune == "69381" and out.record.commune == "69381"
    # the column no field takes is kept with the record, not dropped
    assert json.loads(str(attrs[EXTRA_ATTRIBUTE])) == {"Remarque": "près du kiosque"}
    assert out.extra == ("Remarque",)
    assert "PMR" not in attrs and "INSEE" not in attrs
    # a value outside the map is passed as it is: validation says what is wrong with it
    assert apply_profile(profile, _record(PMR="peut-être")).record.attributes["accessible_pmr"] == "peut-être"


def test_profile_documents_round_trip_and_bad_ones_are_refused() -> None:
    profile = SourceProfile(
        "delivery_areas",
        fields=(FieldMapping("cp", "CODE_POSTAL", (("69003", "69003"),), 0.9, "alias"),),
        geometry=GeometrySource(POINT_TEXT, ("geo_point_2d",), "EPSG:4326", LATLON),
        id_columns=("id",),
        commune_column="code_insee",
        note="checked by the clerk",
    )
    assert profile_from_dict(json.loads(json.dumps(profile_to_dict(profile)))) == profile
    for bad in (
        {"dataset": "x", "geometry": {"kind": "teleport"}},
        {"dataset": "x", "geometry": {"kind": "xy", "columns": ["X"]}},
        {"dataset": "x", "geometry": {"kind": "feature", "order": "yx"}},
        {"dataset": "x", "fields": [{"column": "a"}]},
        {"dataset": "x", "fields": [{"column": "a", "field": "b", "values": {"o": [1]}}]},
        {"format": "other/9", "dataset": "x"},
        ["not", "an", "object"],
    ):
        with pytest.raises(ProfileError):
            profile_from_dict(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (4.83, 45.76, ("EPSG:4326", "lonlat")),
        (45.76, 4.83, ("EPSG:4326", "latlon")),
        (842000.0, 6519000.0, ("EPSG:2154", "lonlat")),  # Lyon in Lambert-93
        (1842000.0, 5176000.0, ("EPSG:3946", "lonlat")),  # Lyon in CC46
        (771027.9, 6279070.6, ("EPSG:2154", "lonlat")),  # Montpellier in Lambert-93
        (1.0, 1.0, None),  # a placeholder is not a position
        (55.45, -20.9, ("EPSG:4326", "lonlat")),  # La Réunion
    ],
)
def test_crs_and_axis_order_are_recognised_from_the_numbers(x: float, y: float, expected: object) -> None:
    assert crs_of(x, y) == expected


# --------------------------------------------------------------------------- suggestions on real files
def _suggest(name: str, dataset: str):  # type: ignore[no-untyped-def]
    path = SAMPLES / name
    records = list(reader_for(path.name)(path.read_bytes()))
    definition = CATALOGUE.get(dataset)
    assert definition is not None
    return records, definition, suggest_profile(records, definition, own_geometry=not name.endswith(".csv"))


def _validate(definition, records):  # type: ignore[no-untyped-def]
    """The normaliser's attribute validation of the canonical records: (field, rule) of every error but those
    of the position's columns, which the normaliser writes from the geometry."""
    schema = CompiledSchema(definition.table_schema, definition.aliases)
    carriers = {definition.geometry.x_field, definition.geometry.y_field, definition.geometry.field}
    return {(e.field, e.rule) for r in records for e in schema.validate(r.attributes).errors if e.field not in carriers}


def test_metropole_fountains_layer_maps_id_commune_and_its_own_geometry() -> None:
    records, definition, s = _suggest("fontaines_potables.first40.geojson", "drinking_fountains")
    mapped = {m.column: m.field for m in s.profile.fields}
    assert mapped["id"] == "id" and mapped["insee"] == "code_commune_insee"
    assert s.profile.geometry.kind == FEATURE and s.profile.commune_column == "insee"
    assert set(s.unmapped_columns) == {"identifiant", "anneepose", "commune", "source", "gid"}
    # the report names what the layer lacks for the national schema
    assert {f for f, required in s.missing_fields if required} == {
        "type_fontaine",
        "conditions_acces",
        "accessible_pmr",
        "remplissage_contenant_possible",
    }
    canonical = apply_to_records(s.profile, records, definition.identity_fields)
    assert all(r.attributes["id"] and r.attributes["code_commune_insee"] == r.commune for r in canonical)
    assert all(r.geometry is not None for r in canonical)
    assert _validate(definition, canonical) == {(f, "required") for f, req in s.missing_fields if req}


def test_a_commune_layout_is_fully_mapped_values_included() -> None:
    records, definition, s = _suggest("fontaines_commune.csv", "drinking_fountains")
    mapped = {m.column: m.field for m in s.profile.fields}
    assert mapped == {
        "Identifiant": "id",
        "Type de fontaine": "type_fontaine",
        "Code INSEE": "code_commune_insee",
        "Conditions d'accès": "conditions_acces",
        "PMR": "accessible_pmr",
        "Remplissage gourde": "remplissage_contenant_possible",
    }
    assert s.profile.geometry == GeometrySource(POINT_TEXT, ("Coordonnées",), "EPSG:4326", LATLON)
    assert not [f for f, required in s.missing_fields if required]
    assert set(s.unmapped_columns) == {"Commune", "Source"}
    canonical = apply_to_records(s.profile, records, definition.identity_fields)
    assert _validate(definition, canonical) == set()
    first = canonical[0]
    assert first.attributes["type_fontaine"] == "borne fontaine" and first.attributes["accessible_pmr"] is True
    assert first.geometry is not None and first.geometry.value == b"POINT (4.8158951 45.7574587)"


def test_hauts_de_seine_delivery_areas_geometry_in_a_cell_and_commune_column() -> None:
    records, definition, s = _suggest("aires-de-livraison-hauts-de-seine.first20.csv", "delivery_areas")
    mapped = {m.column: m.field for m in s.profile.fields}
    assert mapped["id"] == "ID" and mapped["cp"] == "CODE_POSTAL" and mapped["longueur"] == "LONGUEUR"
    assert s.profile.geometry.kind in (GEOJSON_CELL, POINT_TEXT)
    assert s.profile.commune_column == "code_insee"
    assert ("TYPE", ("LIVRAISON",)) in s.unmapped_values or any(f == "TYPE" for f, _ in s.unmapped_values)
    canonical = apply_to_records(s.profile, records, definition.identity_fields)
    events = list(
        upsert_events(
            canonical,
            definition,
            commune=None,
            source="t",
            sequence=1,
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
            new_id=lambda: "e",
        )
    )
    # each record goes under its own commune, read from the file's code_insee column
    assert [e.commune for e in events] == [r.attributes["code_insee"] for r in records]
    assert {e.commune for e in events} == {"92012", "92024"}
    assert all(e.feature_id and e.geometry is not None for e in events)


def test_montpellier_defibrillators_csv_and_undeclared_lambert93_geojson() -> None:
    records, definition, s = _suggest("VilleMTP_MTP_Defibrillateurs.first20.csv", "defibrillators")
    assert s.profile.geometry == GeometrySource(XY, ("Coord_X", "Coord_Y"), "EPSG:4326")
    assert s.profile.id_columns == ("Id",)
    assert {m.column: m.field for m in s.profile.fields}["Nom"] == "nom"
    canonical = apply_to_records(s.profile, records, definition.identity_fields)
    assert canonical[0].attributes["num_serie"] == "1"
    assert canonical[0].geometry is not None and canonical[0].geometry.value.startswith(b"POINT (3.879")
    _, _, g = _suggest("VilleMTP_MTP_Defibrilateurs.first12.geojson", "defibrillators")
    assert g.profile.geometry.kind == FEATURE and g.profile.geometry.crs == "EPSG:2154"


def test_push_records_in_a_commune_layout_go_through_the_profile() -> None:
    definition = CATALOGUE.get("drinking_fountains")
    assert definition is not None
    profile = SourceProfile(
        "drinking_fountains",
        fields=(FieldMapping("Identifiant", "id"), FieldMapping("PMR", "accessible_pmr", (("Oui", True),))),
        geometry=GeometrySource(POINT_TEXT, ("Coordonnées",), "EPSG:4326", LATLON),
        commune_column="Code INSEE",
    )
    body = {"records": [{"Identifiant": "BF-1", "PMR": "Oui", "Code INSEE": "69381", "Coordonnées": "45.76, 4.83"}]}
    batch = parse_batch(
        body,
        definition,
        commune=None,
        source="http",
        sequence=1,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        new_id=lambda: "e1",
        profile=profile,
    )
    assert not batch.refused
    (accepted,) = batch.accepted
    ev = accepted.event
    assert (ev.feature_id, ev.commune) == ("BF-1", "69381")
    assert ev.attributes["accessible_pmr"] is True
    assert ev.geometry is not None and ev.geometry.value == b"POINT (4.83 45.76)"
    # a commune's token: a record of another commune (read by the profile) is refused, not relabelled
    other = parse_batch(
        body,
        definition,
        commune="69266",
        source="http",
        sequence=1,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        new_id=lambda: "e2",
        profile=profile,
    )
    assert [r.reason for r in other.refused] == ["forbidden_commune"]


def test_every_bundled_sample_of_make_run_goes_through_its_profile() -> None:
    from deploy.local.__main__ import REPO_ROOT
    from deploy.local.__main__ import SAMPLES as BUNDLED

    assert len({dataset for _, dataset, _ in BUNDLED}) >= 11
    for path, dataset, _commune in BUNDLED:
        profile_path = REPO_ROOT / f"{path}.profile.json"
        profile = profile_from_dict(json.loads(profile_path.read_text(encoding="utf-8")))
        assert profile.dataset == dataset, path
        definition = CATALOGUE.get(dataset)
        assert definition is not None
        records = list(reader_for(path)((REPO_ROOT / path).read_bytes()))
        canonical = apply_to_records(profile, records, definition.identity_fields)
        events = list(
            upsert_events(
                canonical,
                definition,
                commune=_commune,
                source="t",
                sequence=1,
                occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
                new_id=lambda: "e",
            )
        )
        has_geometry = definition.geometry.carrier != "none"  # subsidies have no position
        assert events and all(e.feature_id and (e.geometry is not None or not has_geometry) for e in events), path
        # every record under an INSEE code, but the few the source leaves without one (2 Vélo'v stations)
        assert sum(len(e.commune) == 5 for e in events) >= 0.95 * len(events), path
