"""OGC API – Features (Part 1: Core, GeoJSON, OpenAPI 3.0) over the current data: landing page, API
definition, conformance, collections, items, item. Errors are OGC exception documents
(``{"code", "description"}``): 400 for an unknown or invalid query parameter, 404 for what does not exist."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from services.contract.datasets.catalogue import DatasetDefinition
from services.publish.domain import ogc_edits, ogc_features, ogc_filter, ogc_openapi
from services.publish.domain.api_documents import etag_matches, iso
from services.publish.domain.feature_documents import (
    BadFeatureId,
    feature_dict,
    feature_json,
    parse_public_feature_id,
)
from services.publish.entrypoints.api_ports import GEOJSON, ApiPorts

TAGS: list[str | Any] = ["OGC API – Features"]
EXCEPTION = {"content": {"application/json": {}}, "description": "OGC API exception: {code, description}"}


def ogc_error(status: int, code: str, description: str) -> JSONResponse:
    return JSONResponse(ogc_features.exception_body(code, description), status_code=status)


def router(ports: ApiPorts) -> APIRouter:
    r = APIRouter(tags=TAGS)
    ogc, read_model, catalogue = ports.ogc, ports.read_model, ports.catalogue

    def known(collection_id: str) -> DatasetDefinition | JSONResponse:
        d = catalogue.get(collection_id)
        return d if d is not None else ogc_error(404, "NotFound", f"no collection {collection_id[:100]!r}")

    @r.get("/ogc", summary="OGC API – Features landing page")
    async def ogc_landing() -> dict[str, Any]:
        return ogc_features.landing_page(ogc, f"{ogc}/api", catalogue.territory.name)

    @r.get(
        "/ogc/api",
        summary="The OGC API's definition (OpenAPI 3.0; its server is /ogc)",
        responses={200: {"content": {ogc_features.OPENAPI: {}}}},
    )
    async def ogc_api_definition() -> Response:
        doc = ogc_openapi.openapi_document(ogc, catalogue.territory.name)
        return JSONResponse(doc, media_type=ogc_features.OPENAPI)

    @r.get("/ogc/conformance", summary="OGC API – Features conformance classes")
    async def ogc_conformance() -> dict[str, Any]:
        return ogc_features.conformance()

    async def collection_doc(d: DatasetDefinition, latest: int) -> dict[str, Any]:
        extent = await read_model.extent(d.id)
        return ogc_features.collection(ogc, d, extent, latest, await read_model.first_published(d.id))

    @r.get("/ogc/collections", summary="OGC API – Features collections (one per dataset)")
    async def ogc_collections() -> dict[str, Any]:
        latest = await read_model.latest_versions()
        return ogc_features.collections(ogc, [await collection_doc(d, latest.get(d.id, 0)) for d in catalogue])

    @r.get("/ogc/collections/{collection_id}", summary="One collection", responses={404: EXCEPTION})
    async def ogc_collection(collection_id: str) -> Any:
        d = known(collection_id)
        if isinstance(d, JSONResponse):
            return d
        return await collection_doc(d, (await read_model.latest_versions()).get(d.id, 0))

    @r.get(
        "/ogc/collections/{collection_id}/queryables",
        summary="The properties a filter may use: a JSON Schema (2020-12) from the dataset's Table Schema",
        responses={200: {"content": {ogc_filter.SCHEMA_JSON: {}}}, 404: EXCEPTION},
    )
    async def ogc_queryables(collection_id: str) -> Response:
        d = known(collection_id)
        if isinstance(d, JSONResponse):
            return d
        return JSONResponse(ogc_filter.queryables(ogc, d), media_type=ogc_filter.SCHEMA_JSON)

    @r.get(
        "/ogc/collections/{collection_id}/items",
        summary="Features of the latest published version, filtered by bbox and datetime, paged by limit/offset",
        description=(
            "The parameters are the standard's (see the OpenAPI 3.0 definition at /ogc/api); any other query "
            "parameter, or an invalid value, is a 400 with an OGC exception body."
        ),
        responses={200: {"content": {GEOJSON: {}}}, 400: EXCEPTION, 404: EXCEPTION},
    )
    async def ogc_items(
        request: Request,
        collection_id: str,
        bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (CRS84), edges included")] = None,
        limit: Annotated[
            str | None,
            Query(description=f"1..{ogc_features.MAX_LIMIT} (above: {ogc_features.MAX_LIMIT}), default 10"),
        ] = None,
        offset: Annotated[str | None, Query(description="Index of the first feature (default 0)")] = None,
        datetime: Annotated[
            str | None, Query(description="RFC 3339 instant or interval (`..` open) on the features' time")
        ] = None,
        filter: Annotated[
            str | None, Query(description="A CQL2 filter on the queryables (Part 3: Basic CQL2, S_INTERSECTS)")
        ] = None,
        filter_lang: Annotated[
            str | None, Query(alias="filter-lang", description="cql2-text (default) or cql2-json")
        ] = None,
        filter_crs: Annotated[str | None, Query(alias="filter-crs", description="CRS84 only")] = None,
    ) -> Response:
        d = known(collection_id)
        if isinstance(d, JSONResponse):
            return d
        try:
            q = ogc_features.parse_items_query(request.query_params.multi_items())
            where = None
            if q.filter_text is not None or q.filter_lang is not None or q.filter_crs is not None:
                tree = ogc_filter.parse_filter(q.filter_text or "", q.filter_lang, q.filter_crs)
                where = ogc_filter.to_sql(tree, d)
        except (ogc_features.BadQuery, ogc_filter.BadFilter) as bad:
            return ogc_error(400, bad.code, str(bad))
        period = None if q.time is None else (q.time.start, q.time.end)
        matched, page = await read_model.items(collection_id, q.bbox, q.limit, q.offset, period, where)
        members = ogc_features.items_members(
            ogc, collection_id, q, len(page), matched, iso(ports.clock.now().replace(microsecond=0))
        )
        body = (
            json.dumps({"type": "FeatureCollection", **members}, ensure_ascii=False)[:-1]
            + ',"features":['
            + ",".join(feature_json(f, ogc_features.ogc_feature_id(f.commune, f.feature_id)) for f in page)
            + "]}"
        )
        return Response(body.encode("utf-8"), media_type=GEOJSON)

    @r.get(
        "/ogc/collections/{collection_id}/items/{feature_id:path}",
        summary="One feature of the latest published version (id `<commune>.<feature_id>`, URL-safe), with its ETag",
        description="An id of the former spelling `<commune>:<feature_id>` is redirected (308) to the current one.",
        responses={200: {"content": {GEOJSON: {}}}, 308: {"description": "a former id"}, 404: EXCEPTION},
    )
    async def ogc_item(request: Request, collection_id: str, feature_id: str) -> Response:
        d = known(collection_id)
        if isinstance(d, JSONResponse):
            return d
        if ":" in feature_id:  # the former id; a current one never holds ':'
            try:
                commune, fid = parse_public_feature_id(feature_id)
            except BadFeatureId as bad:
                return ogc_error(404, "NotFound", str(bad))
            new_id = ogc_features.ogc_feature_id(commune, fid)
            return RedirectResponse(f"{ogc}/collections/{collection_id}/items/{new_id}", status_code=308)
        try:
            commune, fid = ogc_features.parse_ogc_feature_id(feature_id)
        except ogc_features.BadFeatureId as bad:
            return ogc_error(404, "NotFound", str(bad))
        f = await read_model.item(collection_id, commune, fid)
        if f is None:
            return ogc_error(404, "NotFound", f"no feature {feature_id[:100]!r} in {collection_id}")
        tag = ogc_edits.feature_etag(f.geometry_geojson, f.attributes_json)  # If-Match of a Part 4 edit
        if etag_matches(request.headers.get("if-none-match", ""), tag):
            return Response(status_code=304, headers={"ETag": tag})
        doc = feature_dict(feature_id, f.geometry_geojson, f.attributes_json)
        doc["links"] = ogc_features.item_links(ogc, collection_id, feature_id)
        body = json.dumps(doc, ensure_ascii=False).encode("utf-8")
        return Response(body, media_type=GEOJSON, headers={"ETag": tag, "Cache-Control": "no-cache"})

    return r
