"""Every dataset of the catalogue through the real pipeline (issue #3, "all the datasets flow end to end"):
for each one, a valid record written by hand from its Table Schema is stored as a canonical feature and
published in a version, and a record with one faulty field is taken in without that value, named in
``odc:missing`` (incomplete) or ``odc:dropped`` (conformance levels, docs/validation.md).

Each record has its own position, at least ~900 m from every other record of this file and away from the
fixed places the other integration tests use, so same-place linking never merges them. Feature ids are
fresh on every run: the tests do not depend on order or on what ran before."""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import AttributeValue, ChangeEvent, GeometryEncoding, Operation, RawGeometry
from tests.integration.pipeline_harness import Pipeline, wait_for

pytestmark = pytest.mark.integration
LYON, VILLEURBANNE = "69123", "69266"
Point = tuple[float, float]


@dataclass(frozen=True)
class Case:
    commune: str
    valid_at: Point | None  # where the valid record is (None: the dataset has no geometry)
    invalid_at: Point | None
    attributes: dict[str, AttributeValue]  # the valid record, without its position
    bad_field: str  # the invalid record is the valid one with this field...
    bad_value: AttributeValue | None  # ...set to this value (None: left out)


# fmt: off
CASES: dict[str, Case] = {
    "bike_share_stations": Case(
        VILLEURBANNE, (4.8773, 45.7626), (4.8773, 45.7711),
        {"number": 10999, "name": "10999 - GRATTE-CIEL TEST", "code_insee": VILLEURBANNE, "status": "OPEN",
         "bike_stands": 20, "banking": True},
        "status", "BROKEN",
    ),
    "carpool_places": Case(
        LYON, (4.7973, 45.7537), (4.7973, 45.7632),
        {"id_lieu": "69123-C-901", "nom_lieu": "Aire test Gerland", "insee": LYON, "type": "Aire de covoiturage",
         "date_maj": "2026-01-15", "ouvert": True, "nbre_pl": 12},
        "type", "Parking sauvage",
    ),
    "defibrillators": Case(
        LYON, (4.7973, 45.7727), (4.7973, 45.7822),
        {"nom": "Mairie annexe test", "com_insee": LYON, "acc": "Extérieur", "acc_lib": True, "disp_j": "7j/7",
         "disp_h": "24h/24", "tel1": "+33472101010", "etat_fonct": "En fonctionnement", "fab_rais": "Schiller",
         "modele": "FRED PA-1", "num_serie": "TEST-DAE-901", "dermnt": "2026-01-10", "expt_siren": "216901231",
         "expt_rais": "Ville de Lyon", "expt_tel1": "+33472101010", "expt_email": "dae@mairie-lyon.fr"},
        "acc", "Dehors",
    ),
    "delivery_areas": Case(
        LYON, (4.8093, 45.7537), (4.8093, 45.7632),
        # UUID says required: false, but it is the schema's primaryKey, and a primary key is required
        {"ID": "69123-LIV-901", "UUID": "5d0b8a4e-3f51-4c38-9a57-0e1f2d3c4b5a", "NOM": "Aire test", "DISPOSITION": "parallèle", "LONGUEUR": 1200,
         "TYPE": "aire permanente"},
        "DISPOSITION", "en travers",
    ),
    "drinking_fountains": Case(
        VILLEURBANNE, (4.8773, 45.7796), (4.8883, 45.7626),
        {"id": "69266-F-901", "type_fontaine": "borne fontaine", "code_commune_insee": VILLEURBANNE,
         "conditions_acces": "aucune", "accessible_pmr": True, "remplissage_contenant_possible": True},
        "accessible_pmr", None,
    ),
    "markets": Case(
        LYON, (4.8093, 45.7727), (4.8093, 45.7822),
        {"identifiant": 90901, "insee": LYON, "type": "alimentaire", "jourtenue": "Samedi matin",
         "adresse": "Place test", "horaires": "6h-13h"},
        "jourtenue", "Samedi soir",
    ),
    "notice_boards": Case(
        LYON, (4.8213, 45.7347), (4.8213, 45.7442),
        {"id": "69123-A-901", "code_insee": LYON, "type": "opinion", "surface_m2": 2.0, "nb_faces": 1},
        "type", None,
    ),
    "parking": Case(
        LYON, (4.8213, 45.7537), (4.8213, 45.7632),
        {"id": "69123-P-901", "nom": "Parking test", "insee": LYON, "type_usagers": "tous", "gratuit": False,
         "nb_places": 120, "hauteur_max": "210", "num_siret": "21690123100011"},
        "type_usagers", "visiteurs",
    ),
    "parks_gardens": Case(
        LYON, (4.8213, 45.7727), (4.8213, 45.7822),
        {"uid": "PAR-69123-00901", "nom": "Square test", "code_insee": LYON, "clos": True},
        "nom", None,
    ),
    "polling_stations": Case(
        VILLEURBANNE, (4.8883, 45.7711), (4.8883, 45.7796),
        {"id_bureau": "69266-901", "code_insee": VILLEURBANNE, "numero": 901, "nom_lieu": "École test"},
        "numero", None,
    ),
    "public_facilities": Case(
        LYON, (4.8333, 45.7347), (4.8333, 45.7442),
        {"COLL_NOM": "Ville de Lyon", "COLL_SIRET": "21690123100011", "EQUIP_UID": "69123-00000901-001",
         "EQUIP_THEME": "Equipement sportif et de loisirs", "EQUIP_CODE": "F101", "EQUIP_TYPE": "Gymnase",
         "EQUIP_NOM": "Gymnase test", "ADR_NUMERO": "12", "ADR_NOMVOIE": "Rue de test", "ADR_CODEPOSTAL": "69007",
         "ADR_COMMUNE": "Lyon"},
        "EQUIP_THEME", "Equipement festif",
    ),
    "public_toilets": Case(
        LYON, (4.8453, 45.7347), (4.8453, 45.7442),
        {"gid": 990901, "codinsee": LYON, "adresse": "1 rue test", "acceshandi": True},
        "acceshandi", "peut-être",
    ),
    "recycling_points": Case(
        VILLEURBANNE, (4.8993, 45.7626), (4.8993, 45.7711),
        {"id": "69266-silo-901", "code_insee": VILLEURBANNE, "type": "verre", "nom": "Silo test"},
        "type", "piles",
    ),
    "subsidies": Case(
        LYON, None, None,
        {"nomAttribuant": "Ville de Lyon", "idAttribuant": "21690123100011", "dateConvention": "2026-02-01",
         "nomBeneficiaire": "Association test", "objet": "Fête de quartier", "montant": 1500.0,
         "nature": "aide en numéraire", "conditionsVersement": "unique", "datesPeriodeVersement": "2026-03-01",
         "notificationUE": False, "pourcentageSubvention": 0.5},
        "nature", "aide morale",
    ),
    "taxi_ranks": Case(
        VILLEURBANNE, (4.8993, 45.7796), (4.9103, 45.7626),
        {"id": "69266-T-901", "nom": "Station test", "insee": VILLEURBANNE, "emplacements": 3},
        "nom", None,
    ),
}
# fmt: on


