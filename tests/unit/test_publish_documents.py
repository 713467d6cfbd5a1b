"""Pure shaping of the publish API: GeoJSON, CSV layout, change-feed cursors, OGC API documents, DCAT,
CloudEvents (Avro v2 and structured JSON), snapshot reconstruction."""

from __future__ import annotations

import csv
import io
import json
import math
import string
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st
from rdflib import Graph, URIRef
from rdflib.namespace import DCTERMS, RDF

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import ChangeKind, FeatureState
from services.publish.domain import dcat, ogc_features
from services.publish.domain.change_feed import BadCursor, FeedPosition, decode_cursor, encode_cursor, page_outcome
from services.publish.domain.feature_documents import (
    CSV_FIELD_LIMIT,
    BadFeatureId,
    CsvLayout,
    StoredFeature,
    csv_columns,
    feature_collection_chunks,
    feature_json,
    parse_public_feature_id,
    public_feature_id,
    wkt_cell,
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
    assert TOILETS.national_schema is None and layout.columns == [*TOILETS.field_names, "WKT"]
    text = "".join(layout.chunks([StoredFeature("69266", "1", POINT, state('1 rue, "A"').attributes_json)]))
    rows = list(csv.reader(io.StringIO(text)))
    header, row = rows
    record = dict(zip(header, row, strict=True))
    assert record["adresse"] == '1 rue, "A"' and record["gid"] == "1" and record["payant"] == "false"
    assert record["codinsee"] == "69266" and record["web"] == ""
    assert record["WKT"] == "POINT (4.85 45.76)"


def test_csv_of_a_dataset_with_a_national_schema_has_exactly_its_columns() -> None:
    assert TOILETS is not None
    national = replace(TOILETS, national_schema={"name": "x/y", "version": "1"})  # type: ignore[arg-type]
    assert csv_columns(national) == list(TOILETS.field_names)
    assert csv_columns(national, with_wkt=True) == [*TOILETS.field_names, "WKT"]


def test_csvt_gives_gdal_the_schema_types_and_the_widest_value_of_each_string_column() -> None:
    carpool = CATALOGUE.get("carpool_places")
    assert carpool is not None
    layout = CsvLayout(carpool, with_wkt=True)
    attributes = json.dumps({"id_lieu": "69123-C-001", "nom_lieu": "Aire de l'Étang", "date_maj": "2026-01-15", "ouvert": True, "Xlong": 4.8, "Ylat": 45.7, "nbre_pl": 12})  # fmt: skip
    rows = [layout.cells(StoredFeature("69123", "1", POINT, attributes)), layout.cells(StoredFeature("69123", "2", POINT, "{}"))]  # fmt: skip
    types = dict(zip(layout.columns, next(csv.reader(io.StringIO(layout.csvt(layout.widest(rows))))), strict=True))
    assert types["nom_lieu"] == "String(16)"  # bytes: É is two
    assert types["id_lieu"] == "String(11)" and types["comm"] == "String(1)"
    assert (types["date_maj"], types["ouvert"], types["Xlong"], types["nbre_pl"]) == ("Date", "Integer(Boolean)", "Real", "Integer64")  # fmt: skip
    assert types["WKT"] == "WKT"


def test_wkt_cells_keep_7_decimals_and_stay_under_pythons_csv_field_limit() -> None:
    assert wkt_cell('{"type":"Point","coordinates":[4.851234567891,45.76]}') == "POINT (4.8512346 45.76)"
    assert wkt_cell(None) == ""
    # a ring of 6,500 vertices is ~141,000 characters with 7 decimals: 6 decimals bring it under the limit
    ring = [[4.8 + 0.01 * math.cos(i / 1000) + 1e-9 * i, 45.7 + 0.01 * math.sin(i / 1000)] for i in range(6500)]
    ring.append(ring[0])
    text = wkt_cell(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    assert len(text) < CSV_FIELD_LIMIT and text.startswith("POLYGON")
    assert shapely.from_wkt(text).equals_exact(shapely.Polygon(ring), 1e-5)
    row = CsvLayout(TOILETS).row(StoredFeature("69266", "1", json.dumps({"type": "Polygon", "coordinates": [ring]}), "{}"))  # type: ignore[arg-type]  # fmt: skip
    assert len(next(csv.reader(io.StringIO(row)))) == len(CsvLayout(TOILETS).columns)  # type: ignore[arg-type]


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
    assert attrs.id == "public_toilets:v5" and attrs.dataschema == "http://h:1/" + DATASCHEMA
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


def _params(bbox: str | None, limit: int | None, offset: int | None) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in (("bbox", bbox), ("limit", limit), ("offset", offset)) if v is not None]


@pytest.mark.parametrize(
    ("bbox", "limit", "offset", "expected"),
    [
        (None, None, None, ogc_features.ItemsQuery(None, 10, 0)),
        ("4.8,45.7,4.9,45.8", 100, 20, ogc_features.ItemsQuery((4.8, 45.7, 4.9, 45.8), 100, 20)),
        ("4.8,45.7,0,4.9,45.8,100", 5, 0, ogc_features.ItemsQuery((4.8, 45.7, 4.9, 45.8), 5, 0)),
        (None, 10_001, None, ogc_features.ItemsQuery(None, 10_000, 0)),  # clamped (/req/core/fc-limit-response)
        (None, 100_000, None, ogc_features.ItemsQuery(None, 10_000, 0)),
    ],
)
def test_items_query_parsing(bbox, limit, offset, expected) -> None:  # type: ignore[no-untyped-def]
    assert ogc_features.parse_items_query(_params(bbox, limit, offset)) == expected


@pytest.mark.parametrize(
    ("bbox", "limit", "offset"),
    [
        ("1,2,3", None, None),
        ("a,b,c,d", None, None),
        ("0,50,1,40", None, None),
        ("0,0,nan,1", None, None),
        ("-200,0,1,1", None, None),
        (None, 0, None),
        (None, -5, None),
        (None, 10, -1),
    ],
)
def test_bad_items_queries_are_refused(bbox, limit, offset) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ogc_features.BadQuery):
        ogc_features.parse_items_query(_params(bbox, limit, offset))


