"""Conformance levels (services/normalise/domain/conformance.py): which problems refuse a record and which
let it in as incomplete, or without the offending value. Table-driven on the drinking-fountain schema
(national, 8 required fields) through the real normaliser."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.contract.conformance_levels import level_of
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import (
    ChangeEvent,
    ChangeKind,
    FeatureState,
    FieldError,
    GeometryEncoding,
    Operation,
    RawGeometry,
)
from services.normalise.domain.canonical_feature import Candidate, EventNormaliser, Invalid, canonical_json
from services.normalise.domain.conformance import judge_conformance
from services.publish.domain.feature_documents import CsvLayout, StoredFeature, left_out_note
from services.publish.domain.versioning import EMPTY_HASH, DatasetState, ReceivedChange, build_version

NORMALISER = EventNormaliser(DatasetCatalogue.load())
NOW = datetime(2026, 11, 1, tzinfo=UTC)
COMPLETE: dict[str, Any] = {
    "id": "F1",
    "type_fontaine": "borne fontaine",
    "latitude": "45.7640",
    "longitude": "4.8357",
    "code_commune_insee": "69123",
    "conditions_acces": "aucune",
    "accessible_pmr": "true",
    "remplissage_contenant_possible": "false",
    "siren_gestionnaire": "123456789",
}


def fountain(**changes: Any) -> ChangeEvent:
    attrs = {k: v for k, v in {**COMPLETE, **changes}.items() if v is not ...}
    return ChangeEvent(
        "e1", "drinking_fountains", "69123", str(attrs.get("id", "")), Operation.UPSERT, NOW, 1, "t", None, attrs
    )


@pytest.mark.parametrize(
    ("changes", "level", "missing", "dropped"),
    [
        ({}, "conforming", None, None),
        ({"type_fontaine": ...}, "incomplete", ["type_fontaine"], None),
        ({"type_fontaine": "", "accessible_pmr": ...}, "incomplete", ["type_fontaine", "accessible_pmr"], None),
        # a value breaking the rule of a required field: left out, and the record is incomplete
        ({"type_fontaine": "jet d'eau"}, "incomplete", ["type_fontaine"], ["type_fontaine"]),
        ({"accessible_pmr": "peut-être"}, "incomplete", ["accessible_pmr"], ["accessible_pmr"]),
        # ... of an optional field: left out, the record still conforms (with a warning)
        ({"siren_gestionnaire": "12345"}, "conforming", None, ["siren_gestionnaire"]),
        ({"date_installation": "31/02/2020"}, "conforming", None, ["date_installation"]),
    ],
)
def test_a_record_with_valid_identity_commune_and_geometry_gets_in(
    changes: dict[str, Any], level: str, missing: list[str] | None, dropped: list[str] | None
) -> None:
    out = NORMALISER.normalise(fountain(**changes), NOW)
    assert isinstance(out, Candidate) and out.feature is not None
    attrs = out.feature.attributes
    assert out.level == level == level_of(attrs)
    assert attrs.get("odc:missing") == missing
    assert attrs.get("odc:dropped") == dropped
    for name in dropped or []:
        assert attrs[name] is None  # never published as it was sent
        assert any(e.field == name for e in out.warnings)
        assert f"dropped:{name}:" in " ".join(out.feature.corrections)
    if level == "conforming":
        assert "odc:conformance" not in attrs


@pytest.mark.parametrize(
    ("changes", "reason", "rules"),
    [
        ({"id": ...}, "invalid_envelope", {("feature_id", "feature_id"), ("id", "required")}),
        ({"code_commune_insee": "69124"}, "invalid_attributes", {("code_commune_insee", "commune_mismatch")}),
        ({"code_commune_insee": "6912"}, "invalid_attributes", {("code_commune_insee", "pattern")}),
        ({"latitude": ..., "longitude": ...}, "invalid_geometry", {("geometry", "geometry_required")}),
        ({"latitude": "0", "longitude": "0"}, "invalid_geometry", {("geometry", "placeholder_coordinates")}),
        ({"modele": "a\x00b"}, "invalid_attributes", {("modele", "control_character")}),
    ],
)
def test_identity_commune_geometry_or_a_nul_refuse_the_record(
    changes: dict[str, Any], reason: str, rules: set[tuple[str, str]]
) -> None:
    out = NORMALISER.normalise(fountain(**changes), NOW)
    assert isinstance(out, Invalid) and out.reason == reason
    assert rules <= {(e.field, e.rule) for e in out.errors}


def test_a_refused_record_still_lists_every_problem_at_once() -> None:
    out = NORMALISER.normalise(fountain(latitude="0", longitude="0", type_fontaine=..., accessible_pmr="x"), NOW)
    assert isinstance(out, Invalid) and out.reason == "invalid_geometry"  # what refused it
    fields = {e.field for e in out.errors}
    assert {"geometry", "type_fontaine", "accessible_pmr"} <= fields


@pytest.mark.parametrize(
    ("schema_errors", "other", "level"),
    [
        ([], [], "conforming"),
        ([FieldError("required", "", "", "b")], [], "incomplete"),
        ([FieldError("pattern", "", "", "c")], [], "conforming"),  # optional: dropped
        ([FieldError("pattern", "", "", "b")], [], "incomplete"),  # required: dropped and missing
        ([FieldError("required", "", "", "id")], [], "refused"),  # protected field
        ([FieldError("control_character", "", "", "c")], [], "refused"),
        ([], [FieldError("geometry_type", "", "", "geometry")], "refused"),
        ([FieldError("required", "", "", "b")], [FieldError("insee", "", "", "commune")], "refused"),
    ],
)
def test_judge_conformance(schema_errors: list[FieldError], other: list[FieldError], level: str) -> None:
    v = judge_conformance(schema_errors, other, protected=frozenset({"id"}), required=frozenset({"id", "b"}))
    assert v.level == level


# -- publishing: counts per version and the national-layout CSV ------------------------------------------


def _state(incomplete: bool, n: int = 0) -> FeatureState:
    attrs = {"id": str(n), **({"odc:conformance": "incomplete", "odc:missing": ["x"]} if incomplete else {})}
    return FeatureState(None, canonical_json(attrs), f"h{n}{incomplete}")


@pytest.mark.parametrize(
    ("before", "after", "start", "expected"),
    [
        (None, True, 0, 1),  # an incomplete record added
        (None, False, 0, 0),
        (True, False, 1, 0),  # completed by a later send
        (False, True, 0, 1),
        (True, None, 1, 0),  # removed
        (True, True, 1, 1),
    ],
)
def test_each_version_counts_its_incomplete_features(
    before: bool | None, after: bool | None, start: int, expected: int
) -> None:
    change = ReceivedChange(
        1,
        "d",
        "69123",
        "1",
        ChangeKind.UPDATED,
        None if before is None else _state(before, 1),
        None if after is None else _state(after, 2),
    )
    draft = build_version(DatasetState("d", 1, 1 if before is not None else 0, EMPTY_HASH, start), [change], NOW)
    assert draft is not None and draft.incomplete == expected
    assert draft.conforming == draft.feature_count - expected


def test_the_national_csv_holds_only_conforming_records() -> None:
    d = DatasetCatalogue.load().get("drinking_fountains")
    assert d is not None
    layout = CsvLayout(d)
    complete = StoredFeature("69123", "1", None, canonical_json({"id": "1", "type_fontaine": "robinet"}))
    partial = StoredFeature("69123", "2", None, _state(True, 2).attributes_json)
    text = "".join(layout.chunks([complete, partial]))
    assert text.count("\r\n") == 2 and "robinet" in text and "incomplete" not in text
    assert "odc:" not in text.splitlines()[0]
    note = left_out_note(1, "https://x/features.geojson")
    assert note.startswith("1 incomplete record(s) left out") and note.isascii()


# -- a record's own commune contradicting the commune it was sent for ----------------------------------------


@pytest.mark.parametrize(
    ("dataset", "attrs", "refused_column"),
    [
        # the schema's commune field says another commune
        ("drinking_fountains", {**COMPLETE, "code_commune_insee": "69266"}, "code_commune_insee"),
        # the commune field is absent but a column of the file names another commune: not relabelled
        (
            "drinking_fountains",
            {**{k: v for k, v in COMPLETE.items() if k != "code_commune_insee"}, "Code commune": "69266"},
            "Code commune",
        ),
        (
            "drinking_fountains",
            {**{k: v for k, v in COMPLETE.items() if k != "code_commune_insee"}, "DEPCOM": 69123},
            None,
        ),
        (
            "drinking_fountains",
            {**{k: v for k, v in COMPLETE.items() if k != "code_commune_insee"}, "insee_com": 1053},
            "insee_com",
        ),
    ],
)
def test_a_record_naming_another_commune_is_refused_not_relabelled(
    dataset: str, attrs: dict[str, Any], refused_column: str | None
) -> None:
    ev = ChangeEvent("e1", dataset, "69123", "F1", Operation.UPSERT, NOW, 1, "t", None, attrs)
    out = NORMALISER.normalise(ev, NOW)
    if refused_column is None:
        assert isinstance(out, Candidate) and out.feature is not None
        assert out.feature.attributes["code_commune_insee"] == "69123"
        return
    assert isinstance(out, Invalid)
    (e,) = [e for e in out.errors if e.rule == "commune_mismatch"]
    assert e.field == refused_column and "was sent for commune 69123" in e.message_en
    assert "--commune" in e.message_en and "admin key" in e.message_en


def test_a_wrong_geometry_type_is_not_hidden_behind_the_area_error() -> None:
    polygon = '{"type":"Polygon","coordinates":[[[2.35,48.85],[2.36,48.85],[2.36,48.86],[2.35,48.85]]]}'
    ev = ChangeEvent("e1", "public_toilets", "69123", "1", Operation.UPSERT, NOW, 1, "t",
                     RawGeometry(GeometryEncoding.GEOJSON, polygon.encode()),
                     {"gid": 1, "codinsee": "69123"})  # fmt: skip
    out = NORMALISER.normalise(ev, NOW)
    assert isinstance(out, Invalid) and out.reason == "invalid_geometry"
    assert {e.rule for e in out.errors} == {"out_of_area", "geometry_type"}
    area = next(e for e in out.errors if e.rule == "out_of_area")
    assert "outside the territory of Métropole de Lyon" in area.message_en
    assert "hors du territoire de Métropole de Lyon" in area.message_fr


def test_the_normaliser_counts_records_per_level() -> None:
    from collections import Counter

    from prometheus_client import CollectorRegistry

    from services.normalise.metrics import NormaliseMetrics
    from services.normalise.service_layer.process_batch import BatchReport

    registry = CollectorRegistry()
    metrics = NormaliseMetrics(registry)
    report = BatchReport(
        received=4,
        levels=Counter({("drinking_fountains", "conforming"): 2, ("drinking_fountains", "incomplete"): 1}),
        rejections=Counter({("drinking_fountains", "invalid_geometry"): 1}),
    )
    metrics.observe(report, 0.01)

    def value(level: str) -> float | None:
        return registry.get_sample_value(
            "odc_records_conformance_total", {"dataset": "drinking_fountains", "level": level}
        )

    assert (value("conforming"), value("incomplete"), value("refused")) == (2, 1, 1)


def _delivery_area(**changes: Any) -> ChangeEvent:
    """A delivery area of the CEREMA's Grand Lyon example (samples/cerema/exemple-grand-lyon.csv, row GL-2300)."""
    attrs = {
        "UUID": "828e1140-523c-4a41-b466-ab1b64a4a4bd",
        "ID": "GL-2300",
        "NOM": "200046977_20",
        "LONGITUDE": "4.855184",
        "LATITUDE": "45.769656",
        "ADRESSE": "27 Rue Ney, 69006 Lyon",
        "LONGUEUR": "900",
        "LARGEUR": "180",
        "TYPE": "aire permanente",
        **changes,
    }
    attrs = {k: v for k, v in attrs.items() if v is not ...}
    return ChangeEvent(
        "e2", "delivery_areas", "69123", str(attrs.get("ID", "")), Operation.UPSERT, NOW, 1, "t", None, attrs
    )


