"""DCAT (JSON-LD, Turtle or RDF/XML by content negotiation): one dataset's metadata and the catalogue of every
dataset, paged with Hydra, for harvesting (data.gouv.fr's DCAT harvester)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from services.contract.datasets.catalogue import DatasetDefinition
from services.publish.domain import dcat
from services.publish.entrypoints.api_ports import ApiPorts, problem

RDF_FORMAT = "ttl (Turtle), rdf (RDF/XML) or jsonld; without it, the Accept header chooses (JSON-LD by default)"
RDF_CONTENT: dict[str, Any] = {
    "content": {dcat.JSON_LD.media_type: {}, dcat.TURTLE.media_type: {}, dcat.RDF_XML.media_type: {}}
}


def router(ports: ApiPorts) -> APIRouter:
    r = APIRouter()
    base, read_model, catalogue = ports.base, ports.read_model, ports.catalogue

    async def dcat_entry(d: DatasetDefinition, latest: int) -> dcat.DatasetEntry:
        versions = await read_model.versions(d.id, latest + 1, 50, newest_first=True) if latest else []
        first = await read_model.versions(d.id, 0, 1) if latest else []
        return dcat.DatasetEntry(d, versions, latest, first[0].published_at if first else None)

    def rdf_format(request: Request, format_param: str | None) -> dcat.Format:
        try:
            return dcat.negotiate(format_param, request.headers.get("accept"))
        except dcat.UnknownFormat as bad:
            raise problem(400, str(bad)) from bad

    def rdf_response(graph: Any, fmt: dcat.Format) -> Response:
        return Response(dcat.serialize(graph, fmt), media_type=fmt.media_type, headers={"Vary": "Accept"})

    @r.get(
        "/datasets/{dataset}/dcat",
        summary="DCAT metadata of one dataset (JSON-LD, Turtle or RDF/XML), with its distributions and latest 50 versions",
        responses={200: RDF_CONTENT},
    )
    async def dataset_dcat(
        request: Request, dataset: str, format: Annotated[str | None, Query(description=RDF_FORMAT)] = None
    ) -> Response:
        d, fmt = ports.definition(dataset), rdf_format(request, format)
        entry = await dcat_entry(d, (await read_model.latest_versions()).get(dataset, 0))
        return rdf_response(dcat.dataset_graph(base, entry, catalogue.territory, ports.dcat_contact), fmt)

    @r.get(
        "/catalog",
        summary="DCAT catalogue of every dataset (JSON-LD, Turtle or RDF/XML), paged with Hydra, for harvesting",
        responses={200: RDF_CONTENT},
    )
    async def catalog(
        request: Request,
        format: Annotated[str | None, Query(description=RDF_FORMAT)] = None,
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> Response:
        fmt, ids, states = rdf_format(request, format), catalogue.ids(), await read_model.datasets()
        paging = dcat.Page(page, page_size, len(ids))
        if page > paging.last:
            raise problem(404, f"the catalogue has {paging.last} pages of {page_size}")
        chosen = [d for d in catalogue if d.id in ids[(page - 1) * page_size : page * page_size]]
        entries = [await dcat_entry(d, states[d.id].last_version if d.id in states else 0) for d in chosen]
        modified = max((s.updated_at for s in states.values()), default=None)
        graph = dcat.catalogue_graph(base, entries, ids, paging, fmt, catalogue.territory, ports.dcat_contact, modified)
        return rdf_response(graph, fmt)

    @r.get("/catalog.{extension}", summary="The DCAT catalogue in the format its extension names (ttl, rdf, jsonld)")
    async def catalog_file(
        request: Request,
        extension: str,
        page: Annotated[int, Query(ge=1)] = 1,
        page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> Response:
        return await catalog(request, extension, page, page_size)

    return r
