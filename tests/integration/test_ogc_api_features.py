"""An OGC API – Features client suite of our own, run against the real stack (the three services on a real
broker and PostGIS): one test per requirement of OGC API – Features – Part 1 (OGC 17-069r4), requirements
classes Core and GeoJSON, named by the requirement's id (``/req/core/fc-limit-response`` is
``test_req_core_fc_limit_response``), plus what the OpenAPI 3.0 class and the publish API as a whole need
(HEAD everywhere, URL-safe ids). Every check is relative to the data this module publishes itself."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from openapi_spec_validator import OpenAPIV30SpecValidator

from services.contract.messages import ChangeEvent
from services.publish.domain.ogc_edits import CONFORMANCE as EDIT_CONFORMANCE
from services.publish.domain.ogc_filter import CONFORMANCE as FILTER_CONFORMANCE
from tests.integration.pipeline_harness import Pipeline, toilet_event

pytestmark = pytest.mark.integration
DATASET = "public_toilets"
CORE = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core"
GEOJSON_CLASS = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson"
OAS30 = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GEOJSON = "application/geo+json"
OPENAPI_30 = "application/vnd.oai.openapi+json;version=3.0"
UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")


@dataclass(frozen=True)
class Published:
    """What this module published: two rounds, each its own version."""

    api: str  # the publish API's base URL
    ogc: str
    first: dict[str, tuple[float, float]]  # feature_id -> (lon, lat), published in version v1
    second: dict[str, tuple[float, float]]  # ... in version v2
    v1: int
    v2: int
    t1: str  # published_at of v1 and v2, as the API gives them
    t2: str


def get(url: str, **kw: Any) -> httpx.Response:
    return httpx.get(url, timeout=30, **kw)


def publish_round(p: Pipeline, events: list[ChangeEvent]) -> int:
    before = p.metric("normalise", "odc_events_received_total")
    p.produce_events(events)
    p.settle(DATASET, before, len(events))
    return p.latest_version(DATASET)


def ogc_id(fid: str, commune: str = "69266") -> str:
    escaped = "".join(
        c if re.fullmatch(r"[A-Za-z0-9._-]", c) else "".join(f"~{b:02X}" for b in c.encode()) for c in fid
    )
    return f"{commune}.{escaped}"


@pytest.fixture(scope="module")
def published(pipeline: Pipeline) -> Published:
    tag = uuid.uuid4().hex[:6]
    # unique places and addresses: nothing here is a same-place duplicate of another feature
    first = {
        f"ogc-{tag}-a": (4.81234, 45.74561),
        f"ogc|{tag} b/c": (4.81734, 45.74961),
        f"ogc-{tag}-c": (4.82234, 45.75361),
    }
    second = {f"ogc-{tag}-d": (4.83234, 45.76361), f"ogc-{tag}-e": (4.83734, 45.76861)}

    def events(features: dict[str, tuple[float, float]]) -> list[ChangeEvent]:
        return [
            toilet_event(fid, seq=1, lon=lon, lat=lat, adresse=f"{i} rue {fid} {tag}")
            for i, (fid, (lon, lat)) in enumerate(features.items())
        ]

    v1 = publish_round(pipeline, events(first))
    v2 = publish_round(pipeline, events(second))
    assert v2 == v1 + 1, "each round cuts its own version"
    api = pipeline.services["publish"].base_url
    t1 = get(f"{api}/datasets/{DATASET}/versions/{v1}").json()["published_at"]
    t2 = get(f"{api}/datasets/{DATASET}/versions/{v2}").json()["published_at"]
    assert t1 < t2
    return Published(api, f"{api}/ogc", first, second, v1, v2, t1, t2)


def items(p: Published, **params: Any) -> httpx.Response:
    return get(f"{p.ogc}/collections/{DATASET}/items", params=params)


def all_items(p: Published, **params: Any) -> list[dict[str, Any]]:
    """Every feature of a query, by following the ``next`` links."""
    features: list[dict[str, Any]] = []
    r = items(p, limit=1000, **params)
    while True:
        assert r.status_code == 200, r.text
        page = r.json()
        features += page["features"]
        nxt = [lk["href"] for lk in page["links"] if lk["rel"] == "next"]
        if not nxt:
            return features
        r = get(nxt[0])


def link(doc: dict[str, Any], rel: str) -> dict[str, Any]:
    (found,) = [lk for lk in doc["links"] if lk["rel"] == rel]
    return found


def is_exception(r: httpx.Response, status: int) -> bool:
    body = r.json()
    return (
        r.status_code == status
        and r.headers["content-type"].startswith("application/json")
        and isinstance(body.get("code"), str)
        and isinstance(body.get("description"), str)
    )


def feature_times(pipeline: Pipeline, since: str | None, until: str | None) -> set[str]:
    """The OGC ids of the features whose time (when their current state was published) is in [since, until]."""
    rows = pipeline.sql(
        "SELECT pf.commune, pf.feature_id FROM published_feature pf JOIN dataset_version dv ON dv.dataset = pf.dataset "
        "AND dv.version = pf.version WHERE pf.dataset = %s AND dv.published_at >= coalesce(%s::timestamptz, "
        "'-infinity') AND dv.published_at <= coalesce(%s::timestamptz, 'infinity')",
        DATASET,
        since,
        until,
    )
    return {ogc_id(fid, commune) for commune, fid in rows}


# -- landing page, API definition, conformance -------------------------------------------------------------


def test_req_core_root_op(published: Published) -> None:
    """/req/core/root-op: the server SHALL support the HTTP GET operation at the path /."""
    r = get(published.ogc)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")


def test_req_core_root_success(published: Published) -> None:
    """/req/core/root-success: the landing page links to the API definition (service-desc or service-doc),
    to /conformance (conformance) and to /collections (data)."""
    landing = get(published.ogc).json()
    assert link(landing, "service-desc")["href"] == f"{published.ogc}/api"
    assert link(landing, "service-desc")["type"] == OPENAPI_30
    assert link(landing, "conformance")["href"] == f"{published.ogc}/conformance"
    assert link(landing, "data")["href"] == f"{published.ogc}/collections"
    for lk in landing["links"]:
        assert get(lk["href"]).status_code == 200, lk


def test_req_core_api_definition_op(published: Published) -> None:
    """/req/core/api-definition-op: the URIs of the service-desc/service-doc links SHALL support GET."""
    r = get(link(get(published.ogc).json(), "service-desc")["href"])
    assert r.status_code == 200 and r.headers["content-type"] == OPENAPI_30


def test_req_core_api_definition_success(published: Published) -> None:
    """/req/core/api-definition-success: the response is the API definition, here OpenAPI 3.0
    (/req/oas30/oas-definition-1, -2): valid, its server the landing page, its paths the API's resources."""
    doc = get(f"{published.ogc}/api").json()
    assert doc["openapi"].startswith("3.0.")
    assert list(OpenAPIV30SpecValidator(doc).iter_errors()) == []
    assert '"type": "null"' not in json.dumps(doc)  # not FastAPI's OpenAPI 3.1
    assert doc["servers"] == [{"url": published.ogc}]
    for path in doc["paths"]:  # every path answers relative to the server
        concrete = path.replace("{collectionId}", DATASET).replace("{featureId}", ogc_id(next(iter(published.first))))
        assert get(f"{published.ogc}{concrete.rstrip('/')}").status_code == 200, path


