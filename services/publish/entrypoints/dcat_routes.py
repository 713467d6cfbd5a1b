"""DCAT (JSON-LD): one dataset's metadata and the catalogue of every dataset, for harvesting."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from services.contract.datasets.catalogue import DatasetDefinition
from services.publish.domain import dcat
from services.publish.entrypoints.api_ports import JSONLD, ApiPorts


def router(ports: ApiPorts) -> APIRouter:
    r = APIRouter()
    base, read_model, catalogue = ports.base, ports.read_model, ports.catalogue

    async def dcat_node(d: DatasetDefinition, latest: int) -> dict[str, Any]:
        versions = await read_model.versions(d.id, latest + 1, 50, newest_first=True) if latest else []
        return dcat.dataset_node(base, d, versions, latest, catalogue.territory.name)

    @r.get(
        "/datasets/{dataset}/dcat",
        summary="DCAT metadata of one dataset (JSON-LD), with its distributions and latest 50 versions",
        responses={200: {"content": {JSONLD: {}}}},
    )
    async def dataset_dcat(dataset: str) -> Response:
        d = ports.definition(dataset)
        latest = (await read_model.latest_versions()).get(dataset, 0)
        doc = {"@context": dcat.CONTEXT, **(await dcat_node(d, latest))}
        return JSONResponse(doc, media_type=JSONLD)

    @r.get(
        "/catalog",
        summary="DCAT catalogue of every dataset (JSON-LD), for harvesting",
        responses={200: {"content": {JSONLD: {}}}},
    )
    async def catalog() -> Response:
        states = await read_model.datasets()
        nodes = [await dcat_node(d, states[d.id].last_version if d.id in states else 0) for d in catalogue]
        modified = max((s.updated_at for s in states.values()), default=None)
        return JSONResponse(dcat.catalogue_document(base, nodes, modified, catalogue.territory.name), media_type=JSONLD)

    return r
