"""The committed OpenAPI document of the publish API is the one the app serves (the integration test
also compares it with the running service's /openapi.json)."""

from __future__ import annotations

import json
from pathlib import Path

from services.publish.entrypoints.openapi_document import openapi_document, render

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "publish.json"


def test_committed_openapi_document_matches_the_app() -> None:
    assert json.loads(COMMITTED.read_text(encoding="utf-8")) == openapi_document(), (
        "docs/openapi/publish.json is stale: python -m services.publish.entrypoints.openapi_document "
        "> docs/openapi/publish.json"
    )
    assert COMMITTED.read_text(encoding="utf-8") == render()


def test_openapi_document_covers_every_public_route() -> None:
    paths = set(openapi_document()["paths"])
    for expected in (
        "/datasets",
        "/datasets/{dataset}/versions",
        "/datasets/{dataset}/versions/{version}",
        "/datasets/{dataset}/versions/{version}/diff",
        "/datasets/{dataset}/versions/{version}/features.geojson",
        "/datasets/{dataset}/versions/{version}/features.csv",
        "/datasets/{dataset}/changes",
        "/datasets/{dataset}/features/{feature_id}/history",
        "/datasets/{dataset}/events",
        "/datasets/{dataset}/dcat",
        "/catalog",
        "/ogc",
        "/ogc/conformance",
        "/ogc/collections",
        "/ogc/collections/{collection_id}/items",
        "/ogc/collections/{collection_id}/items/{feature_id}",
        "/subscriptions",
        "/subscriptions/{subscription_id}/deliveries",
    ):
        assert expected in paths, expected
    assert not {"/metrics", "/healthz", "/readyz"} & paths