def test_req_core_conformance_op(published: Published) -> None:
    """/req/core/conformance-op: GET /conformance."""
    assert get(f"{published.ogc}/conformance").status_code == 200


def test_req_core_conformance_success(published: Published) -> None:
    """/req/core/conformance-success: the conformance declaration lists the classes implemented, and only
    them: Core, GeoJSON and OpenAPI 3.0 (no HTML, no CRS), Part 3's filtering classes (their own suite is
    tests/integration/test_ogc_api_filtering.py) and Part 4's (tests/integration/test_ogc_api_edits.py)."""
    declared = set(get(f"{published.ogc}/conformance").json()["conformsTo"])
    assert declared == {CORE, GEOJSON_CLASS, OAS30, *FILTER_CONFORMANCE, *EDIT_CONFORMANCE}


def test_req_core_http(published: Published, pipeline: Pipeline) -> None:
    """/req/core/http: the server SHALL conform to HTTP 1.1 — here: HEAD answers on every GET route of the
    whole publish API (FastAPI answers 405 by default) with the GET's status and headers and no body."""
    operator = {"Authorization": f"Bearer {pipeline.operator_token('ogc head test')}"}
    spec = get(f"{published.api}/openapi.json").json()
    fid = next(iter(published.first))
    values = {
        "dataset": DATASET,
        "collection_id": DATASET,
        "version": str(published.v1),
        "feature_id": ogc_id(fid),
        "subscription_id": "none",
        "extension": "ttl",  # /catalog.{extension}
        "name": "change_event.v1.avsc",  # /schemas/avro/{name}
    }
    urls = ["/metrics", "/healthz", "/readyz", "/openapi.json", "/docs"]
    for path, ops in spec["paths"].items():
        if "get" in ops:
            concrete = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
            if path == "/datasets/{dataset}/features/{feature_id}/history":
                concrete = concrete.replace(ogc_id(fid), f"69266:{fid}")
            urls.append(concrete)
    assert len(urls) > 20
    for path in urls:
        head = httpx.head(f"{published.api}{path}", headers=operator, timeout=30)
        with httpx.stream("GET", f"{published.api}{path}", headers=operator, timeout=30) as got:
            status, content_type = got.status_code, got.headers.get("content-type")
            length = got.headers.get("content-length")
        assert head.status_code == status and head.status_code != 405, path
        assert head.headers.get("content-type") == content_type, path
        assert head.content == b"", path
        if length is not None and path not in ("/metrics", "/readyz"):  # those two change between calls
            assert head.headers["content-length"] == length, path


