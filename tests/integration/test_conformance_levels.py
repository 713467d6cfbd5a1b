"""Conformance levels on the real stack (docs/validation.md): a drinking fountain that lacks fields the
national schema requires is taken in as *incomplete*, published in the Métropole's own outputs (GeoJSON,
OGC API, changes feed, version counts) with what it lacks, and left out of the national-layout CSV, which
stays valid for frictionless against the national schema and says how many records it left out."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from frictionless import Resource, Schema

from services.contract.datasets.catalogue import DEFINITIONS_DIR
from services.contract.messages import AttributeValue, ChangeEvent, Operation
from tests.integration.pipeline_harness import Pipeline, wait_for

pytestmark = pytest.mark.integration
VILLEURBANNE = "69266"
DATASET = "drinking_fountains"


def fountain(fid: str, at: tuple[float, float], **attrs: AttributeValue) -> ChangeEvent:
    values: dict[str, AttributeValue] = {
        "id": fid,
        "code_commune_insee": VILLEURBANNE,
        "longitude": at[0],
        "latitude": at[1],
        **attrs,
    }
    return ChangeEvent(
        str(uuid.uuid4()), DATASET, VILLEURBANNE, fid, Operation.UPSERT, datetime.now(UTC), 1, "test", None, values
    )


def test_an_incomplete_record_is_published_as_such_and_left_out_of_the_national_csv(pipeline: Pipeline) -> None:
    tag = uuid.uuid4().hex[:8]
    complete = fountain(
        f"69266-F-{tag}-1",
        (4.8702, 45.7661),
        type_fontaine="robinet",
        conditions_acces="aucune",
        accessible_pmr=True,
        remplissage_contenant_possible=False,
    )
    # lacks type_fontaine and conditions_acces; its accessible_pmr breaks the field's rule
    incomplete = fountain(
        f"69266-F-{tag}-2", (4.8722, 45.7681), accessible_pmr="peut-être", remplissage_contenant_possible=True
    )
    pipeline.produce_events([complete, incomplete])
    key = f"{VILLEURBANNE}:{incomplete.feature_id}"

    ((version,),) = wait_for(
        "both fountains published",
        lambda: (
            pipeline.sql(
                "SELECT max(version) FROM published_feature WHERE dataset = %s AND feature_id = ANY(%s) "
                "HAVING count(*) = 2",
                DATASET,
                [complete.feature_id, incomplete.feature_id],
            )
            or None
        ),
    )
    api = pipeline.services["publish"].base_url
    missing = ["type_fontaine", "conditions_acces", "accessible_pmr"]

    # GeoJSON of the version: both, the incomplete one marked with what it lacks
    doc = httpx.get(f"{api}/datasets/{DATASET}/versions/{version}/features.geojson", timeout=30).json()
    props = {f["id"]: f["properties"] for f in doc["features"]}
    assert props[key]["odc:conformance"] == "incomplete"
    assert props[key]["odc:missing"] == missing and props[key]["odc:dropped"] == ["accessible_pmr"]
    assert props[key]["accessible_pmr"] is None  # the faulty value is never published as it was sent
    assert "odc:conformance" not in props[f"{VILLEURBANNE}:{complete.feature_id}"]

    # OGC API – Features item
    item = httpx.get(f"{api}/ogc/collections/{DATASET}/items/{key}", timeout=30).json()
    assert item["properties"]["odc:conformance"] == "incomplete" and item["properties"]["odc:missing"] == missing

    # changes feed
    feed = httpx.get(f"{api}/datasets/{DATASET}/changes", params={"since": version - 1}, timeout=30).json()
    changed = [c for c in feed["changes"] if c.get("feature_id") == incomplete.feature_id or key in str(c)]
    assert changed and "odc:missing" in str(changed[0])

    # counts per level in the version and the dataset
    v = httpx.get(f"{api}/datasets/{DATASET}/versions/{version}", timeout=30).json()
    assert v["conformance"]["incomplete"] >= 1
    assert v["conformance"]["conforming"] + v["conformance"]["incomplete"] == v["feature_count"]
    ((stored_incomplete,),) = pipeline.sql(
        "SELECT count(*) FROM published_feature WHERE dataset = %s AND attributes::jsonb ? 'odc:conformance'", DATASET
    )
    latest = pipeline.latest_version(DATASET)
    if latest == version:
        assert v["conformance"]["incomplete"] == stored_incomplete

    # ...and in the version's notification (Avro dataset_version v3)
    (note,) = wait_for(
        "the version's notification",
        lambda: [d for _, d in pipeline.version_notifications(DATASET) if d.version == version] or None,
    )
    assert note.incomplete == v["conformance"]["incomplete"]

    # the national-layout CSV: only conforming records, valid for frictionless, and it says what it left out
    r = httpx.get(f"{api}/datasets/{DATASET}/versions/{version}/features.csv", timeout=30)
    assert r.status_code == 200
    assert r.headers["x-odc-left-out"].startswith(f"{v['conformance']['incomplete']} incomplete record(s) left out")
    assert complete.feature_id in r.text and incomplete.feature_id not in r.text
    assert r.text.count("\r\n") == v["conformance"]["conforming"] + 1
    schema = Schema.from_descriptor(json.loads((DEFINITIONS_DIR / DATASET / "schema.json").read_text()))
    report = Resource(r.content, format="csv", schema=schema).validate()
    assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])[:10]