@functools.cache
def catalogue() -> DatasetCatalogue:
    return DatasetCatalogue.load()


def square(at: Point, half: float = 0.0004) -> dict[str, Any]:
    x, y = at
    ring = [
        [x - half, y - half],
        [x + half, y - half],
        [x + half, y + half],
        [x - half, y + half],
        [x - half, y - half],
    ]
    return {"type": "MultiPolygon", "coordinates": [[ring]]}


def record(dataset: str, at: Point | None, attributes: dict[str, AttributeValue]) -> ChangeEvent:
    """An upsert carrying its position the way the dataset's definition says: a GeoJSON geometry, two
    coordinate columns or one geopoint column."""
    definition = catalogue().get(dataset)
    assert definition is not None, dataset
    spec = definition.geometry
    case = CASES[dataset]
    values = dict(attributes)
    geometry = None
    if at is not None:
        if spec.carrier == "geojson":
            shape = square(at) if spec.type == "MultiPolygon" else {"type": spec.type, "coordinates": list(at)}
            geometry = RawGeometry(GeometryEncoding.GEOJSON, json.dumps(shape).encode(), "EPSG:4326")
        elif spec.carrier == "xy":
            assert spec.x_field and spec.y_field
            values[spec.x_field], values[spec.y_field] = at
        elif spec.carrier == "geopoint":
            assert spec.field
            values[spec.field] = f"{at[0]}, {at[1]}"
        else:
            raise AssertionError(f"{dataset}: no case for the geometry carrier {spec.carrier!r}")
    return ChangeEvent(
        str(uuid.uuid4()), dataset, case.commune, f"e2e-{uuid.uuid4().hex[:16]}", Operation.UPSERT,
        datetime.now(UTC), 1, "test", geometry, values,
    )  # fmt: skip