@pytest.mark.parametrize(
    "params",
    [
        [("foo", "bar")],
        [("filter", "x=1"), ("filter", "y=2")],
        [("crs", "EPSG:4326")],
        [("limit", "abc")],
        [("limit", "1"), ("limit", "2")],
    ],
)
def test_unknown_repeated_or_non_numeric_parameters_are_refused(params: list[tuple[str, str]]) -> None:
    with pytest.raises(ogc_features.BadQuery):
        ogc_features.parse_items_query(params)


@pytest.mark.parametrize(
    ("value", "start", "end"),
    [
        ("2026-11-03T09:00:00Z", datetime(2026, 11, 3, 9, tzinfo=UTC), datetime(2026, 11, 3, 9, tzinfo=UTC)),
        ("2026-11-03T10:00:00+01:00", datetime(2026, 11, 3, 9, tzinfo=UTC), datetime(2026, 11, 3, 9, tzinfo=UTC)),
        (
            "2026-11-03T09:00:00Z/2026-11-04T00:00:00Z",
            datetime(2026, 11, 3, 9, tzinfo=UTC),
            datetime(2026, 11, 4, tzinfo=UTC),
        ),
        ("../2026-11-04T00:00:00Z", None, datetime(2026, 11, 4, tzinfo=UTC)),
        ("/2026-11-04T00:00:00Z", None, datetime(2026, 11, 4, tzinfo=UTC)),
        ("2026-11-03T09:00:00Z/..", datetime(2026, 11, 3, 9, tzinfo=UTC), None),
        ("2026-11-03T09:00:00Z/", datetime(2026, 11, 3, 9, tzinfo=UTC), None),
        (
            "2026-11-03",
            datetime(2026, 11, 3, tzinfo=UTC),
            datetime(2026, 11, 4, tzinfo=UTC) - timedelta(microseconds=1),
        ),
    ],
)
def test_datetime_instants_and_intervals(value: str, start: datetime | None, end: datetime | None) -> None:
    assert ogc_features.parse_datetime(value) == ogc_features.TimeInterval(start, end)


@pytest.mark.parametrize(
    "value", ["../..", "/", "yesterday", "2026-11-03T09:00:00", "2026-11-04T00:00:00Z/2026-11-03T00:00:00Z", "a/b/c"]
)
def test_bad_datetimes_are_refused(value: str) -> None:
    with pytest.raises(ogc_features.BadQuery):
        ogc_features.parse_datetime(value)


UNRESERVED = set(string.ascii_letters + string.digits + "-._~")


@given(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=40))
def test_ogc_feature_ids_are_url_safe_stable_and_round_trip(commune: str, fid: str) -> None:
    ogc_id = ogc_features.ogc_feature_id(commune, fid)
    assert set(ogc_id) <= UNRESERVED and quote(ogc_id, safe="") == ogc_id
    assert ogc_features.parse_ogc_feature_id(ogc_id) == (commune, fid)
    assert ogc_features.ogc_feature_id(commune, fid) == ogc_id


def test_ogc_feature_ids_read_plainly_and_refuse_other_spellings() -> None:
    assert ogc_features.ogc_feature_id("69123", "WC-12") == "69123.WC-12"
    assert ogc_features.ogc_feature_id("69123", "a|b c") == "69123.a~7Cb~20c"
    assert ogc_features.ogc_feature_id("69.1", "x~y") == "69~2E1.x~7Ey"
    for bad in ("69123", "69123.", ".x", "69123.a~7cb", "69123.a|b", "69123.~FF"):
        with pytest.raises(ogc_features.BadFeatureId):
            ogc_features.parse_ogc_feature_id(bad)


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
    landing = ogc_features.landing_page("http://h/ogc", "http://h/ogc/api")
    assert {lk["rel"] for lk in landing["links"]} >= {"self", "service-desc", "conformance", "data"}
    assert ogc_features.conformance()["conformsTo"][0].endswith("/conf/core")
    coll = ogc_features.collection("http://h/ogc", TOILETS, None, 3)
    assert coll["itemType"] == "feature" and coll["extent"]["spatial"]["bbox"] == [list(TOILETS.bounds)]


