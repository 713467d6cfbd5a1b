"""A push request's records: shape checks, refusal reasons (the stream's codes), commune authorisation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import GeometryEncoding, Operation
from services.ingest.domain.push_records import MalformedBody, parse_batch

CATALOGUE = DatasetCatalogue.load()
TOILETS = CATALOGUE.get("public_toilets")
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
POINT = {"type": "Point", "coordinates": [4.88, 45.77]}


def parse(body: Any, commune: str | None = "69266"):  # type: ignore[no-untyped-def]
    assert TOILETS is not None
    ids = itertools.count(1)
    return parse_batch(
        body, TOILETS, commune=commune, source="test", sequence=7, occurred_at=NOW, new_id=lambda: f"ev-{next(ids)}"
    )


def test_a_geojson_feature_and_a_flat_record_become_upserts_of_the_tokens_commune() -> None:
    batch = parse(
        {
            "records": [
                {"type": "Feature", "id": 12, "properties": {"adresse": "place"}, "geometry": POINT},
                {"gid": 13, "adresse": "rue", "geometry": "POINT (4.88 45.77)"},
            ]
        }
    )
    assert not batch.refused
    a, b = (x.event for x in batch.accepted)
    assert (a.feature_id, a.commune, a.operation, a.geometry.encoding) == (
        "12",
        "69266",
        Operation.UPSERT,
        GeometryEncoding.GEOJSON,
    )  # type: ignore[union-attr]
    assert (b.feature_id, b.geometry.encoding, b.sequence) == ("13", GeometryEncoding.WKT, 7)  # type: ignore[union-attr]
    assert "geometry" not in b.attributes and b.attributes["adresse"] == "rue"


def test_a_delete_needs_only_the_id_and_carries_no_content() -> None:
    batch = parse({"records": [{"operation": "delete", "gid": 14}, {"operation": "delete", "feature_id": "15"}]})
    assert [(a.event.feature_id, a.event.operation, a.event.attributes, a.event.geometry) for a in batch.accepted] == [
        ("14", Operation.DELETE, {}, None),
        ("15", Operation.DELETE, {}, None),
    ]


def test_a_feature_collection_is_a_batch_too() -> None:
    batch = parse(
        {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"gid": 1}, "geometry": POINT}]}
    )
    assert [a.event.feature_id for a in batch.accepted] == ["1"]


@pytest.mark.parametrize(
    ("record", "reason", "rule"),
    [
        ("not an object", "invalid_envelope", "record_type"),
        ({"gid": 1, "operation": "merge"}, "invalid_envelope", "operation"),
        ({"adresse": "no id"}, "invalid_envelope", "feature_id"),
        ({"gid": "x" * 201}, "invalid_envelope", "feature_id"),
        ({"gid": 1, "sequence": -1}, "invalid_envelope", "sequence"),
        ({"gid": 1, "sequence": "soon"}, "invalid_envelope", "sequence"),
        ({"gid": 1, "geometry": {"type": "Circle", "radius": 3}}, "invalid_geometry", "geometry_shape"),
        ({"gid": 1, "geometry": [4.8, 45.7]}, "invalid_geometry", "geometry_shape"),
        ({"type": "Feature", "properties": [1, 2], "id": 1}, "invalid_envelope", "properties"),
        ({"gid": 1, "codinsee": "69123"}, "forbidden_commune", "forbidden_commune"),
        ({"gid": 1, "commune": "69123"}, "forbidden_commune", "forbidden_commune"),
    ],
)
def test_refusals_have_the_streams_reason_codes_and_field_errors(record: Any, reason: str, rule: str) -> None:
    batch = parse({"records": [{"gid": 99, "geometry": POINT}, record]})
    assert [a.index for a in batch.accepted] == [0]
    (refusal,) = batch.refused
    assert (refusal.index, refusal.reason) == (1, reason)
    assert rule in [e.rule for e in refusal.errors]
    assert all(e.message_fr for e in refusal.errors)


def test_an_admin_token_reads_each_records_commune_and_needs_one() -> None:
    batch = parse(
        {"records": [{"gid": 1, "codinsee": 69123}, {"gid": 2, "commune": "69266"}, {"gid": 3}]}, commune=None
    )
    assert [(a.event.feature_id, a.event.commune) for a in batch.accepted] == [("1", "69123"), ("2", "69266")]
    (refusal,) = batch.refused
    assert refusal.index == 2 and refusal.errors[0].rule == "insee"


def test_nested_values_are_kept_as_json_text_like_the_file_readers_do() -> None:
    (a,) = parse({"records": [{"gid": 1, "web": {"url": "https://x"}, "n": float("inf")}]}).accepted
    assert a.event.attributes["web"] == '{"url": "https://x"}' and a.event.attributes["n"] == "inf"


@pytest.mark.parametrize(
    "body", [[], "text", 3, None, {"records": {}}, {"features": []}, {"type": "FeatureCollection"}]
)
def test_a_body_that_is_not_a_batch_is_malformed(body: Any) -> None:
    with pytest.raises(MalformedBody):
        parse(body)
