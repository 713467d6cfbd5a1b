"""The OpenAPI 3.0 definition of the OGC API – Features (served at ``/ogc/api``), built by hand rather than
taken from FastAPI: FastAPI writes OpenAPI 3.1 (``anyOf`` with ``null``), which OGC clients and the
official test suite read as 3.0 and reject. Its server is ``/ogc`` and its paths are relative to it; the
parameters are the standard's definitions (OGC 17-069r4 7.15.2-7.15.4: ``limit``, ``bbox``, ``datetime``).
A unit test validates it as OpenAPI 3.0 with ``openapi-spec-validator``."""

from __future__ import annotations

from typing import Any

from services.publish.domain.ogc_features import DEFAULT_LIMIT, GEOJSON, JSON, MAX_LIMIT

OPENAPI_VERSION = "3.0.3"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _ok(description: str, schema: str, media_type: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": _ref("schemas", schema)}}}


def _operation(
    operation_id: str, summary: str, ok: dict[str, Any], parameters: list[dict[str, Any]], errors: tuple[str, ...]
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    for status in errors:
        responses[status] = _ref("responses", {"400": "InvalidParameter", "404": "NotFound"}[status])
    responses["500"] = _ref("responses", "ServerError")
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["OGC API – Features"],
        "responses": responses,
    }
    if parameters:
        op["parameters"] = parameters
    return op


LINK = {
    "type": "object",
    "required": ["href", "rel"],
    "properties": {
        "href": {"type": "string"},
        "rel": {"type": "string"},
        "type": {"type": "string"},
        "hreflang": {"type": "string"},
        "title": {"type": "string"},
        "length": {"type": "integer"},
    },
}

GEOMETRY = {
    "type": "object",
    "description": "A GeoJSON geometry (RFC 7946), in CRS84",
    "required": ["type"],
    "properties": {
        "type": {
            "type": "string",
            "enum": [
                "Point",
                "MultiPoint",
                "LineString",
                "MultiLineString",
                "Polygon",
                "MultiPolygon",
                "GeometryCollection",
            ],
        },
        "coordinates": {"type": "array", "items": {}},
        "geometries": {"type": "array", "items": {"type": "object"}},
    },
}


def _schemas() -> dict[str, Any]:
    links = {"type": "array", "items": _ref("schemas", "link")}
    return {
        "exception": {
            "type": "object",
            "required": ["code"],
            "properties": {"code": {"type": "string"}, "description": {"type": "string"}},
        },
        "link": LINK,
        "landingPage": {
            "type": "object",
            "required": ["links"],
            "properties": {"title": {"type": "string"}, "description": {"type": "string"}, "links": links},
        },
        "confClasses": {
            "type": "object",
            "required": ["conformsTo"],
            "properties": {"conformsTo": {"type": "array", "items": {"type": "string"}}},
        },
        "extent": {
            "type": "object",
            "properties": {
                "spatial": {
                    "type": "object",
                    "properties": {
                        "bbox": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}},
                        },
                        "crs": {"type": "string"},
                    },
                },
                "temporal": {
                    "type": "object",
                    "properties": {
                        "interval": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "array",
                                "minItems": 2,
                                "maxItems": 2,
                                "items": {"type": "string", "format": "date-time", "nullable": True},
                            },
                        },
                        "trs": {"type": "string"},
                    },
                },
            },
        },
        "collection": {
            "type": "object",
            "required": ["id", "links"],
            "properties": {
                "id": {"type": "string"},
                "title": {"type": "string"},
                "description": {"type": "string"},
                "links": links,
                "extent": _ref("schemas", "extent"),
                "itemType": {"type": "string", "default": "feature"},
                "crs": {"type": "array", "items": {"type": "string"}},
            },
        },
        "collections": {
            "type": "object",
            "required": ["links", "collections"],
            "properties": {"links": links, "collections": {"type": "array", "items": _ref("schemas", "collection")}},
        },
        "geometryGeoJSON": GEOMETRY,
        "featureGeoJSON": {
            "type": "object",
            "required": ["type", "geometry", "properties"],
            "properties": {
                "type": {"type": "string", "enum": ["Feature"]},
                "id": {"type": "string"},
                "geometry": {**_ref("schemas", "geometryGeoJSON"), "nullable": True},
                "properties": {"type": "object", "nullable": True},
                "links": links,
            },
        },
        "featureCollectionGeoJSON": {
            "type": "object",
            "required": ["type", "features"],
            "properties": {
                "type": {"type": "string", "enum": ["FeatureCollection"]},
                "features": {"type": "array", "items": _ref("schemas", "featureGeoJSON")},
                "links": links,
                "timeStamp": {"type": "string", "format": "date-time"},
                "numberMatched": {"type": "integer", "minimum": 0},
                "numberReturned": {"type": "integer", "minimum": 0},
            },
        },
    }


