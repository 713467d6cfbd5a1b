"""The OGC API's definition (/ogc/api) is OpenAPI 3.0, valid by openapi-spec-validator, with the standard's
parameter definitions (OGC 17-069r4 7.15.2-7.15.4) and nothing of FastAPI's 3.1 dialect."""

from __future__ import annotations

import json
from typing import Any

from openapi_spec_validator import OpenAPIV30SpecValidator, validate

from services.publish.domain.ogc_openapi import openapi_document

DOC = openapi_document("http://odc.test/ogc")


def test_the_ogc_api_definition_is_valid_openapi_3_0() -> None:
    assert DOC["openapi"].startswith("3.0.")
    validate(DOC, cls=OpenAPIV30SpecValidator)  # raises on any error
    assert list(OpenAPIV30SpecValidator(DOC).iter_errors()) == []


def test_an_invalid_document_is_caught_by_the_same_check() -> None:
    broken: dict[str, Any] = json.loads(json.dumps(DOC))
    broken["components"]["parameters"]["limit"]["schema"] = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert list(OpenAPIV30SpecValidator(broken).iter_errors())


def test_no_openapi_3_1_null_types_anywhere() -> None:
    text = json.dumps(DOC)
    assert '"type": "null"' not in text and '"const"' not in text


def test_its_server_is_the_ogc_root_and_paths_are_relative_to_it() -> None:
    assert DOC["servers"] == [{"url": "http://odc.test/ogc"}]
    assert set(DOC["paths"]) == {
        "/",
        "/api",
        "/conformance",
        "/collections",
        "/collections/{collectionId}",
        "/collections/{collectionId}/items",
        "/collections/{collectionId}/items/{featureId}",
        "/collections/{collectionId}/queryables",
    }


def test_items_parameters_are_the_standard_definitions() -> None:
    params = DOC["components"]["parameters"]
    items = DOC["paths"]["/collections/{collectionId}/items"]["get"]["parameters"]
    assert {p["$ref"].rsplit("/", 1)[1] for p in items} == {
        "collectionId",
        "limit",
        "offset",
        "bbox",
        "datetime",
        "filter",
        "filter-lang",
        "filter-crs",
    }
    for name in ("limit", "bbox", "datetime", "filter", "filter-lang", "filter-crs"):
        p = params[name]
        assert (p["name"], p["in"], p["required"], p["style"], p["explode"]) == (name, "query", False, "form", False)
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 10}
    assert params["bbox"]["schema"] == {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}}
    assert params["datetime"]["schema"] == {"type": "string"}


def test_errors_are_described_as_ogc_exceptions() -> None:
    responses = DOC["paths"]["/collections/{collectionId}/items"]["get"]["responses"]
    assert {"200", "400", "404", "500"} <= set(responses)
    assert DOC["components"]["schemas"]["exception"]["required"] == ["code"]