# -- DCAT --------------------------------------------------------------------------------------------------


def _dcat_graph(definition, versions, total):  # type: ignore[no-untyped-def]
    entry = dcat.DatasetEntry(definition, versions, total, T0 if total else None)
    return dcat.dataset_graph("http://h", entry, CATALOGUE.territory, dcat.DEFAULT_CONTACT)


def test_dcat_dataset_lists_distributions_and_versions_newest_first() -> None:
    assert TOILETS is not None
    versions = [dcat.VersionSummary(v, T0, 10, 1, 0, 0, "0" * 64) for v in (3, 2, 1)]
    g = _dcat_graph(TOILETS, versions, 3)
    node = URIRef("http://h/datasets/public_toilets")
    assert (node, RDF.type, dcat.DCAT.Dataset) in g and str(g.value(node, dcat.DCAT.version)) == "3"
    assert g.value(node, DCTERMS.modified).toPython() == T0
    assert sorted(str(g.value(v, dcat.DCAT.version)) for v in g.objects(node, dcat.DCAT.hasVersion)) == ["1", "2", "3"]
    assert {str(g.value(d, dcat.DCAT.mediaType)) for d in g.objects(node, dcat.DCAT.distribution)} == {
        "https://www.iana.org/assignments/media-types/application/geo+json",
        "https://www.iana.org/assignments/media-types/text/csv",
    }
    empty = _dcat_graph(TOILETS, [], 0)
    assert empty.value(node, dcat.DCAT.version) is None and not list(empty.objects(node, dcat.DCAT.hasVersion))
    assert empty.value(node, DCTERMS.issued) is None


@pytest.mark.parametrize(
    ("param", "accept", "expected"),
    [
        (None, None, "json-ld"),
        (None, "*/*", "json-ld"),
        (None, "text/turtle", "turtle"),
        (None, "application/rdf+xml", "xml"),
        (None, "text/html, application/rdf+xml;q=0.9, text/turtle;q=0.5", "xml"),
        (None, "text/turtle;q=0.2, application/ld+json;q=0.8", "json-ld"),
        (None, "text/turtle;q=0, application/rdf+xml;q=0.1", "xml"),
        ("ttl", "application/rdf+xml", "turtle"),
        ("RDF", None, "xml"),
        ("jsonld", "text/turtle", "json-ld"),
    ],
)
def test_rdf_format_is_negotiated(param: str | None, accept: str | None, expected: str) -> None:
    assert dcat.negotiate(param, accept).name == expected


def test_an_unknown_rdf_format_is_refused() -> None:
    with pytest.raises(dcat.UnknownFormat):
        dcat.negotiate("n3", None)


def test_catalogue_pages_link_first_last_next_and_previous_in_both_hydra_vocabularies() -> None:
    ids = CATALOGUE.ids()
    hydra = dcat.HYDRA
    for number in (1, 2, 4):
        g = dcat.catalogue_graph("http://h", [], ids, dcat.Page(number, 4, len(ids)), dcat.TURTLE, CATALOGUE.territory, dcat.DEFAULT_CONTACT, None)  # fmt: skip
        view = g.value(predicate=RDF.type, object=hydra.PartialCollectionView)
        assert (view, RDF.type, hydra.PagedCollection) in g
        assert str(view) == f"http://h/catalog?format=ttl&page={number}&page_size=4"
        assert g.value(view, hydra.next) == g.value(view, hydra.nextPage)
        assert g.value(view, hydra.last) == URIRef("http://h/catalog?format=ttl&page=4&page_size=4")
        expect_next = None if number == 4 else URIRef(f"http://h/catalog?format=ttl&page={number + 1}&page_size=4")
        assert g.value(view, hydra.next) == expect_next
        assert (g.value(view, hydra.previous) is None) == (number == 1)
        assert (URIRef("http://h/ogc"), RDF.type, dcat.DCAT.DataService) in g if number == 1 else True


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
    g = _dcat_graph(definition, [dcat.VersionSummary(1, T0, 1, 1, 0, 0, "0" * 64)], 1)
    node = URIRef(f"http://h/datasets/{definition.id}")
    assert definition.description_fr and definition.description_en and definition.keywords and definition.themes
    assert str(g.value(node, DCTERMS.description)) in (definition.description_fr, definition.description_en)
    for fmt in (dcat.TURTLE, dcat.RDF_XML, dcat.JSON_LD):
        assert len(Graph().parse(data=dcat.serialize(g, fmt), format=fmt.name)) == len(g)
    if definition.national_schema is not None:
        schema = g.value(node, DCTERMS.conformsTo)
        assert isinstance(schema, URIRef) and str(schema).startswith("https://schema.data.gouv.fr/schemas/")
        assert str(schema).endswith(f"/{definition.national_schema.version}/schema.json")
    assert ogc_features.collection("http://h/ogc", definition, None, 1)["id"] == definition.id
