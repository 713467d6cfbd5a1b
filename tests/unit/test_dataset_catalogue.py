"""The catalogue: every programme dataset defined, national schemas unmodified with their source, and the
normaliser reading each schema's way of carrying coordinates."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.contract.datasets.catalogue import DEFINITIONS_DIR, DatasetCatalogue, DefinitionError, load_definition
from services.contract.messages import ChangeEvent, GeometryEncoding, Operation, RawGeometry
from services.ingest.domain.change_events import upsert_events
from services.ingest.domain.source_records import SourceRecord, read_csv
from services.normalise.domain.canonical_feature import Candidate, EventNormaliser, Invalid

CAT = DatasetCatalogue.load()
NORMALISER = EventNormaliser(CAT)
NOW = datetime(2026, 11, 1, tzinfo=UTC)
NATIONAL = {
    "defibrillators": "atlasante/schema-dae",
    "carpool_places": "etalab/schema-lieux-covoiturage",
    "parking": "etalab/schema-stationnement",
    "taxi_ranks": "openmaraude/schema-stationstaxi",
    "delivery_areas": "CEREMA/schema-aire-livraison",
    "public_facilities": "scdl/equipements",
    "subsidies": "scdl/subventions",
    "drinking_fountains": "datagouv/schema-fontaine-eau",
}
OWN = {"public_toilets", "parks_gardens", "polling_stations", "markets", "notice_boards", "recycling_points"}


def test_every_programme_dataset_is_defined() -> None:
    assert set(CAT.ids()) >= set(NATIONAL) | OWN


@pytest.mark.parametrize("dataset", sorted(NATIONAL))
def test_national_schemas_are_the_published_files_with_their_source(dataset: str) -> None:
    d = CAT.get(dataset)
    assert d is not None and d.national_schema is not None
    assert d.national_schema.name == NATIONAL[dataset]
    folder = DEFINITIONS_DIR / dataset
    schema = json.loads((folder / "schema.json").read_text(encoding="utf-8"))
    assert schema == d.table_schema and schema.get("version") == d.national_schema.version
    source = (folder / "SOURCE.md").read_text(encoding="utf-8")
    assert d.national_schema.commit in source and d.national_schema.licence in source


@pytest.mark.parametrize("dataset", sorted(OWN))
def test_own_schemas_are_table_schemas_with_a_primary_key(dataset: str) -> None:
    d = CAT.get(dataset)
    assert d is not None and d.national_schema is None and d.schema_note
    assert d.table_schema.get("primaryKey", d.identity_field) == d.identity_field


def test_a_definition_naming_an_unknown_field_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "definition.json").write_text(
        json.dumps(
            {
                "id": "broken",
                "title": {"fr": "x", "en": "x"},
                "schema": {"fields": [{"name": "id", "type": "string"}]},
                "identity_field": "id",
                "geometry": {"type": "Point", "carrier": "xy", "x_field": "lon", "y_field": "lat"},
            }
        )
    )
    with pytest.raises(DefinitionError, match="x_field"):
        load_definition(folder)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"themes": ["TRANSPORT"]}, "not an EU data theme"),
        ({"accrual_periodicity": "sometimes"}, "accrual_periodicity"),
    ],
)
def test_catalogue_metadata_must_use_the_eu_vocabularies(tmp_path, extra, message) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "broken"
    folder.mkdir()
    raw = {
        "id": "broken",
        "title": {"fr": "x", "en": "x"},
        "description": {"fr": "Des x.", "en": "Some x."},
        "schema": {"fields": [{"name": "id", "type": "string"}]},
        "identity_field": "id",
        "geometry": {"type": "Point"},
    }
    (folder / "definition.json").write_text(json.dumps(raw))
    assert load_definition(folder).description_fr == "Des x."
    (folder / "definition.json").write_text(json.dumps({**raw, **extra}))
    with pytest.raises(DefinitionError, match=message):
        load_definition(folder)


def event(dataset: str, attrs: dict[str, object], commune: str, geometry: RawGeometry | None = None) -> ChangeEvent:
    d = CAT.get(dataset)
    assert d is not None
    (ev,) = upsert_events(
        [SourceRecord(1, attrs, geometry)],  # type: ignore[arg-type]
        d,
        commune=commune,
        source="test",
        sequence=1,
        occurred_at=NOW,
        new_id=lambda: "e1",
    )
    return ev


def test_xy_carrier_builds_the_point_and_writes_back_the_swapped_coordinates() -> None:
    # a BNLC row with Xlong/Ylat swapped, as in the schema's own exemple-invalide.csv
    attrs = {
        "id_lieu": "69123-C-001",
        "nom_lieu": "Parking relais",
        "insee": "69123",
        "type": "Parking relais",
        "date_maj": "2024-01-02",
        "ouvert": "true",
        "Xlong": "45.75",
        "Ylat": "4.85",
    }
    out = NORMALISER.normalise(event("carpool_places", attrs, "69123"), NOW)
    assert isinstance(out, Candidate) and out.feature is not None
    assert "axis_swapped" in out.feature.corrections
    assert (out.feature.attributes["Xlong"], out.feature.attributes["Ylat"]) == (4.85, 45.75)


def test_geopoint_carrier_and_integer_insee_with_lost_zero() -> None:
    attrs = {"id": "01004-T-001", "nom": "Gare", "insee": 1004, "geopoint": "5.3427, 45.9542"}
    out = NORMALISER.normalise(event("taxi_ranks", attrs, "01004"), NOW)
    assert isinstance(out, Candidate) and out.feature is not None
    assert out.feature.attributes["insee"] == "01004"
    assert out.feature.geometry is not None and round(out.feature.geometry.x, 4) == 5.3427


def test_lambert93_in_aliased_columns_with_decimal_commas_is_reprojected() -> None:
    # Montpellier's DAE export: Coord_X / Coord_Y (aliases of long_coor1 / lat_coor1), Lambert-93, no CRS
    attrs = {"Nom": "Hôtel de Ville", "Coord_X": "771027,9784", "Coord_Y": "6279070,6495", "num_serie": "X1"}
    out = NORMALISER.normalise(event("defibrillators", attrs, "34172"), NOW)
    # GéoDAE requires the operator, the model... which the export lacks: the record gets in, incomplete
    assert isinstance(out, Candidate) and out.feature is not None and out.level == "incomplete"
    rules = {(e.field, e.rule) for e in out.warnings}
    assert ("expt_siren", "required") in rules and ("fab_rais", "required") in rules
    assert not any(e.field in ("geometry", "long_coor1", "lat_coor1", "nom") for e in out.warnings)
    missing = out.feature.attributes["odc:missing"]
    assert isinstance(missing, list) and "expt_siren" in missing and "nom" not in missing
    assert round(out.feature.geometry.x, 2) == 3.88  # reprojected from Lambert-93 (Montpellier)


def test_a_record_without_identity_gets_every_error_at_once() -> None:
    out = NORMALISER.normalise(event("defibrillators", {"Nom": "x"}, "34172"), NOW)
    assert isinstance(out, Invalid) and out.reason == "invalid_envelope"
    fields = [e.field for e in out.errors]
    assert fields[0] == "feature_id" and "num_serie" in out.errors[0].message_en
    assert "fab_rais" in fields and "geometry" in fields


def test_placeholder_coordinates_are_rejected_by_the_delivery_areas_policy() -> None:
    # Antibes' later layout writes GEOM_XY "1,1" on every row
    ev = event(
        "delivery_areas",
        {"ID": "1", "UUID": "828e1140-523c-4a41-b466-ab1b64a4a4bd"},
        "06004",
        RawGeometry(GeometryEncoding.WKT, b"POINT (1 1)"),
    )
    out = NORMALISER.normalise(ev, NOW)
    assert isinstance(out, Invalid)
    assert ("geometry", "placeholder_coordinates") in {(e.field, e.rule) for e in out.errors}


def test_subsidies_have_no_geometry_and_a_composite_identity() -> None:
    data = (
        "nomAttribuant,idAttribuant,dateConvention,referenceDecision,nomBeneficiaire,idBeneficiaire,objet,montant,"
        "nature,conditionsVersement,datesPeriodeVersement,idRAE,notificationUE,pourcentageSubvention\n"
        'ANTIBES,21060004500392,05/12/2016,,Club,52499120500013,Fonctionnement,"9000,5",aide en numéraire,unique,'
        '2017-03-09,,non,"0,5"\n'
    ).encode()
    (ev,) = upsert_events(
        read_csv(data),
        CAT.get("subsidies"),
        commune="06004",
        source="t",
        sequence=1,  # type: ignore[arg-type]
        occurred_at=NOW,
        new_id=lambda: "e",
    )
    assert ev.feature_id.startswith("21060004500392|05/12/2016|") and len(ev.feature_id) < 60
    out = NORMALISER.normalise(ev, NOW)
    assert isinstance(out, Candidate) and out.feature is not None and out.feature.geometry is None
    assert out.feature.attributes["dateConvention"] == "2016-12-05"
    assert out.feature.attributes["montant"] == 9000.5 and out.feature.attributes["pourcentageSubvention"] == 0.5


def test_markets_in_the_datapusher_json_are_read_with_their_position() -> None:
    doc = {
        "fields": ["identifiant"],
        "values": [
            {
                "identifiant": 46,
                "insee": "69100",
                "type": "mixte",
                "jourtenue": "Samedi",
                "horaires": ["Sa 08:00-12:00"],
                "lat": 45.6724498,
                "lon": 4.8227235,
            }
        ],
    }
    from services.ingest.domain.source_records import read_geojson

    (ev,) = upsert_events(
        read_geojson(json.dumps(doc).encode()),
        CAT.get("markets"),
        commune=None,
        source="t",  # type: ignore[arg-type]
        sequence=1,
        occurred_at=NOW,
        new_id=lambda: "e",
    )
    assert (ev.commune, ev.feature_id) == ("69100", "46")
    out = NORMALISER.normalise(ev, NOW)
    assert isinstance(out, Candidate) and out.feature is not None
    assert out.feature.attributes["horaires"] == '["Sa 08:00-12:00"]'


def test_dbf_headers_and_latin1_are_read() -> None:
    data = '"Id,N,9,0","Nom,C,254","Coord_X,C,50"\n1,Maison de la Prévention Santé,"3,87"\n'.encode("cp1252")
    (r,) = read_csv(data)
    assert r.attributes == {"Id": "1", "Nom": "Maison de la Prévention Santé", "Coord_X": "3,87"}


def test_delete_events_still_need_a_valid_envelope() -> None:
    ev = event("markets", {"identifiant": 1}, "69100")
    bad = ChangeEvent("e2", "markets", "691", "1", Operation.DELETE, NOW, 2, "t")
    assert isinstance(NORMALISER.normalise(bad, NOW), Invalid)
    assert isinstance(
        NORMALISER.normalise(ChangeEvent("e3", "markets", "69100", ev.feature_id, Operation.DELETE, NOW, 2, "t"), NOW),
        Candidate,
    )