def valid_and_invalid(dataset: str) -> tuple[ChangeEvent, ChangeEvent]:
    case = CASES[dataset]
    bad = dict(case.attributes)
    if case.bad_value is None:
        del bad[case.bad_field]
    else:
        bad[case.bad_field] = case.bad_value
    return record(dataset, case.valid_at, case.attributes), record(dataset, case.invalid_at, bad)


def test_every_dataset_of_the_catalogue_has_a_case() -> None:
    assert sorted(d.id for d in catalogue()) == sorted(CASES)


@pytest.mark.parametrize("dataset", sorted(CASES))
def test_a_valid_record_is_published_and_a_faulty_one_taken_in_without_its_faulty_value(
    pipeline: Pipeline, dataset: str
) -> None:
    valid, invalid = valid_and_invalid(dataset)
    pipeline.produce_events([valid, invalid])
    key = (dataset, valid.commune, valid.feature_id)

    # the valid record: a live canonical feature of its dataset, with the record's own values
    rows = wait_for(
        f"{dataset}: the valid record stored",
        lambda: pipeline.sql(
            "SELECT deleted, attributes, ST_AsText(geom), corrections FROM canonical_feature "
            "WHERE dataset = %s AND commune = %s AND feature_id = %s",
            *key,
        ),
    )
    ((deleted, attributes, wkt, corrections),) = rows
    assert deleted is False
    assert not [c for c in corrections if c.startswith("outside_commune")], corrections  # inside its commune
    for name, value in CASES[dataset].attributes.items():
        assert attributes[name] == value, (dataset, name, attributes)
    expected_at = CASES[dataset].valid_at
    if expected_at is None:
        assert wkt is None
    else:
        ((x, y),) = pipeline.sql("SELECT ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM canonical_feature "
                                 "WHERE dataset = %s AND commune = %s AND feature_id = %s", *key)  # fmt: skip
        assert (round(x, 4), round(y, 4)) == expected_at

    # ...published in a numbered version, as an addition, and visible in the public feature history
    ((version,),) = wait_for(
        f"{dataset}: the valid record published",
        lambda: pipeline.sql(
            "SELECT version FROM published_feature WHERE dataset = %s AND commune = %s AND feature_id = %s", *key
        ),
    )
    assert pipeline.sql(
        "SELECT kind FROM version_diff WHERE dataset = %s AND commune = %s AND feature_id = %s AND version = %s",
        *key,
        version,
    ) == [("added",)]
    assert pipeline.sql(
        "SELECT count(*) FROM dataset_version WHERE dataset = %s AND version = %s", dataset, version
    ) == [(1,)]
    api = pipeline.services["publish"].base_url
    doc = httpx.get(f"{api}/datasets/{dataset}/features/{valid.commune}:{valid.feature_id}/history", timeout=30).json()
    assert [(h["version"], h["kind"]) for h in doc["history"]] == [(version, "added")]

    # the faulty record: taken in without the faulty value (conformance levels, docs/validation.md): incomplete
    # when the field is required, conforming without that value otherwise; the field named either way
    ((attrs,),) = wait_for(
        f"{dataset}: the faulty record stored without its faulty value",
        lambda: pipeline.sql(
            "SELECT attributes FROM canonical_feature WHERE dataset = %s AND commune = %s AND feature_id = %s",
            dataset,
            invalid.commune,
            invalid.feature_id,
        ),
    )
    bad_field = CASES[dataset].bad_field
    assert attrs[bad_field] is None, attrs
    assert bad_field in (attrs.get("odc:missing") or []) + (attrs.get("odc:dropped") or []), attrs
    schema_field = next(f for f in catalogue().get(dataset).table_schema["fields"] if f["name"] == bad_field)  # type: ignore[union-attr]
    required = bool(schema_field.get("constraints", {}).get("required"))
    assert (attrs.get("odc:conformance") == "incomplete") == required, attrs
    assert not pipeline.sql("SELECT 1 FROM rejection WHERE event_id = %s", invalid.event_id)
