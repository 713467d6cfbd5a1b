"""Pure shaping of the publish API: GeoJSON, CSV layout, change-feed cursors, OGC API documents, DCAT,
CloudEvents (Avro v2 and structured JSON), snapshot reconstruction."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import ChangeKind, FeatureState
from services.publish.domain import dcat, ogc_features
from services.publish.domain.change_feed import BadCursor, FeedPosition, decode_cursor, encode_cursor, page_outcome
from services.publish.domain.feature_documents import (
    BadFeatureId,
    CsvLayout,
    StoredFeature,
    csv_columns,
    feature_collection_chunks,
    feature_json,
    parse_public_feature_id,
    public_feature_id,
)
from services.publish.domain.notifications import (
    DATASCHEMA,
    encode_event,
    structured_event,
    version_message,
)
from services.publish.domain.versioning import (
    DatasetState,
    DiffKind,
    ReceivedChange,
    apply_entries,
    build_version,
    content_hash_of,
)

T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
CATALOGUE = DatasetCatalogue.load()
TOILETS = CATALOGUE.get("public_toilets")
assert TOILETS is not None
POINT = '{"type":"Point","coordinates":[4.85,45.76]}'


def state(adresse: str, lon: float = 4.85) -> FeatureState:
    attrs = json.dumps({"gid": 1, "codinsee": "69266", "adresse": adresse, "payant": False}, separators=(",", ":"))
    return FeatureState(f'{{"type":"Point","coordinates":[{lon},45.76]}}', attrs, f"h-{adresse}-{lon}")


# -- feature documents ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("commune", "fid"), [("69266", "12"), ("69123", "PAR:1/2"), ("2A004", "é ü")])
def test_public_feature_ids_round_trip(commune: str, fid: str) -> None:
    assert parse_public_feature_id(public_feature_id(commune, fid)) == (commune, fid)


@pytest.mark.parametrize("bad", ["", "69266", ":12", "69266:", "nocolon"])
def test_malformed_public_ids_are_refused(bad: str) -> None:
    with pytest.raises(BadFeatureId):
        parse_public_feature_id(bad)


def test_feature_collection_text_is_valid_rfc7946_geojson() -> None:
    features = [
        StoredFeature("69266", "1", POINT, '{"a":1,"b":"é"}'),
        StoredFeature("69266", "2", None, "{}"),
    ]
    doc = json.loads("".join(feature_collection_chunks(features, {"version": 3, "numberMatched": 2})))
    assert doc["type"] == "FeatureCollection" and doc["version"] == 3
    assert [f["id"] for f in doc["features"]] == ["69266:1", "69266:2"]
    assert doc["features"][0] == {
        "type": "Feature",
        "id": "69266:1",
        "geometry": {"type": "Point", "coordinates": [4.85, 45.76]},
        "properties": {"a": 1, "b": "é"},
    }
    assert doc["features"][1]["geometry"] is None
    assert json.loads("".join(feature_collection_chunks([], {})))["features"] == []


@given(st.text(min_size=1, max_size=20).filter(lambda s: ":" not in s), st.text(max_size=30))
def test_feature_json_escapes_any_id(commune: str, fid: str) -> None:
    f = StoredFeature(commune, fid or "x", POINT, "{}")
    assert json.loads(feature_json(f))["id"] == f"{commune}:{fid or 'x'}"


def test_csv_follows_the_schema_columns_with_a_wkt_geometry_when_no_national_schema() -> None:
    assert TOILETS is not None
    layout = CsvLayout(TOILETS)
    assert layout.columns == [*TOILETS.field_names, "geometry"] if TOILETS.national_schema is None else True
    text = "".join(layout.chunks([StoredFeature("69266", "1", POINT, state('1 rue, "A"').attributes_json)]))
    rows = list(csv.reader(io.StringIO(text)))
    header, row = rows
    record = dict(zip(header, row, strict=True))
    assert record["adresse"] == '1 rue, "A"' and record["gid"] == "1" and record["payant"] == "false"
    assert record["codinsee"] == "69266" and record["web"] == ""
    if "geometry" in record:
        assert record["geometry"] == "POINT (4.85 45.76)"


def test_csv_of_a_dataset_with_a_national_schema_has_exactly_its_columns() -> None:
    assert TOILETS is not None
    national = replace(TOILETS, national_schema={"name": "x/y", "version": "1"})  # type: ignore[arg-type]
    assert csv_columns(national) == list(TOILETS.field_names)


# -- change feed cursors ---------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**40), st.text(max_size=10), st.text(max_size=40))
def test_cursor_round_trips(version: int, commune: str, fid: str) -> None:
    p = FeedPosition(version, commune, fid)
    assert decode_cursor(encode_cursor(p)) == p


@pytest.mark.parametrize("token", ["", "!!!", "bm90IGpzb24", encode_cursor(FeedPosition(1, "a", "b"))[:-3] + "xyz"])
def test_foreign_cursors_are_refused(token: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(token)


def test_page_outcome_gives_a_cursor_or_the_next_since() -> None:
    keys = [FeedPosition(5, "c", str(i)) for i in range(3)] + [FeedPosition(6, "c", "0")]
    more = page_outcome(keys, 3, 4)
    assert more.next_since is None and decode_cursor(more.cursor or "") == keys[2]
    end = page_outcome(keys, 4, 4)
    assert end.cursor is None and end.next_since == 6
    assert page_outcome([], 10, 7).next_since == 7


# -- versions: snapshot = v1 + diffs ---------------------------------------------------------------------


def change(cid: int, fid: str, before: FeatureState | None, after: FeatureState | None) -> ReceivedChange:
    kind = ChangeKind.CREATED if before is None else ChangeKind.DELETED if after is None else ChangeKind.UPDATED
    return ReceivedChange(cid, "public_toilets", "69266", fid, kind, before, after)


@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 6), st.sampled_from(["a", "b", "c", None])), min_size=1, max_size=8),
        min_size=1,
        max_size=8,
    )
)
def test_snapshot_at_n_is_version_1_plus_diffs_and_the_hash_matches(
    batches: list[list[tuple[int, str | None]]],
) -> None:
    """Random batches of upserts/deletes: applying each version's diff reproduces the live state, and the
    incremental content hash equals a full recomputation."""
    live: dict[str, FeatureState] = {}
    ds = DatasetState("public_toilets", 0, 0, "0" * 64)
    snapshot: dict[tuple[str, str], FeatureState] = {}
    cid = 0
    for batch in batches:
        changes = []
        for fid_n, value in batch:
            fid = str(fid_n)
            before = live.get(fid)
            after = None if value is None else state(value)
            if before is None and after is None:
                continue
            cid += 1
            changes.append(change(cid, fid, before, after))
            if after is None:
                live.pop(fid)
            else:
                live[fid] = after
        draft = build_version(ds, changes, T0)
        if draft is None:
            continue
        apply_entries(snapshot, draft.entries)
        ds = DatasetState(ds.dataset, draft.version, draft.feature_count, draft.content_hash)
        assert snapshot == {("69266", k): v for k, v in live.items()}
        assert draft.feature_count == len(live)
        assert draft.content_hash == content_hash_of([("69266", k, v.content_hash) for k, v in live.items()])


# -- notifications -----------------------------------------------------------------------------------------


def small_draft():  # type: ignore[no-untyped-def]
    ds = DatasetState("public_toilets", 4, 10, "0" * 64)
    return build_version(
        ds,
        [
            change(1, "1", None, state("new")),
            change(2, "2", state("old"), state("upd")),
            change(3, "3", state("gone"), None),
        ],
        T0,
    )


def test_kafka_message_v2_inlines_small_diffs_and_a_removal_carries_what_was_removed() -> None:
    draft = small_draft()
    attrs, data = version_message(draft, "urn:test", base_url="http://h:1", max_inline_changes=3)
    assert attrs.id == "public_toilets:v5" and attrs.dataschema == DATASCHEMA
    assert data.changes_included and [c.kind for c in data.changes] == ["added", "updated", "removed"]
    removed = data.changes[2]
    assert removed.after is None and removed.before == state("gone")
    assert {lk.rel: lk.href for lk in data.links}["diff"] == "http://h:1/datasets/public_toilets/versions/5/diff"
    codecs = Codecs()
    assert codecs.decode_dataset_version(codecs.encode_dataset_version(data)) == data
    _, big = version_message(draft, "urn:test", base_url="http://h:1", max_inline_changes=2)
    assert not big.changes_included and big.changes == () and big.links


def test_a_v1_message_still_decodes_with_the_v2_reader() -> None:
    codecs = Codecs()
    _, data = version_message(small_draft(), "urn:test", base_url="http://h:1", max_inline_changes=3)
    v1 = codecs.catalogue.encode(
        "dataset_version",
        {
            k: getattr(data, k)
            for k in (
                "dataset",
                "version",
                "published_at",
                "added",
                "updated",
                "removed",
                "feature_count",
                "content_hash",
                "first_change_id",
                "last_change_id",
            )
        },
        version=1,
    )
    old = codecs.decode_dataset_version(v1)
    assert old.version == 5 and old.links == () and old.changes == () and not old.changes_included


def test_structured_cloudevent_is_json_with_geojson_before_and_after() -> None:
    event = structured_event(small_draft(), "urn:test", base_url="http://h:1", max_inline_changes=10)
    assert json.loads(encode_event(event)) == event
    assert event["specversion"] == "1.0" and event["id"] == "public_toilets:v5" and event["subject"] == "public_toilets"
    data = event["data"]
    assert (data["added"], data["updated"], data["removed"], data["feature_count"]) == (1, 1, 1, 10)
    by_kind = {c["kind"]: c for c in data["changes"]}
    assert by_kind["removed"]["after"] is None
    assert by_kind["removed"]["before"]["properties"]["adresse"] == "gone"
    assert by_kind["updated"]["before"]["properties"]["adresse"] == "old"
    assert by_kind["updated"]["after"]["geometry"]["type"] == "Point"
    assert "changes" not in structured_event(small_draft(), "s", base_url="http://h", max_inline_changes=0)["data"]


# -- OGC API – Features ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bbox", "limit", "offset", "expected"),
    [
        (None, None, None, ogc_features.ItemsQuery(None, 10, 0)),
        ("4.8,45.7,4.9,45.8", 100, 20, ogc_features.ItemsQuery((4.8, 45.7, 4.9, 45.8), 100, 20)),
        ("4.8,45.7,0,4.9,45.8,100", 5, 0, ogc_features.ItemsQuery((4.8, 45.7, 4.9, 45.8), 5, 0)),
    ],
)
def test_items_query_parsing(bbox, limit, offset, expected) -> None:  # type: ignore[no-untyped-def]
    assert ogc_features.parse_items_query(bbox, limit, offset) == expected


@pytest.mark.parametrize(
    ("bbox", "limit", "offset"),
    [
        ("1,2,3", None, None),
        ("a,b,c,d", None, None),
        ("0,50,1,40", None, None),
        (None, 0, None),
        (None, 10_001, None),
        (None, 10, -1),
    ],
)
def test_bad_items_queries_are_refused(bbox, limit, offset) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ogc_features.BadQuery):
        ogc_features.parse_items_query(bbox, limit, offset)


def test_items_links_page_forward_and_back() -> None:
    q = ogc_features.ItemsQuery((4.8, 45.7, 4.9, 45.8), 10, 10)
    links = {lk["rel"]: lk["href"] for lk in ogc_features.items_links("http://h/ogc", "d", q, 10, 25)}
    assert (
        "offset=20" in links["next"] and "offset=0" in links["prev"] and "bbox=4.8%2C45.7%2C4.9%2C45.8" in links["next"]
    )
    last = {
        lk["rel"] for lk in ogc_features.items_links("http://h/ogc", "d", ogc_features.ItemsQuery(None, 10, 20), 5, 25)
    }
    assert "next" not in last and "prev" in last


def test_landing_page_and_collection_documents() -> None:
    assert TOILETS is not None
    landing = ogc_features.landing_page("http://h/ogc", "http://h/openapi.json")
    assert {lk["rel"] for lk in landing["links"]} >= {"self", "service-desc", "conformance", "data"}
    assert ogc_features.conformance()["conformsTo"][0].endswith("/conf/core")
    coll = ogc_features.collection("http://h/ogc", TOILETS, None, 3)
    assert coll["itemType"] == "feature" and coll["extent"]["spatial"]["bbox"] == [list(TOILETS.bounds)]


# -- DCAT --------------------------------------------------------------------------------------------------


def test_dcat_dataset_lists_distributions_and_versions_newest_first() -> None:
    assert TOILETS is not None
    versions = [dcat.VersionSummary(v, T0, 10, 1, 0, 0, "0" * 64) for v in (3, 2, 1)]
    doc = dcat.dataset_document("http://h", TOILETS, versions, 3)
    assert (
        doc["@type"] == "dcat:Dataset" and doc["dcat:version"] == "3" and doc["dct:modified"] == "2026-11-03T09:00:00Z"
    )
    assert [v["dcat:version"] for v in doc["dcat:hasVersion"]] == ["3", "2", "1"]
    assert {d["dcat:mediaType"] for d in doc["dcat:distribution"]} == {"application/geo+json", "text/csv"}
    assert all(k.split(":")[0] in doc["@context"] for k in doc if ":" in k and not k.startswith("@"))
    empty = dcat.dataset_document("http://h", TOILETS, [], 0)
    assert "dcat:version" not in empty and empty["dcat:hasVersion"] == []
    cat = dcat.catalogue_document("http://h", [dcat.dataset_node("http://h", TOILETS, versions, 3)], T0)
    assert cat["@type"] == "dcat:Catalog" and len(cat["dcat:dataset"]) == 1


def test_diff_kinds_are_the_avro_enum_symbols() -> None:
    fields = json.loads((Codecs().catalogue.latest("dataset_version").path).read_text())["fields"]
    changes = next(f for f in fields if f["name"] == "changes")
    symbols = changes["type"]["items"]["fields"][2]["type"]["symbols"]
    assert symbols == [k.value for k in DiffKind]


@pytest.mark.parametrize("definition", list(CATALOGUE), ids=lambda d: d.id)
def test_every_catalogue_dataset_has_a_csv_layout_dcat_node_and_ogc_collection(definition) -> None:  # type: ignore[no-untyped-def]
    columns = csv_columns(definition)
    assert columns[: len(definition.field_names)] == list(definition.field_names)
    assert len(columns) == len(definition.field_names) + (
        1 if definition.national_schema is None and definition.geometry.type != "None" else 0
    )
    node = dcat.dataset_node("http://h", definition, [dcat.VersionSummary(1, T0, 1, 1, 0, 0, "0" * 64)], 1)
    json.dumps(node)  # plain JSON, whatever the definition's national schema object is
    if definition.national_schema is not None:
        assert node["dct:conformsTo"]["@type"] == "dct:Standard"
    assert ogc_features.collection("http://h/ogc", definition, None, 1)["id"] == definition.id