def test_a_national_primary_key_that_is_not_the_identity_makes_the_record_incomplete_not_refused() -> None:
    """delivery_areas: the stream's identity is ID; UUID is the national schema's primary key. A record with a
    valid ID, commune and position but no (or a broken) UUID gets in as incomplete (the Hauts-de-Seine export
    has no UUID column: all 1,007 records were refused before, docs/data-quality.md)."""
    assert isinstance(ok := NORMALISER.normalise(_delivery_area(), NOW), Candidate), ok
    assert ok.level == "conforming"
    for changes, dropped in (({"UUID": ...}, None), ({"UUID": "92012025"}, ["UUID"])):
        out = NORMALISER.normalise(_delivery_area(**changes), NOW)
        assert isinstance(out, Candidate) and out.feature is not None, out
        assert out.level == "incomplete"
        assert out.feature.attributes["odc:missing"] == ["UUID"]
        assert out.feature.attributes.get("odc:dropped") == dropped
    # the identity still refuses
    refused = NORMALISER.normalise(_delivery_area(ID=...), NOW)
    assert isinstance(refused, Invalid)


def test_source_columns_no_field_takes_are_kept_with_the_record_not_in_the_national_csv() -> None:
    """odc:extra (the columns a source profile maps to no field) is stored and published with the record."""
    extra = '{"Source": "Open Street Map", "Commune": "Lyon"}'
    for changes in ({}, {"type_fontaine": ...}):  # conforming and incomplete alike
        out = NORMALISER.normalise(fountain(**changes, **{"odc:extra": extra}), NOW)
        assert isinstance(out, Candidate) and out.feature is not None
        assert out.feature.attributes["odc:extra"] == extra
    assert "odc:extra" not in CsvLayout(DatasetCatalogue.load().get("drinking_fountains")).columns  # type: ignore[arg-type]
