"""OGC API – Features Part 4 on the real stack (broker, PostGIS, the three services): a commune creates,
replaces, updates (merge patch) and deletes its own feature through /ogc with its push token; each write is a
change event the stream processes (the normaliser only takes signed events), answered with its outcome; a
stale ETag is a 412; another commune's token is refused and the feature is unchanged; a change the stream
refuses is a 422 with its reasons; the push API down is a 503 with Retry-After."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.integration.pipeline_harness import Pipeline, wait_for
from tests.integration.test_same_place import push_token

pytestmark = pytest.mark.integration
LYON, VILLEURBANNE = "69123", "69266"
ITEMS = "/ogc/collections/public_toilets/items"
PART4 = "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete"


def toilet(gid: int, adresse: str, lon: float = 4.8468, lat: float = 45.7605) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {"gid": gid, "adresse": adresse, "codinsee": LYON},
    }


def auth(token: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **more}


def item(base: str, href: str) -> httpx.Response | None:
    r = httpx.get(href if href.startswith("http") else base + href, timeout=30)
    return r if r.status_code == 200 else None


def test_a_commune_edits_its_own_feature_through_the_ogc_api(pipeline: Pipeline) -> None:
    base = pipeline.services["publish"].base_url
    lyon, villeurbanne = push_token(pipeline, LYON), push_token(pipeline, VILLEURBANNE)
    gid = uuid.uuid4().int % 10**9 + 10**9

    # discovery: the conformance classes and OPTIONS / Allow
    assert PART4 in httpx.get(f"{base}/ogc/conformance", timeout=30).json()["conformsTo"]
    opts = httpx.options(f"{base}{ITEMS}", timeout=30)
    assert opts.status_code == 204 and "POST" in opts.headers["allow"]
    opts = httpx.options(f"{base}{ITEMS}/{LYON}.{gid}", timeout=30)
    assert {"PUT", "PATCH", "DELETE"} <= {m.strip() for m in opts.headers["allow"].split(",")}

    # create: no token is a 401; Lyon's token a 201 with Location once the stream took it
    body = toilet(gid, "1 place Bellecour")
    assert httpx.post(f"{base}{ITEMS}", json=body, timeout=30).status_code == 401
    created = httpx.post(f"{base}{ITEMS}", json=body, headers=auth(lyon), timeout=30)
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    assert location.endswith(f"{ITEMS}/{LYON}.{gid}") and 'rel="monitor"' in created.headers["link"]
    got = wait_for("the created feature published", lambda: item(base, location))
    assert got.json()["properties"]["adresse"] == "1 place Bellecour"
    etag = got.headers["etag"]
    assert httpx.get(location, headers={"If-None-Match": etag}, timeout=30).status_code == 304
    again = httpx.post(f"{base}{ITEMS}", json=body, headers=auth(lyon), timeout=30)
    assert again.status_code == 409

    # another commune's token: refused for every write, the feature unchanged
    for method, kw in (("PUT", {"json": toilet(gid, "DEFACED")}), ("DELETE", {}),
                       ("PATCH", {"content": b'{"properties":{"adresse":"DEFACED"}}',
                                  "headers": {"Content-Type": "application/merge-patch+json"}})):  # fmt: skip
        headers = {**auth(villeurbanne), **kw.pop("headers", {})}  # type: ignore[arg-type]
        r = httpx.request(method, location, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]
        assert r.status_code == 403, (method, r.text)
    assert httpx.get(location, timeout=30).headers["etag"] == etag

    # replace with a stale ETag: 412, nothing sent
    stale = httpx.put(location, json=toilet(gid, "stale"), headers=auth(lyon, **{"If-Match": '"0000"'}), timeout=30)
    assert stale.status_code == 412 and stale.json()["code"] == "PreconditionFailed"

    # update (merge patch) with the current ETag: 200, then published
    patched = httpx.patch(
        location,
        content=b'{"properties":{"adresse":"2 place Bellecour"}}',
        headers=auth(lyon, **{"If-Match": etag, "Content-Type": "application/merge-patch+json"}),
        timeout=30,
    )
    assert patched.status_code == 200, patched.text

    def with_address(adresse: str) -> httpx.Response | None:
        r = item(base, location)
        return r if r is not None and r.json()["properties"]["adresse"] == adresse else None

    now = wait_for("the update published", lambda: with_address("2 place Bellecour"))
    assert now.headers["etag"] != etag
    assert now.json()["geometry"]["coordinates"] == [4.8468, 45.7605]  # the patch kept what it did not name
    # the old ETag is stale now
    late = httpx.put(location, json=toilet(gid, "late"), headers=auth(lyon, **{"If-Match": etag}), timeout=30)
    assert late.status_code == 412

    # replace with the current ETag
    replaced = httpx.put(
        location, json=toilet(gid, "3 place Bellecour"), headers=auth(lyon, **{"If-Match": now.headers["etag"]}),
        timeout=30,
    )  # fmt: skip
    assert replaced.status_code == 200, replaced.text
    wait_for("the replace published", lambda: with_address("3 place Bellecour"))

    # delete: 204, then gone
    deleted = httpx.delete(location, headers=auth(lyon), timeout=30)
    assert deleted.status_code == 204, deleted.text
    wait_for("the delete published", lambda: httpx.get(location, timeout=30).status_code == 404 or None)
    assert httpx.delete(location, headers=auth(lyon), timeout=30).status_code == 404


def test_a_change_the_stream_refuses_is_a_422_with_its_reasons(pipeline: Pipeline) -> None:
    base = pipeline.services["publish"].base_url
    lyon = push_token(pipeline, LYON)
    far = toilet(uuid.uuid4().int % 10**9 + 10**9, "Paris", lon=2.35, lat=48.85)  # outside the Métropole
    r = httpx.post(f"{base}{ITEMS}", json=far, headers=auth(lyon), timeout=30)
    assert r.status_code == 422, r.text
    doc = r.json()
    assert doc["code"] == "ChangeRefused" and doc["details"] and doc["receipt"].startswith("http")
    bad = httpx.post(f"{base}{ITEMS}", content=b"{", headers=auth(lyon, **{"Content-Type": "application/geo+json"}),
                     timeout=30)  # fmt: skip
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidBody"
    wrong_type = httpx.post(f"{base}{ITEMS}", content=b"{}", headers=auth(lyon, **{"Content-Type": "text/csv"}),
                            timeout=30)  # fmt: skip
    assert wrong_type.status_code == 415


def test_the_push_api_down_is_a_503_with_retry_after(pipeline: Pipeline) -> None:
    base = pipeline.services["publish"].base_url
    lyon = push_token(pipeline, LYON)
    ingest = pipeline.services["ingest"]
    ingest.stop()
    try:
        r = httpx.post(f"{base}{ITEMS}", json=toilet(10**9 + 7, "x"), headers=auth(lyon), timeout=30)
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0, r.text
        assert r.json()["code"] == "ServiceUnavailable"
    finally:
        ingest.start()
        ingest.wait_ready(timeout=120)