def test_req_core_query_param_unknown(published: Published) -> None:
    """/req/core/query-param-unknown: a query parameter not in the API definition is a 400."""
    for params in ({"foo": "bar"}, {"filter-foo": "x"}, {"crs": CRS84}, {"bbox-crs": CRS84}, {"f": "json"}):
        r = items(published, **params)
        assert is_exception(r, 400), (params, r.status_code, r.text)


def test_req_core_query_param_invalid(published: Published) -> None:
    """/req/core/query-param-invalid: an invalid value of a known parameter is a 400 (not FastAPI's 422)."""
    for params in (
        {"limit": "abc"},
        {"limit": "0"},
        {"limit": "-1"},
        {"offset": "-3"},
        {"bbox": "1,2,3"},
        {"bbox": "a,b,c,d"},
        {"bbox": "0,50,1,40"},
        {"datetime": "yesterday"},
        {"datetime": "../.."},
        {"datetime": "2026-11-04T00:00:00Z/2026-11-03T00:00:00Z"},
    ):
        r = items(published, **params)
        assert is_exception(r, 400), (params, r.status_code, r.text)


def test_req_core_crs84(published: Published) -> None:
    """/req/core/crs84: without other CRS support, geometries are in WGS 84 longitude/latitude (CRS84)."""
    collection = get(f"{published.ogc}/collections/{DATASET}").json()
    assert collection["crs"] == [CRS84] and collection["extent"]["spatial"]["crs"] == CRS84
    by_id = {f["id"]: f for f in all_items(published)}
    for fid, (lon, lat) in {**published.first, **published.second}.items():
        assert by_id[ogc_id(fid)]["geometry"] == {"type": "Point", "coordinates": [lon, lat]}


# -- collections -------------------------------------------------------------------------------------------


def test_req_core_fc_md_op(published: Published) -> None:
    """/req/core/fc-md-op: GET /collections."""
    assert get(f"{published.ogc}/collections").status_code == 200


def test_req_core_fc_md_success(published: Published) -> None:
    """/req/core/fc-md-success: a 200 response with ``links`` and ``collections``."""
    doc = get(f"{published.ogc}/collections").json()
    assert isinstance(doc["links"], list) and isinstance(doc["collections"], list) and doc["collections"]


def test_req_core_fc_md_links(published: Published) -> None:
    """/req/core/fc-md-links: a link to the response itself (self); no other media type is offered, so no
    alternate."""
    doc = get(f"{published.ogc}/collections").json()
    assert link(doc, "self")["href"] == f"{published.ogc}/collections"
    assert not [lk for lk in doc["links"] if lk["rel"] == "alternate"]


def test_req_core_fc_md_items(published: Published) -> None:
    """/req/core/fc-md-items: one collection per feature collection offered (each dataset), with its id."""
    ids = [c["id"] for c in get(f"{published.ogc}/collections").json()["collections"]]
    assert DATASET in ids and len(ids) == len(set(ids))
    assert set(ids) == {d["id"] for d in get(f"{published.api}/datasets").json()["datasets"]}


def test_req_core_fc_md_items_links(published: Published) -> None:
    """/req/core/fc-md-items-links: each collection links to its items (rel=items) in GeoJSON."""
    for c in get(f"{published.ogc}/collections").json()["collections"]:
        items_link = link(c, "items")
        assert items_link["type"] == GEOJSON and items_link["href"] == f"{published.ogc}/collections/{c['id']}/items"


