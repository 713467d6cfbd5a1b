"""The territory is configuration: one setting (ODC_TERRITORY) chooses the communes that may publish, the area
positions are checked against and each commune's own area; the same code serves the Métropole de Lyon (the
default, unchanged) and another territory with the same checks."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from services.cli.settings import CliSettings
from services.contract.datasets.catalogue import (
    BOUNDARIES_FILE,
    COMMUNE_TOKEN,
    DatasetCatalogue,
    load_commune_boundaries,
)
from services.contract.messages import ChangeEvent, GeometryEncoding, Operation, RawGeometry
from services.contract.territories import TerritoryError, load_territory, read_communes
from services.ingest.settings import IngestSettings
from services.normalise.domain.canonical_feature import Candidate, EventNormaliser, Invalid
from services.normalise.settings import NormaliseSettings
from services.publish.settings import PublishSettings

NOW = datetime(2026, 11, 1, tzinfo=UTC)
MTP = "montpellier-mediterranee-metropole"
MONTPELLIER_COMEDIE = (3.8800, 43.6085)  # place de la Comédie, Montpellier (34172)
CASTELNAU_TOWN_HALL = (3.9003, 43.6334)  # Castelnau-le-Lez (34057), next to Montpellier
SETE_PORT = (3.6973, 43.4030)  # Sète (34301), Hérault, outside Montpellier Méditerranée Métropole
LYON_BELLECOUR = (4.8320, 45.7578)
VILLEURBANNE_TOWN_HALL = (4.8796, 45.7663)


@pytest.fixture(scope="module")
def lyon() -> EventNormaliser:
    return EventNormaliser(DatasetCatalogue.load())


@pytest.fixture(scope="module")
def montpellier() -> EventNormaliser:
    return EventNormaliser(DatasetCatalogue.load(territory=MTP))


@pytest.fixture(scope="module")
def herault() -> EventNormaliser:
    return EventNormaliser(DatasetCatalogue.load(territory="departement:34"))


def toilet(commune: str, where: tuple[float, float], codinsee: str | None = None) -> ChangeEvent:
    gid = uuid.uuid4().int % 10**6
    return ChangeEvent(
        str(uuid.uuid4()),
        "public_toilets",
        commune,
        str(gid),
        Operation.UPSERT,
        NOW,
        1,
        "test",
        RawGeometry(GeometryEncoding.GEOJSON, json.dumps({"type": "Point", "coordinates": list(where)}).encode()),
        {"gid": gid, "codinsee": codinsee or commune, "adresse": "1 place test"},
    )


def messages(out: Invalid) -> str:
    return " | ".join(f"{e.message_en} / {e.message_fr}" for e in out.errors)


# -- the bundled list of communes --------------------------------------------------------------------------
def test_the_bundled_cog_lists_every_commune_with_its_epci_and_departement() -> None:
    rows = read_communes()
    current = [r for r in rows if r.kind == "C"]
    assert len(rows) == 37_590 and len(current) == 34_969  # @etalab/decoupage-administratif 6.0.0
    by_code = {r.code: r for r in current}
    assert (by_code["69123"].name, by_code["69123"].epci, by_code["69123"].departement) == ("Lyon", "200046977", "69")
    assert (by_code["34172"].name, by_code["34172"].epci) == ("Montpellier", "243400017")
    assert by_code["2A004"].departement == "2A"  # Ajaccio: Corsican codes are not numbers
    assert sum(1 for r in current if r.bbox is None) < 200  # a box for all but a few communes


# -- the default: the Métropole de Lyon, as before ---------------------------------------------------------
def test_the_default_territory_is_the_metropole_de_lyon_with_its_boundaries_and_area() -> None:
    t = load_territory()
    assert t.name == "Métropole de Lyon" and t.area == (4.55, 45.45, 5.20, 46.05)
    assert t.boundaries == load_commune_boundaries(BOUNDARIES_FILE) and not t.boundaries_are_boxes
    current = {c.code for c in read_communes() if c.kind == "C" and c.epci == "200046977"}
    assert len(current) == 58 and current <= set(t.communes)
    assert {f"6938{i}" for i in range(1, 10)} <= set(t.communes)  # Lyon's arrondissements
    assert "69152" in t.communes  # Pierre-Bénite, now part of Oullins-Pierre-Bénite: old records carry it
    assert "69264" not in t.communes and "34172" not in t.communes  # Villefranche-sur-Saône is not a member


def test_every_setting_reads_the_one_odc_territory_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for settings in (NormaliseSettings, IngestSettings, PublishSettings, CliSettings):
        assert settings().territory == "metropole-de-lyon"
    monkeypatch.setenv("ODC_TERRITORY", MTP)
    for settings in (NormaliseSettings, IngestSettings, PublishSettings, CliSettings):
        assert settings().territory == MTP


def test_lyon_records_are_judged_as_before(lyon: EventNormaliser) -> None:
    ok = lyon.normalise(toilet("69266", VILLEURBANNE_TOWN_HALL), NOW)
    assert isinstance(ok, Candidate)
    bad = lyon.normalise(toilet("34172", MONTPELLIER_COMEDIE), NOW)
    assert isinstance(bad, Invalid)
    text = messages(bad)
    assert "a 5-character INSEE code of a commune of Métropole de Lyon, e.g. 69123" in text
    assert "outside the territory of Métropole de Lyon" in text and "hors du territoire de Métropole de Lyon" in text
    assert "^" not in text and "[0-9]" not in text  # words, never a regular expression


# -- another territory by the setting alone ----------------------------------------------------------------
def test_montpellier_by_setting_alone(montpellier: EventNormaliser) -> None:
    t = montpellier.catalogue.territory
    assert t.name == "Montpellier Méditerranée Métropole" and len(t.communes) >= 31
    assert len(montpellier.catalogue.commune_boundaries) == 31 and not t.boundaries_are_boxes
    ok = montpellier.normalise(toilet("34172", MONTPELLIER_COMEDIE), NOW)
    assert isinstance(ok, Candidate) and ok.feature is not None
    assert not [c for c in ok.feature.corrections if c.startswith("outside_commune")]
    assert ok.feature.attributes["codinsee"] == "34172"


def test_montpellier_refuses_a_lyon_commune_naming_the_territory(montpellier: EventNormaliser) -> None:
    bad = montpellier.normalise(toilet("69123", LYON_BELLECOUR), NOW)
    assert isinstance(bad, Invalid)
    rules = {(e.rule, e.field) for e in bad.errors}
    assert ("pattern", "codinsee") in rules and ("out_of_area", "geometry") in rules
    text = messages(bad)
    assert (
        "codinsee: expected a 5-character INSEE code of a commune of Montpellier Méditerranée Métropole, e.g. 34172"
        in text
    )
    assert "outside the territory of Montpellier Méditerranée Métropole" in text
    assert "hors du territoire de Montpellier Méditerranée Métropole" in text
    assert "d'une commune de Montpellier Méditerranée Métropole, par exemple 34172" in text
    assert "^" not in text and "[0-9]" not in text


def test_montpellier_checks_each_communes_boundary(montpellier: EventNormaliser) -> None:
    # the Comédie sent as Castelnau-le-Lez: the toilets' policy flags it, with the distance
    out = montpellier.normalise(toilet("34057", MONTPELLIER_COMEDIE), NOW)
    assert isinstance(out, Candidate) and out.feature is not None
    assert [c for c in out.feature.corrections if c.startswith("outside_commune:34057:")]


def test_montpellier_identifiers_and_published_schemas_carry_its_codes(montpellier: EventNormaliser) -> None:
    cat = montpellier.catalogue
    for d in cat:
        assert COMMUNE_TOKEN not in json.dumps(d.table_schema)  # every pattern resolved for the territory
    station = {"id_bureau": "34172-12", "code_insee": "34172", "numero": 12, "nom_lieu": "École"}
    ev = toilet("34172", MONTPELLIER_COMEDIE)
    ok = montpellier.normalise(
        ChangeEvent(
            ev.event_id, "polling_stations", "34172", "34172-12", ev.operation, NOW, 1, "t", ev.geometry, station
        ),
        NOW,
    )
    assert isinstance(ok, Candidate)
    lyon_id = {**station, "id_bureau": "69123-12"}
    bad = montpellier.normalise(
        ChangeEvent(
            ev.event_id, "polling_stations", "34172", "69123-12", ev.operation, NOW, 1, "t", ev.geometry, lyon_id
        ),
        NOW,
    )
    assert isinstance(bad, Invalid)
    (err,) = [e for e in bad.errors if e.field == "id_bureau"]
    assert "commune of Montpellier Méditerranée Métropole" in err.message_en and "e.g. 34172-1" in err.message_en


def test_a_siren_names_the_same_territory_and_a_departement_gets_boxes_per_commune(herault: EventNormaliser) -> None:
    assert load_territory("243400017").boundaries == load_territory(MTP).boundaries
    t = herault.catalogue.territory
    assert t.name == "Hérault" and t.boundaries_are_boxes and len(t.boundaries) >= 340
    ok = herault.normalise(toilet("34301", SETE_PORT), NOW)
    assert isinstance(ok, Candidate) and ok.feature is not None
    assert not [c for c in ok.feature.corrections if c.startswith("outside_commune")]
    far = herault.normalise(toilet("34301", MONTPELLIER_COMEDIE), NOW)  # Sète's box does not reach Montpellier
    assert isinstance(far, Candidate) and far.feature is not None
    assert [c for c in far.feature.corrections if c.startswith("outside_commune:34301:")]
    lyon = herault.normalise(toilet("69123", LYON_BELLECOUR), NOW)
    assert isinstance(lyon, Invalid) and "outside the territory of Hérault" in messages(lyon)


@pytest.mark.parametrize("setting", ["999999999", "departement:00", "nowhere", "/no/such/territory.json"])
def test_an_unknown_territory_is_refused_with_the_choices(setting: str) -> None:
    with pytest.raises(TerritoryError) as raised:
        load_territory(setting)
    assert "ODC_TERRITORY" in str(raised.value)


def test_a_territory_file_lists_its_communes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "two.json"
    spec.write_text(json.dumps({"name": "Deux communes", "communes": ["34172", "34057"]}), encoding="utf-8")
    t = load_territory(str(spec))
    assert t.name == "Deux communes" and {"34172", "34057"} <= set(t.communes) and t.example == "34172"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "communes": ["99999"]}), encoding="utf-8")
    with pytest.raises(TerritoryError):
        load_territory(str(bad))


def test_a_malformed_sending_commune_is_told_with_an_example_of_the_territory(montpellier: EventNormaliser) -> None:
    bad = montpellier.normalise(toilet("3417", MONTPELLIER_COMEDIE, codinsee="34172"), NOW)
    assert isinstance(bad, Invalid)
    (err,) = [e for e in bad.errors if e.field == "commune"]
    assert err.message_en == "commune: not an INSEE code (5 characters, e.g. 34172)"
    assert "par exemple 34172" in err.message_fr


def test_the_publisher_names_the_territory(montpellier: EventNormaliser) -> None:
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry
    from rdflib import URIRef
    from rdflib.namespace import DCTERMS, FOAF

    from services.publish.domain import dcat
    from services.publish.entrypoints.http_api import build_api
    from services.publish.metrics import PublishMetrics

    registry = CollectorRegistry()
    app = build_api(
        base_url="http://odc.test",
        catalogue=montpellier.catalogue,
        read_model=None,  # type: ignore[arg-type]  # the landing page reads nothing
        subscriptions=None,  # type: ignore[arg-type]
        delivery_store_factory=None,  # type: ignore[arg-type]
        resolver=None,  # type: ignore[arg-type]
        clock=None,  # type: ignore[arg-type]
        metrics=PublishMetrics(registry),
        registry=registry,
        health={"database": True},
        tokens=None,  # type: ignore[arg-type]
    )
    with TestClient(app) as client:
        assert client.get("/ogc").json()["title"] == "odc — OpenData des communes (Montpellier Méditerranée Métropole)"
    page = dcat.Page(1, 20, 0)
    for catalogue, name in (
        (montpellier.catalogue, "Montpellier Méditerranée Métropole"),
        (DatasetCatalogue.load(), "Métropole de Lyon"),
    ):
        g = dcat.catalogue_graph("http://h", [], [], page, dcat.TURTLE, catalogue.territory, dcat.DEFAULT_CONTACT, None)
        publisher = g.value(URIRef("http://h/catalog"), DCTERMS.publisher)
        assert str(g.value(publisher, FOAF.name)) == f"{name} — OpenData des communes"