def _parameters() -> dict[str, Any]:
    return {
        "collectionId": {
            "name": "collectionId",
            "in": "path",
            "description": "local identifier of a collection (a dataset id)",
            "required": True,
            "schema": {"type": "string"},
        },
        "featureId": {
            "name": "featureId",
            "in": "path",
            "description": "local identifier of a feature: `<commune>.<feature_id>`, URL-safe",
            "required": True,
            "schema": {"type": "string"},
        },
        "limit": {
            "name": "limit",
            "in": "query",
            "description": (
                "The optional limit parameter limits the number of items that are presented in the response "
                f"document. A value above {MAX_LIMIT} is taken as {MAX_LIMIT}."
            ),
            "required": False,
            "style": "form",
            "explode": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        },
        "offset": {
            "name": "offset",
            "in": "query",
            "description": "Index of the first feature of the page (the `next` link carries it).",
            "required": False,
            "style": "form",
            "explode": False,
            "schema": {"type": "integer", "minimum": 0, "default": 0},
        },
        "bbox": {
            "name": "bbox",
            "in": "query",
            "description": (
                "Only features that have a geometry that intersects the bounding box are selected (its edges "
                "included): lower left corner, upper right corner, in WGS 84 longitude/latitude "
                "(http://www.opengis.net/def/crs/OGC/1.3/CRS84); six numbers for a 3D box."
            ),
            "required": False,
            "style": "form",
            "explode": False,
            "schema": {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}},
        },
        "datetime": {
            "name": "datetime",
            "in": "query",
            "description": (
                "Either a date-time or an interval, open or closed (RFC 3339; `..` or empty for an open end). "
                "Only features whose time intersects it are selected; a feature's time is when its current "
                "state was published (the publication time of the version that last changed it)."
            ),
            "required": False,
            "style": "form",
            "explode": False,
            "schema": {"type": "string"},
        },
        # OGC API – Features Part 3 (filtering)
        "filter": {
            "name": "filter",
            "in": "query",
            "description": (
                "A CQL2 filter (Basic CQL2, LIKE, BETWEEN, IN, S_INTERSECTS) on the collection's queryables "
                "(see /collections/{collectionId}/queryables), in the language named by filter-lang."
            ),
            "required": False,
            "style": "form",
            "explode": False,
            "schema": {"type": "string"},
        },
        "filter-lang": {
            "name": "filter-lang",
            "in": "query",
            "description": "The language of filter: cql2-text (the default) or cql2-json.",
            "required": False,
            "style": "form",
            "explode": False,
            "schema": {"type": "string", "enum": ["cql2-text", "cql2-json"], "default": "cql2-text"},
        },
        "filter-crs": {
            "name": "filter-crs",
            "in": "query",
            "description": "The CRS of the filter's geometries: CRS84 only (the default).",
            "required": False,
            "style": "form",
            "explode": False,
            "schema": {
                "type": "string",
                "format": "uri",
                "enum": ["http://www.opengis.net/def/crs/OGC/1.3/CRS84"],
                "default": "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
            },
        },
    }


def _responses() -> dict[str, Any]:
    def exception(description: str) -> dict[str, Any]:
        return {"description": description, "content": {JSON: {"schema": _ref("schemas", "exception")}}}

    return {
        "InvalidParameter": exception("A query parameter is unknown or has an invalid value."),
        "NotFound": exception("The requested resource does not exist on the server."),
        "ServerError": exception("A server error occurred."),
    }


def _write(operation_id: str, summary: str, ok: dict[str, dict[str, Any]], body: str | None) -> dict[str, Any]:
    """A Part 4 operation: the commune's push token, the answers of docs/api.md "Editing from QGIS"."""
    item: list[dict[str, Any]] = [_ref("parameters", "collectionId")] + ([] if operation_id == "createFeature" else [
        _ref("parameters", "featureId")])  # fmt: skip
    if operation_id in ("replaceFeature", "updateFeature", "deleteFeature"):
        item.append({"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
                     "description": "The ETag of the feature as read (GET); a stale one is a 412"})  # fmt: skip
    responses: dict[str, Any] = {
        **ok,
        "202": {"description": "Sent to the stream as a change event, still being processed (Link rel=monitor)"},
    }
    for status, words in (("400", "Invalid body"), ("401", "No or unknown token"), ("403", "Not the token's commune"),
                          ("404", "No such collection or feature"), ("409", "The feature exists (use PUT)"),
                          ("412", "If-Match is stale"), ("415", "Unsupported Content-Type"),
                          ("422", "The stream refused the change (reasons listed)"),
                          ("503", "The push API is unavailable (Retry-After)")):  # fmt: skip
        responses[status] = {"description": words, "content": {JSON: {"schema": _ref("schemas", "exception")}}}
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["OGC API – Features – Part 4"],
        "parameters": item,
        "security": [{"pushToken": []}],
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {body: {"schema": _ref("schemas", "featureGeoJSON")}}}
    return op


