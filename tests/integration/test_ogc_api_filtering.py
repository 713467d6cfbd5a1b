"""OGC API – Features – Part 3 (filtering) against the real stack: the queryables (a valid JSON Schema, linked
from the collection as ``describedby``), CQL2 text and JSON filters returning exactly the expected features,
S_INTERSECTS with a polygon and a bbox, and invalid filters answered 400 with an exception body. Every check
is relative to the features this module publishes itself (their addresses carry a tag of their own)."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from services.contract.messages import ChangeEvent
from tests.integration.pipeline_harness import Pipeline, toilet_event

pytestmark = pytest.mark.integration
DATASET = "public_toilets"
QUERYABLES_REL = "http://www.opengis.net/def/rel/ogc/1.0/queryables"


@dataclass(frozen=True)
class Published:
    ogc: str
    tag: str
    gids: dict[str, int]  # a, b, c -> gid
    places: dict[str, tuple[float, float]]


def get(url: str, **kw: Any) -> httpx.Response:
    return httpx.get(url, timeout=30, **kw)


@pytest.fixture(scope="module")
def published(pipeline: Pipeline) -> Published:
    tag = "cql" + uuid.uuid4().hex[:8]
    base = random.randint(10_000_000, 90_000_000)
    gids = {"a": base + 1, "b": base + 2, "c": base + 3}
    places = {"a": (4.8101, 45.7401), "b": (4.8201, 45.7501), "c": (4.8301, 45.7601)}
    events: list[ChangeEvent] = [
        toilet_event(str(gids[k]), seq=1, lon=places[k][0], lat=places[k][1], adresse=f"{i} rue {tag} {k}")
        for i, k in enumerate(gids, start=1)
    ]
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.produce_events(events)
    pipeline.settle(DATASET, before, len(events))
    return Published(f"{pipeline.services['publish'].base_url}/ogc", tag, gids, places)


def filtered(p: Published, flt: str, **params: Any) -> httpx.Response:
    return get(f"{p.ogc}/collections/{DATASET}/items", params={"filter": flt, "limit": 1000, **params})


def found(p: Published, r: httpx.Response) -> set[str]:
    """Which of this module's features (a, b, c) a 200 answer holds; nothing else may match its filters."""
    assert r.status_code == 200, r.text
    by_gid = {v: k for k, v in p.gids.items()}
    got = {by_gid.get(f["properties"].get("gid"), f"other:{f['id']}") for f in r.json()["features"]}
    assert r.json()["numberMatched"] == len(got)
    return got


def is_exception(r: httpx.Response) -> bool:
    body = r.json()
    return r.status_code == 400 and isinstance(body.get("code"), str) and isinstance(body.get("description"), str)


def test_queryables_are_a_valid_json_schema_of_the_table_schema_fields(published: Published) -> None:
    r = get(f"{published.ogc}/collections/{DATASET}/queryables")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/schema+json")
    schema = r.json()
    Draft202012Validator.check_schema(schema)  # raises on an invalid schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    props = schema["properties"]
    assert props["gid"]["type"] == "integer" and props["unisexe"]["type"] == "boolean"
    assert props["adresse"]["type"] == "string" and "geometry" in props
    assert get(f"{published.ogc}/collections/no_such_dataset/queryables").status_code == 404


def test_the_collection_links_its_queryables_and_describedby(published: Published) -> None:
    links = get(f"{published.ogc}/collections/{DATASET}").json()["links"]
    url = f"{published.ogc}/collections/{DATASET}/queryables"
    for rel in (QUERYABLES_REL, "describedby"):
        (link,) = [lk for lk in links if lk["rel"] == rel]
        assert link["href"] == url and link["type"] == "application/schema+json"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("adresse LIKE '%{tag}%'", {"a", "b", "c"}),
        ("adresse LIKE '%{tag}%' AND gid > {b}", {"c"}),
        ("adresse LIKE '%{tag}%' AND gid >= {b}", {"b", "c"}),
        ("adresse LIKE '%{tag}%' AND {b} >= gid", {"a", "b"}),
        ("adresse = '2 rue {tag} b'", {"b"}),
        ("adresse LIKE '%{tag}%' AND NOT gid = {a}", {"b", "c"}),
        ("gid = {a} OR gid = {c}", {"a", "c"}),
        ("adresse LIKE '%{tag}%' AND gid BETWEEN {a} AND {b}", {"a", "b"}),
        ("gid IN ({a}, {c})", {"a", "c"}),
        ("adresse LIKE '%{tag}%' AND infoloc IS NULL", {"a", "b", "c"}),
        ("adresse LIKE '%{tag}%' AND adresse IS NOT NULL AND gid < {a}", set()),
    ],
)
def test_cql2_text_filters_return_exactly_the_expected_features(
    published: Published, template: str, expected: set[str]
) -> None:
    flt = template.format(tag=published.tag, **published.gids)
    assert found(published, filtered(published, flt)) == expected, flt