def test_req_core_fc_md_extent(published: Published, pipeline: Pipeline) -> None:
    """/req/core/fc-md-extent: the spatial extent includes every geometry of the collection; the temporal
    extent includes every feature's time."""
    extent = get(f"{published.ogc}/collections/{DATASET}").json()["extent"]
    (x0, y0, x1, y1) = extent["spatial"]["bbox"][0]
    for f in all_items(published):
        lon, lat = f["geometry"]["coordinates"]
        assert x0 <= lon <= x1 and y0 <= lat <= y1
    ((start, end),) = extent["temporal"]["interval"]
    assert end is None and start <= published.t1
    assert feature_times(pipeline, None, None) == feature_times(pipeline, start, None)


def test_req_core_sfc_md_op(published: Published) -> None:
    """/req/core/sfc-md-op: GET /collections/{collectionId}; an unknown one is a 404 exception."""
    assert get(f"{published.ogc}/collections/{DATASET}").status_code == 200
    assert is_exception(get(f"{published.ogc}/collections/no_such_dataset"), 404)


def test_req_core_sfc_md_success(published: Published) -> None:
    """/req/core/sfc-md-success: the same content as the collection's entry in /collections."""
    one = get(f"{published.ogc}/collections/{DATASET}").json()
    (listed,) = [c for c in get(f"{published.ogc}/collections").json()["collections"] if c["id"] == DATASET]
    assert one == listed


# -- items ----------------------------------------------------------------------------------------------


def test_req_core_fc_op(published: Published) -> None:
    """/req/core/fc-op: GET /collections/{collectionId}/items; an unknown collection is a 404 exception."""
    assert items(published).status_code == 200
    assert is_exception(get(f"{published.ogc}/collections/no_such_dataset/items"), 404)


def test_req_core_fc_limit_definition(published: Published) -> None:
    """/req/core/fc-limit-definition: ``limit`` is an integer query parameter (form, not exploded, optional)
    with a minimum, maximum and default."""
    doc = get(f"{published.ogc}/api").json()
    limit = doc["components"]["parameters"]["limit"]
    assert (limit["in"], limit["required"], limit["style"], limit["explode"]) == ("query", False, "form", False)
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 10}


def test_req_core_fc_limit_response(published: Published) -> None:
    """/req/core/fc-limit-response: at most ``limit`` features; a limit above the maximum is taken as the
    maximum (not refused); no limit gives the default."""
    for n in (1, 2, 3):
        page = items(published, limit=n).json()
        assert page["numberReturned"] == len(page["features"]) == n
    assert items(published).json()["numberReturned"] == min(10, items(published, limit=10_000).json()["numberMatched"])
    for above in (10_001, 100_000):
        r = items(published, limit=above)
        assert r.status_code == 200
        assert "limit=10000" in link(r.json(), "self")["href"]
        assert r.json()["numberReturned"] <= 10_000


def test_req_core_fc_bbox_definition(published: Published) -> None:
    """/req/core/fc-bbox-definition: ``bbox`` is an array of 4 or 6 numbers (form, not exploded)."""
    bbox = get(f"{published.ogc}/api").json()["components"]["parameters"]["bbox"]
    assert (bbox["in"], bbox["required"], bbox["style"], bbox["explode"]) == ("query", False, "form", False)
    assert bbox["schema"] == {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}}


def test_req_core_fc_bbox_response(published: Published) -> None:
    """/req/core/fc-bbox-response: only features whose geometry intersects the box — its edges included: a
    box equal to a point's position, or with the point on an edge or a corner, returns it."""
    (fa, (lon, lat)), (fb, _), (fc, (lon_c, lat_c)) = published.first.items()
    ids = lambda **q: {f["id"] for f in all_items(published, **q)}  # noqa: E731
    assert ogc_id(fa) in ids(bbox=f"{lon},{lat},{lon},{lat}")  # degenerate: the point itself
    assert ogc_id(fa) in ids(bbox=f"{lon},{lat - 0.001},{lon + 0.001},{lat + 0.001}")  # on the west edge
    assert ogc_id(fa) in ids(bbox=f"{lon - 0.001},{lat - 0.001},{lon},{lat}")  # the north-east corner
    assert ogc_id(fa) in ids(bbox=f"{lon},{lat},0,{lon},{lat},10")  # 3D
    just_east = ids(bbox=f"{lon + 1e-7},{lat},{lon + 0.001},{lat}")
    assert ogc_id(fa) not in just_east
    around_a_and_c = ids(bbox=f"{lon},{lat},{lon_c},{lat_c}")
    assert {ogc_id(fa), ogc_id(fb), ogc_id(fc)} <= around_a_and_c
    for f in all_items(published, bbox=f"{lon},{lat},{lon_c},{lat_c}"):
        x, y = f["geometry"]["coordinates"]
        assert lon <= x <= lon_c and lat <= y <= lat_c
    everything = items(published, limit=1).json()["numberMatched"]
    assert items(published, bbox="170,-10,-170,10").json()["numberMatched"] == 0 < everything  # antimeridian
    assert items(published, bbox="-180,-90,180,90").json()["numberMatched"] == everything


