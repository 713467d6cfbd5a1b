"""The committed OpenAPI document of the push API is the one the app serves (regenerate with
``python -m services.ingest.entrypoints.openapi_document > docs/openapi/ingest.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from services.ingest.entrypoints.openapi_document import openapi_document

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "ingest.json"


def test_committed_openapi_document_matches_the_app() -> None:
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert committed == openapi_document(), f"stale {COMMITTED.name}: regenerate it (see this test's docstring)"


def test_the_document_describes_the_commune_facing_routes_and_their_errors() -> None:
    doc = openapi_document()
    push = doc["paths"]["/v1/datasets/{dataset}/changes"]["post"]
    assert {"202", "400", "401", "403", "404", "409", "413", "422", "429", "503"} <= set(push["responses"])
    assert "application/json" in push["requestBody"]["content"]
    assert "/v1/communes/{insee}/status" in doc["paths"]