def test_cql2_json_filter_returns_exactly_the_expected_features(published: Published) -> None:
    gids = published.gids
    flt = {
        "op": "and",
        "args": [
            {"op": "like", "args": [{"property": "adresse"}, f"%{published.tag}%"]},
            {"op": "in", "args": [{"property": "gid"}, [gids["a"], gids["b"]]]},
            {"op": "not", "args": [{"op": "=", "args": [{"property": "gid"}, gids["a"]]}]},
        ],
    }
    r = filtered(published, json.dumps(flt), **{"filter-lang": "cql2-json"})
    assert found(published, r) == {"b"}
    between = {"op": "between", "args": [{"property": "gid"}, gids["b"], gids["c"]]}
    assert found(published, filtered(published, json.dumps(between), **{"filter-lang": "cql2-json"})) == {"b", "c"}


def test_s_intersects_with_a_polygon_and_a_bbox(published: Published) -> None:
    (ax, ay), (bx, by) = published.places["a"], published.places["b"]
    x0, y0, x1, y1 = ax - 0.001, ay - 0.001, bx + 0.001, by + 0.001  # around a and b, not c
    poly = f"POLYGON(({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"
    tagged = f"adresse LIKE '%{published.tag}%'"
    assert found(published, filtered(published, f"S_INTERSECTS(geometry, {poly}) AND {tagged}")) == {"a", "b"}
    box = f"S_INTERSECTS(geometry, BBOX({ax - 0.001}, {ay - 0.001}, {ax + 0.001}, {ay + 0.001})) AND {tagged}"
    assert found(published, filtered(published, box)) == {"a"}
    as_json = {
        "op": "and",
        "args": [
            {"op": "s_intersects", "args": [{"property": "geometry"}, {"bbox": [x0, y0, x1, y1]}]},
            {"op": "like", "args": [{"property": "adresse"}, f"%{published.tag}%"]},
        ],
    }
    assert found(published, filtered(published, json.dumps(as_json), **{"filter-lang": "cql2-json"})) == {"a", "b"}


def test_paging_links_keep_the_filter(published: Published) -> None:
    flt = f"adresse LIKE '%{published.tag}%'"
    page = get(f"{published.ogc}/collections/{DATASET}/items", params={"filter": flt, "limit": 2}).json()
    assert page["numberMatched"] == 3 and len(page["features"]) == 2
    (nxt,) = [lk["href"] for lk in page["links"] if lk["rel"] == "next"]
    rest = get(nxt).json()
    assert len(rest["features"]) == 1


@pytest.mark.parametrize(
    "params",
    [
        {"filter": "adresse ="},  # does not parse
        {"filter": "nosuchfield = 1"},  # not a queryable
        {"filter": "\"adresse'; DROP TABLE published_feature; --\" = 'x'"},  # SQL as a property name
        {"filter": "gid = 'abc'"},  # a text for an integer field
        {"filter": "S_CROSSES(geometry, POINT(4.8 45.7))"},  # not supported
        {"filter": "gid = 1", "filter-lang": "ecql"},
        {"filter": "gid = 1", "filter-crs": "http://www.opengis.net/def/crs/EPSG/0/2154"},
        {"filter": "{not json", "filter-lang": "cql2-json"},
    ],
)
def test_an_invalid_filter_is_a_400_with_an_exception_body(published: Published, params: dict[str, str]) -> None:
    r = get(f"{published.ogc}/collections/{DATASET}/items", params=params)
    assert is_exception(r), (params, r.status_code, r.text)


def test_sql_in_a_value_is_only_a_value(published: Published) -> None:
    hostile = "x'; DELETE FROM published_feature; --"
    flt = json.dumps({"op": "=", "args": [{"property": "adresse"}, hostile]})
    assert found(published, filtered(published, flt, **{"filter-lang": "cql2-json"})) == set()
    assert found(published, filtered(published, f"adresse LIKE '%{published.tag}%'")) == {"a", "b", "c"}