def test_req_core_fc_time_definition(published: Published) -> None:
    """/req/core/fc-time-definition: ``datetime`` is a string query parameter (form, not exploded)."""
    dt = get(f"{published.ogc}/api").json()["components"]["parameters"]["datetime"]
    assert (dt["in"], dt["required"], dt["style"], dt["explode"]) == ("query", False, "form", False)
    assert dt["schema"] == {"type": "string"}


def test_req_core_fc_time_response(published: Published, pipeline: Pipeline) -> None:
    """/req/core/fc-time-response: only features whose time intersects ``datetime`` — an instant, a closed
    interval, or one open at either end (``..`` or empty). A feature's time is when its current state was
    published."""
    first = {ogc_id(f) for f in published.first}
    second = {ogc_id(f) for f in published.second}
    t1, t2 = published.t1, published.t2
    cases = {
        t1: (t1, t1),
        f"{t1}/{t2}": (t1, t2),
        f"../{t1}": (None, t1),
        f"/{t1}": (None, t1),
        f"{t2}/..": (t2, None),
        f"{t2}/": (t2, None),
    }
    for value, (since, until) in cases.items():
        got = {f["id"] for f in all_items(published, datetime=value)}
        assert got == feature_times(pipeline, since, until), value
        if until is None or until >= t2:
            assert second <= got, value
        else:
            assert not second & got, value
        if since is None or since <= t1:
            assert first <= got, value
        else:
            assert not first & got, value
    later = (datetime.fromisoformat(t2) + timedelta(days=1)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert items(published, datetime=f"{later}/..").json()["numberMatched"] == 0
    page = items(published, datetime=f"{t1}/{t2}", limit=1).json()
    assert f"datetime={t1}".replace(":", "%3A") in link(page, "next")["href"]  # paging keeps the filter


def test_req_core_fc_response(published: Published) -> None:
    """/req/core/fc-response: a FeatureCollection with ``features``."""
    page = items(published).json()
    assert page["type"] == "FeatureCollection" and isinstance(page["features"], list)


def test_req_core_fc_links(published: Published) -> None:
    """/req/core/fc-links: a self link and, with more results, next links that walk every feature once."""
    page = items(published, limit=2).json()
    assert link(page, "self")["href"].startswith(f"{published.ogc}/collections/{DATASET}/items?")
    assert link(page, "next")
    walked = all_items(published)
    paged: list[str] = []
    r = items(published, limit=2)
    while True:
        doc = r.json()
        paged += [f["id"] for f in doc["features"]]
        nxt = [lk["href"] for lk in doc["links"] if lk["rel"] == "next"]
        if not nxt:
            break
        r = get(nxt[0])
    assert paged == [f["id"] for f in walked] and len(paged) == len(set(paged))


def test_req_core_fc_rel_type(published: Published) -> None:
    """/req/core/fc-rel-type: every link has ``rel`` and ``type``."""
    docs = [
        get(published.ogc).json(),
        get(f"{published.ogc}/collections").json(),
        get(f"{published.ogc}/collections/{DATASET}").json(),
        items(published, limit=2, offset=2).json(),
        get(f"{published.ogc}/collections/{DATASET}/items/{ogc_id(next(iter(published.first)))}").json(),
    ]
    links = [lk for d in docs for lk in d["links"]]
    links += [lk for c in docs[1]["collections"] for lk in c["links"]]
    assert links and all(lk.get("rel") and lk.get("type") for lk in links)


def test_req_core_fc_timestamp(published: Published) -> None:
    """/req/core/fc-timeStamp: ``timeStamp`` is the time the response was generated (RFC 3339)."""
    stamp = datetime.fromisoformat(items(published).json()["timeStamp"])
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 120


def test_req_core_fc_numbermatched(published: Published, pipeline: Pipeline) -> None:
    """/req/core/fc-numberMatched: the number of features matching the query, whatever the paging; without
    a filter it is the dataset's live count (read from dataset_state, not counted)."""
    (live,) = pipeline.sql("SELECT feature_count FROM dataset_state WHERE dataset = %s", DATASET)[0]
    assert items(published, limit=1).json()["numberMatched"] == live == len(all_items(published))
    (lon, lat), _, (lon_c, lat_c) = published.first.values()
    box = f"{lon},{lat},{lon_c},{lat_c}"
    assert items(published, bbox=box, limit=1).json()["numberMatched"] == len(all_items(published, bbox=box))


def test_req_core_fc_numberreturned(published: Published) -> None:
    """/req/core/fc-numberReturned: the number of features in the response."""
    for params in ({"limit": 3}, {"limit": 3, "offset": 2}, {}):
        page = items(published, **params).json()
        assert page["numberReturned"] == len(page["features"])


# -- one feature ----------------------------------------------------------------------------------------


def test_req_core_f_op(published: Published) -> None:
    """/req/core/f-op: GET /collections/{collectionId}/items/{featureId}, with the ids the items give:
    URL-safe (unreserved characters only, even for a feature id with '|', ' ' and '/'); an id of the former
    spelling ``<commune>:<feature_id>`` is redirected to it; an unknown one is a 404 exception."""
    listed = {f["id"] for f in all_items(published)}
    for fid in published.first:
        new = ogc_id(fid)
        assert new in listed and UNRESERVED.fullmatch(new), new
        assert get(f"{published.ogc}/collections/{DATASET}/items/{new}").status_code == 200
        old = get(f"{published.ogc}/collections/{DATASET}/items/{quote('69266:' + fid, safe=':')}")
        assert old.status_code == 308 and old.headers["location"].endswith(f"/items/{new}"), fid
    assert is_exception(get(f"{published.ogc}/collections/{DATASET}/items/69266.no-such-feature"), 404)
    assert is_exception(get(f"{published.ogc}/collections/{DATASET}/items/not~ZZcanonical"), 404)


def test_req_core_f_success(published: Published) -> None:
    """/req/core/f-success: a Feature with its geometry and properties."""
    fid = next(iter(published.first))
    f = get(f"{published.ogc}/collections/{DATASET}/items/{ogc_id(fid)}").json()
    assert f["type"] == "Feature" and f["id"] == ogc_id(fid)
    assert f["geometry"]["coordinates"] == list(published.first[fid]) and f["properties"]["codinsee"] == "69266"


def test_req_core_f_links(published: Published) -> None:
    """/req/core/f-links: links to itself (self) and to its collection (collection)."""
    fid = list(published.first)[1]  # the one with '|', ' ' and '/'
    f = get(f"{published.ogc}/collections/{DATASET}/items/{ogc_id(fid)}").json()
    assert link(f, "self")["href"] == f"{published.ogc}/collections/{DATASET}/items/{ogc_id(fid)}"
    assert link(f, "collection")["href"] == f"{published.ogc}/collections/{DATASET}"
    assert get(link(f, "self")["href"]).json()["id"] == f["id"]


# -- GeoJSON ----------------------------------------------------------------------------------------------


def test_req_geojson_definition(published: Published) -> None:
    """/req/geojson/definition: 200 responses of items and of a feature are application/geo+json, also when
    a client asks for it."""
    fid = ogc_id(next(iter(published.first)))
    for url in (f"{published.ogc}/collections/{DATASET}/items", f"{published.ogc}/collections/{DATASET}/items/{fid}"):
        for accept in (None, GEOJSON, "application/json;q=0.5, application/geo+json"):
            r = get(url, headers={"Accept": accept} if accept else {})
            assert r.status_code == 200 and r.headers["content-type"] == GEOJSON, (url, accept)


def test_req_geojson_content(published: Published) -> None:
    """/req/geojson/content: the content is GeoJSON (RFC 7946): a FeatureCollection of Features, each with a
    geometry object (or null), a properties object and a string id; plus links, timeStamp, numberMatched,
    numberReturned as the standard's featureCollectionGeoJSON schema says."""
    page = items(published, limit=50).json()
    assert {"type", "features", "links", "timeStamp", "numberMatched", "numberReturned"} <= set(page)
    for f in page["features"]:
        assert f["type"] == "Feature" and isinstance(f["id"], str) and isinstance(f["properties"], dict)
        g = f["geometry"]
        assert g is None or (isinstance(g["type"], str) and isinstance(g["coordinates"], list))
