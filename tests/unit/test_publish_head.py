"""HEAD on the publish API's GET routes (FastAPI's own routes answer 405): the GET's status and headers, no
body. Built with fakes of our own ports; the integration suite (test_req_core_http) checks every GET route
on the real stack."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.unit.test_publish_api_auth import Api


@pytest.mark.parametrize("path", ["/ogc", "/ogc/api", "/ogc/conformance", "/healthz", "/subscriptions", "/nowhere"])
def test_head_answers_like_get_without_a_body(path: str) -> None:
    with TestClient(Api().app) as c:
        get, head = c.get(path), c.head(path)
    assert head.status_code == get.status_code != 405
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == str(len(get.content)) and head.content == b""


def test_head_is_counted_under_the_route_template() -> None:
    api = Api()
    with TestClient(api.app) as c:
        c.head("/ogc/conformance")
        metrics = c.get("/metrics").text
    assert 'odc_api_requests_total{route="/ogc/conformance",status="200"} 1.0' in metrics


def test_a_post_only_route_still_refuses_head() -> None:
    with TestClient(Api().app) as c:
        assert c.head("/subscriptions/abc/redeliver").status_code == 405