def _with_writes(doc: dict[str, Any]) -> dict[str, Any]:
    paths = doc["paths"]
    paths["/collections/{collectionId}/items"]["post"] = _write(
        "createFeature", "Create a feature of the token's commune", {"201": {"description": "Created (Location)"}},
        GEOJSON)  # fmt: skip
    item = paths["/collections/{collectionId}/items/{featureId}"]
    item["put"] = _write("replaceFeature", "Replace a feature", {"200": {"description": "Replaced"}}, GEOJSON)
    item["patch"] = _write("updateFeature", "Update a feature (RFC 7396 merge patch)",
                           {"200": {"description": "Updated"}}, "application/merge-patch+json")  # fmt: skip
    item["delete"] = _write("deleteFeature", "Delete a feature", {"204": {"description": "Deleted"}}, None)
    doc["components"]["securitySchemes"] = {
        "pushToken": {"type": "http", "scheme": "bearer", "description": "A commune's push token (odc token create)"}
    }
    return doc


def openapi_document(server_url: str, territory_name: str = "Métropole de Lyon") -> dict[str, Any]:
    """The API definition; ``server_url`` is the OGC API's root (``<base>/ogc``)."""
    return _with_writes(_read_document(server_url, territory_name))


def _read_document(server_url: str, territory_name: str) -> dict[str, Any]:
    p = _ref
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"odc — OGC API – Features ({territory_name})",
            "version": "1.0.0",
            "description": (
                "The current (latest published) data of every dataset of the OpenData des communes, as OGC API – "
                "Features – Part 1: Core with GeoJSON, Part 3 (filtering) and Part 4 (a commune edits its own "
                "features with its push token; each edit is a change event processed by the stream)."
            ),
            "license": {
                "name": "Licence Ouverte / Open Licence 2.0",
                "url": "https://www.etalab.gouv.fr/licence-ouverte-open-licence/",
            },
        },
        "servers": [{"url": server_url}],
        "paths": {
            "/": {"get": _operation("getLandingPage", "Landing page", _ok("The landing page", "landingPage"), [], ())},
            "/api": {
                "get": _operation(
                    "getApiDefinition",
                    "This API definition (OpenAPI 3.0)",
                    {
                        "description": "The OpenAPI 3.0 document",
                        "content": {"application/vnd.oai.openapi+json;version=3.0": {"schema": {"type": "object"}}},
                    },
                    [],
                    (),
                )
            },
            "/conformance": {
                "get": _operation(
                    "getConformanceDeclaration",
                    "The conformance classes this API implements",
                    _ok("The conformance declaration", "confClasses"),
                    [],
                    (),
                )
            },
            "/collections": {
                "get": _operation(
                    "getCollections",
                    "The feature collections (one per dataset)",
                    _ok("The feature collections", "collections"),
                    [],
                    (),
                )
            },
            "/collections/{collectionId}": {
                "get": _operation(
                    "describeCollection",
                    "One feature collection",
                    _ok("The collection's metadata", "collection"),
                    [p("parameters", "collectionId")],
                    ("404",),
                )
            },
            "/collections/{collectionId}/items": {
                "get": _operation(
                    "getFeatures",
                    "Features of the latest published version, filtered by bbox and datetime, paged",
                    _ok("A page of features (follow the `next` link)", "featureCollectionGeoJSON", GEOJSON),
                    [
                        p("parameters", "collectionId"),
                        p("parameters", "limit"),
                        p("parameters", "offset"),
                        p("parameters", "bbox"),
                        p("parameters", "datetime"),
                        p("parameters", "filter"),
                        p("parameters", "filter-lang"),
                        p("parameters", "filter-crs"),
                    ],
                    ("400", "404"),
                )
            },
            "/collections/{collectionId}/queryables": {
                "get": _operation(
                    "getQueryables",
                    "The properties a filter may use (a JSON Schema)",
                    {
                        "description": "The queryables (JSON Schema 2020-12)",
                        "content": {"application/schema+json": {"schema": {"type": "object"}}},
                    },
                    [p("parameters", "collectionId")],
                    ("404",),
                )
            },
            "/collections/{collectionId}/items/{featureId}": {
                "get": _operation(
                    "getFeature",
                    "One feature of the latest published version",
                    _ok("The feature", "featureGeoJSON", GEOJSON),
                    [p("parameters", "collectionId"), p("parameters", "featureId")],
                    ("404",),
                )
            },
        },
        "components": {"schemas": _schemas(), "parameters": _parameters(), "responses": _responses()},
    }
