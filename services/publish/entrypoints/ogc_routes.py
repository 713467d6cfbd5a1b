"""OGC API – Features (Part 1) over the current data: landing page, conformance, collections, items, item."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from services.contract.datasets.catalogue import DatasetDefinition
from services.publish.domain import ogc_features
from services.publish.domain.api_documents import iso
from services.publish.domain.feature_documents import (
    BadFeatureId,
    StoredFeature,
    feature_dict,
    feature_json,
    parse_public_feature_id,
    public_feature_id,
)
from services.publish.entrypoints.api_ports import GEOJSON, ApiPorts, problem

TAGS: list[str | Any] = ["OGC API – Features"]


def router(ports: ApiPorts) -> APIRouter:
    r = APIRouter()
    ogc, read_model, catalogue = ports.ogc, ports.read_model, ports.catalogue

    @r.get("/ogc", summary="OGC API – Features landing page", tags=TAGS)
    async def ogc_landing() -> dict[str, Any]:
        return ogc_features.landing_page(ogc, f"{ports.base}/openapi.json", catalogue.territory.name)

    @r.get("/ogc/conformance", summary="OGC API – Features conformance classes", tags=TAGS)
    async def ogc_conformance() -> dict[str, Any]:
        return ogc_features.conformance()

    async def collection_doc(d: DatasetDefinition, latest: int) -> dict[str, Any]:
        return ogc_features.collection(ogc, d, await read_model.extent(d.id), latest)

    @r.get("/ogc/collections", summary="OGC API – Features collections (one per dataset)", tags=TAGS)
    async def ogc_collections() -> dict[str, Any]:
        latest = await read_model.latest_versions()
        return ogc_features.collections(ogc, [await collection_doc(d, latest.get(d.id, 0)) for d in catalogue])

    @r.get("/ogc/collections/{collection_id}", summary="One collection", tags=TAGS)
    async def ogc_collection(collection_id: str) -> dict[str, Any]:
        d = ports.definition(collection_id)
        return await collection_doc(d, (await read_model.latest_versions()).get(d.id, 0))

    @r.get(
        "/ogc/collections/{collection_id}/items",
        summary="Features of the latest published version, filtered by bbox, paged by limit/offset",
        tags=TAGS,
        responses={200: {"content": {GEOJSON: {}}}},
    )
    async def ogc_items(
        collection_id: str,
        bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (CRS84)")] = None,
        limit: Annotated[int | None, Query(description=f"1..{ogc_features.MAX_LIMIT}, default 10")] = None,
        offset: Annotated[int | None, Query(description="Index of the first feature (default 0)")] = None,
    ) -> Response:
        ports.definition(collection_id)
        try:
            q = ogc_features.parse_items_query(bbox, limit, offset)
        except ogc_features.BadQuery as bad:
            raise problem(400, str(bad)) from bad
        matched, page = await read_model.items(collection_id, q.bbox, q.limit, q.offset)
        members = ogc_features.items_members(
            ogc, collection_id, q, len(page), matched, iso(ports.clock.now().replace(microsecond=0))
        )
        body = (
            json.dumps({"type": "FeatureCollection", **members}, ensure_ascii=False)[:-1]
            + ',"features":['
            + ",".join(feature_json(f) for f in page)
            + "]}"
        )
        return Response(body.encode("utf-8"), media_type=GEOJSON)

    @r.get(
        "/ogc/collections/{collection_id}/items/{feature_id:path}",
        summary="One feature of the latest published version",
        tags=TAGS,
        responses={200: {"content": {GEOJSON: {}}}},
    )
    async def ogc_item(collection_id: str, feature_id: Annotated[str, Path(max_length=300)]) -> Response:
        ports.definition(collection_id)
        try:
            commune, fid = parse_public_feature_id(feature_id)
        except BadFeatureId as bad:
            raise problem(404, str(bad)) from bad
        f: StoredFeature | None = await read_model.item(collection_id, commune, fid)
        if f is None:
            raise problem(404, f"no feature {feature_id[:100]!r} in {collection_id}")
        doc = feature_dict(public_feature_id(f.commune, f.feature_id), f.geometry_geojson, f.attributes_json)
        doc["links"] = ogc_features.item_links(ogc, collection_id, doc["id"])
        return Response(json.dumps(doc, ensure_ascii=False).encode("utf-8"), media_type=GEOJSON)

    return r
