"""The CQL2 -> SQL translation of OGC API – Features Part 3 filters (services/publish/domain/ogc_filter.py):
table-driven, including hostile input. The SQL text may hold only constant fragments and ``:cqN`` names;
every value and property name is a bound parameter."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from services.contract.datasets.catalogue import DatasetCatalogue, DatasetDefinition
from services.publish.domain import ogc_features
from services.publish.domain.ogc_filter import (
    CONFORMANCE,
    BadFilter,
    SqlFilter,
    parse_filter,
    queryables,
    to_sql,
)


@pytest.fixture(scope="module")
def toilets() -> DatasetDefinition:
    d = DatasetCatalogue.load(boundaries=None).get("public_toilets")
    assert d is not None
    return d


def sql(d: DatasetDefinition, text: str, lang: str | None = None) -> SqlFilter:
    return to_sql(parse_filter(text, lang, None), d)


def _no_client_text(f: SqlFilter, *client: str) -> None:
    for piece in client:
        assert piece not in f.sql, (piece, f.sql)


@pytest.mark.parametrize(
    ("text", "fragment", "params"),
    [
        ("adresse = 'x'", "= CAST(:cq1 AS text)", {"cq0": "adresse", "cq1": "x"}),
        ("gid > 3", "> CAST(:cq1 AS double precision)", {"cq0": "gid", "cq1": 3.0}),
        ("3 < gid", "> CAST(:cq1 AS double precision)", {"cq0": "gid", "cq1": 3.0}),
        ("gid <> 3.5", "<> CAST(:cq1 AS double precision)", {"cq0": "gid", "cq1": 3.5}),
        ("unisexe = true", "= CAST(:cq1 AS boolean)", {"cq0": "unisexe", "cq1": True}),
        ("adresse LIKE 'a%'", "LIKE CAST(:cq1 AS text) ESCAPE", {"cq0": "adresse", "cq1": "a%"}),
        ("gid BETWEEN 1 AND 2", "BETWEEN CAST(:cq1 AS double precision) AND", {"cq1": 1.0, "cq2": 2.0}),
        ("gid IN (1, 2)", "IN (CAST(:cq1 AS double precision), CAST(:cq2", {"cq1": 1.0, "cq2": 2.0}),
        ("infoloc IS NULL", "IS NULL", {"cq0": "infoloc"}),
        ("infoloc IS NOT NULL", "IS NOT NULL", {"cq0": "infoloc"}),
        ("NOT gid = 1", "(NOT coalesce(", {"cq1": 1.0}),
        ("gid = 1 AND gid = 2 OR gid = 3", " OR ", {"cq5": 3.0}),
        ("S_INTERSECTS(geometry, POINT(4.8 45.7))", "ST_Intersects(geom, ST_SetSRID(ST_GeomFromGeoJSON", {}),
        ("S_INTERSECTS(geometry, BBOX(4.8, 45.7, 4.9, 45.8))", "ST_MakeEnvelope(:cq0, :cq1, :cq2, :cq3, 4326)", {}),
    ],
)
def test_cql2_text_translates_to_bound_sql(
    toilets: DatasetDefinition, text: str, fragment: str, params: dict[str, Any]
) -> None:
    f = sql(toilets, text)
    assert fragment in f.sql, f.sql
    for k, v in params.items():
        assert f.params[k] == v, f.params


def test_numbers_are_compared_as_numbers_and_text_that_is_no_number_is_null(toilets: DatasetDefinition) -> None:
    f = sql(toilets, "gid > 3")
    assert "THEN CAST(" in f.sql and "AS double precision) END" in f.sql  # a regex-guarded cast, never failing


def test_cql2_json_translates_like_the_text(toilets: DatasetDefinition) -> None:
    j = {
        "op": "and",
        "args": [{"op": "=", "args": [{"property": "gid"}, 7]}, {"op": "isNull", "args": [{"property": "web"}]}],
    }
    f = sql(toilets, json.dumps(j), "cql2-json")
    assert " AND " in f.sql and f.params == {"cq0": "gid", "cq1": 7.0, "cq2": "web"}


def test_cql2_json_bbox_and_between_follow_cql2_1_0(toilets: DatasetDefinition) -> None:
    j = {"op": "s_intersects", "args": [{"property": "geometry"}, {"bbox": [4.8, 45.7, 4.9, 45.8]}]}
    (geo,) = {v for v in sql(toilets, json.dumps(j), "cql2-json").params.values()}
    ring = json.loads(geo)["coordinates"][0]
    assert ring[0] == [4.8, 45.7] and ring[2] == [4.9, 45.8]  # minx, miny, maxx, maxy in that order
    b = {"op": "between", "args": [{"property": "gid"}, 1, 9]}
    assert sql(toilets, json.dumps(b), "cql2-json").params == {"cq0": "gid", "cq1": 1.0, "cq2": 9.0}


@pytest.mark.parametrize(
    ("text", "lang", "says"),
    [
        ("nosuchfield = 1", None, "nosuchfield"),
        ("\"adresse') OR 1=1 --\" = 'x'", None, "unknown property"),
        ('{"op": "=", "args": [{"property": "x\'); DROP TABLE t; --"}, 1]}', "cql2-json", "unknown property"),
        ("gid = 'abc'", None, "number"),
        ("unisexe = 'oui'", None, "boolean"),
        ("gid LIKE '1%'", None, "LIKE"),
        ("adresse =", None, "not valid cql2-text"),
        ("", None, "empty"),
        ("{", "cql2-json", "not valid cql2-json"),
        ("S_CROSSES(geometry, POINT(1 2))", None, "not supported"),
        ("S_INTERSECTS(adresse, POINT(1 2))", None, "S_INTERSECTS"),
        ("S_WITHIN(geometry, POINT(1 2))", None, "not supported"),
        ("gid = 1", "ecql", "filter-lang"),
        ("gid = 1 " + "AND gid = 1 " * 600, None, "terms"),
    ],
)
def test_bad_filters_are_refused_naming_what_is_wrong(
    toilets: DatasetDefinition, text: str, lang: str | None, says: str
) -> None:
    with pytest.raises(BadFilter, match=re.escape(says)):
        sql(toilets, text, lang)


def test_only_crs84_is_accepted_as_filter_crs(toilets: DatasetDefinition) -> None:
    with pytest.raises(BadFilter, match="filter-crs"):
        parse_filter("gid = 1", None, "http://www.opengis.net/def/crs/EPSG/0/2154")
    assert parse_filter("gid = 1", None, "http://www.opengis.net/def/crs/OGC/1.3/CRS84") is not None


@pytest.mark.parametrize(
    "value",
    ["x'; DROP TABLE published_feature; --", "') OR ('1'='1", "\\'; SELECT pg_sleep(10); --", "%s"],
)
def test_hostile_values_are_bound_parameters_never_sql(toilets: DatasetDefinition, value: str) -> None:
    j = {"op": "=", "args": [{"property": "adresse"}, value]}
    f = sql(toilets, json.dumps(j), "cql2-json")
    assert f.params["cq1"] == value
    _no_client_text(f, value)
    assert f.sql.count(":cq") == 2


def test_property_names_are_bound_too(toilets: DatasetDefinition) -> None:
    f = sql(toilets, "adresse = 'x'")
    assert "adresse" not in f.sql and f.params["cq0"] == "adresse"


def test_queryables_are_a_valid_json_schema_with_the_table_schema_types(toilets: DatasetDefinition) -> None:
    q = queryables("http://odc.test/ogc", toilets)
    Draft202012Validator.check_schema(q)
    assert q["$id"] == "http://odc.test/ogc/collections/public_toilets/queryables"
    assert q["properties"]["gid"]["type"] == "integer"
    assert q["properties"]["unisexe"]["type"] == "boolean"
    assert q["properties"]["geometry"]["format"] == "geometry-any"
    names = {f["name"] for f in toilets.table_schema["fields"]}
    assert set(q["properties"]) == names | {"geometry"}


def test_conformance_declares_the_filter_classes() -> None:
    declared = ogc_features.conformance()["conformsTo"]
    assert set(CONFORMANCE) <= set(declared)
    assert "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions" not in declared  # only S_INTERSECTS


def test_filter_parameters_are_known_and_kept_in_paging_links() -> None:
    q = ogc_features.parse_items_query([("filter", "gid = 1"), ("filter-lang", "cql2-text"), ("limit", "1")])
    assert q.filter_text == "gid = 1" and q.filter_lang == "cql2-text" and q.filtered
    (nxt,) = [lk for lk in ogc_features.items_links("http://o", "d", q, 1, 5) if lk["rel"] == "next"]
    assert "filter=gid+%3D+1" in nxt["href"] and "filter-lang=cql2-text" in nxt["href"]
