"""Datasets and their immutable versions: metadata, row-level diff, GeoJSON and CSV as of a version (strong
ETags, cached for a year; the exports written once to files and served with byte ranges), and the latest
downloads (redirects to the immutable URLs)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from services.publish.domain import api_documents
from services.publish.domain.api_documents import VersionRecord, etag_matches, version_etag
from services.publish.domain.feature_documents import LEFT_OUT_HEADER, WGS84_PRJ, CsvLayout, feature_json, left_out_note
from services.publish.entrypoints.api_ports import GEOJSON, IMMUTABLE, ApiPorts, problem
from services.publish.entrypoints.export_responses import ExportFileResponse


async def text_stream(head: list[str], rows: AsyncIterator[str], tail: list[str]) -> AsyncIterator[bytes]:
    """Text chunks gathered into ~64 KiB writes."""
    buf: list[str] = list(head)
    size = sum(map(len, buf))
    async for chunk in rows:
        buf.append(chunk)
        size += len(chunk)
        if size >= 1 << 16:
            yield "".join(buf).encode("utf-8")
            buf, size = [], 0
    buf.extend(tail)
    yield "".join(buf).encode("utf-8")


CSV_GEOMETRY = (
    "wkt: add the WKT geometry column to a national-schema layout too (the file is then no longer valid against "
    "the national schema, which places coordinates in its own columns)"
)
CSV_DESCRIPTION = (
    "Columns: the Table Schema's fields in order. Datasets without a national schema end with a `WKT` column, the "
    "geometry in WKT (WGS84 lon/lat, 7 decimals), which GDAL's CSV driver and QGIS take for the geometry as is. "
    "A national-schema layout has exactly the national schema's columns (valid against it); `?geometry=wkt` adds "
    "the `WKT` column to it. RFC 4180: comma, double quotes, CRLF, UTF-8, header row."
)


def router(ports: ApiPorts) -> APIRouter:
    r = APIRouter()
    base, read_model = ports.base, ports.read_model

    async def existing_version(dataset: str, version: int) -> VersionRecord:
        ports.definition(dataset)
        v = await read_model.version(dataset, version)
        if v is None:
            raise problem(404, f"{dataset} has no version {version}")
        return v

    def cache_headers(request: Request, v: VersionRecord, what: str) -> tuple[dict[str, str], bool]:
        """The immutable caching headers of one of ``v``'s documents and whether the client has it already."""
        tag = version_etag(v, what)
        return {"ETag": tag, "Cache-Control": IMMUTABLE}, etag_matches(request.headers.get("if-none-match", ""), tag)

    async def export_file(
        v: VersionRecord,
        what: str,
        media_type: str,
        headers: dict[str, str],
        produce: Callable[[], AsyncIterator[bytes]],
    ) -> Response:
        """An export written once to a file as it streams (memory stays bounded), then served from it with its
        Content-Length and byte ranges (GDAL's /vsicurl/, download managers and resumed downloads need them)."""
        name = f"{v.dataset}-v{v.summary.version}-{what}-{v.summary.content_hash[:16]}"
        path = await ports.export_files.file(name, produce)
        return ExportFileResponse(path, media_type=media_type, headers=headers, version=v)

    def immutable_json(request: Request, v: VersionRecord, what: str, doc: Callable[[], Any]) -> Response:
        headers, fresh = cache_headers(request, v, what)
        if fresh:
            return Response(status_code=304, headers=headers)
        return JSONResponse(doc(), headers=headers)

    @r.get("/datasets", summary="List the datasets with their latest version")
    async def list_datasets() -> dict[str, Any]:
        states = await read_model.datasets()
        return {"datasets": [api_documents.dataset_json(base, d, states.get(d.id)) for d in ports.catalogue]}

    @r.get("/datasets/{dataset}", summary="One dataset and its latest version")
    async def get_dataset(dataset: str) -> dict[str, Any]:
        d = ports.definition(dataset)
        return api_documents.dataset_json(base, d, (await read_model.datasets()).get(d.id))

    @r.get("/datasets/{dataset}/versions", summary="A dataset's versions, oldest first, paged")
    async def list_versions(
        dataset: str,
        after: Annotated[int, Query(ge=0, description="Only versions after this one")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        ports.definition(dataset)
        rows = await read_model.versions(dataset, after, limit + 1)
        return api_documents.version_listing(base, dataset, rows, limit)

    @r.get("/datasets/{dataset}/versions/{version}", summary="One version's metadata (immutable, ETag)")
    async def get_version(request: Request, dataset: str, version: Annotated[int, Path(ge=1)]) -> Response:
        v = await existing_version(dataset, version)
        return immutable_json(request, v, "meta", lambda: api_documents.version_json(base, v))

    @r.get(
        "/datasets/{dataset}/versions/{version}/diff",
        summary="One version's row-level diff: features added, updated (before and after) and removed (with what was removed)",
    )
    async def get_diff(request: Request, dataset: str, version: Annotated[int, Path(ge=1)]) -> Response:
        v = await existing_version(dataset, version)
        headers, fresh = cache_headers(request, v, "diff")
        if fresh:
            return Response(status_code=304, headers=headers)
        entries = await read_model.diff(dataset, version)
        return JSONResponse(api_documents.version_diff_json(base, v, entries), headers=headers)

    @r.get(
        "/datasets/{dataset}/versions/{version}/features.geojson",
        summary="The dataset as of a version, as a GeoJSON FeatureCollection (RFC 7946)",
        response_class=Response,
        responses={200: {"content": {GEOJSON: {}}, "description": "FeatureCollection"}},
    )
    async def version_geojson(request: Request, dataset: str, version: Annotated[int, Path(ge=1)]) -> Response:
        v = await existing_version(dataset, version)
        headers, fresh = cache_headers(request, v, "geojson")
        if fresh:
            return Response(status_code=304, headers=headers)
        members = {"dataset": dataset, "version": version, "numberMatched": v.summary.feature_count}
        head = json.dumps({"type": "FeatureCollection", **members}, ensure_ascii=False)[:-1] + ',"features":['

        async def rows() -> AsyncIterator[str]:
            first = True
            async for f in read_model.snapshot(dataset, version):
                yield ("" if first else ",") + feature_json(f)
                first = False

        return await export_file(v, "geojson", GEOJSON, headers, lambda: text_stream([head], rows(), ["]}"]))

    @r.get(
        "/datasets/{dataset}/versions/{version}/features.csv",
        summary="The dataset as of a version, as CSV in the dataset's schema column layout, geometry in a WKT column",
        description=CSV_DESCRIPTION,
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}, "description": "CSV, header row first"}},
    )
    async def version_csv(
        request: Request,
        dataset: str,
        version: Annotated[int, Path(ge=1)],
        geometry: Annotated[Literal["wkt"] | None, Query(description=CSV_GEOMETRY)] = None,
    ) -> Response:
        d = ports.definition(dataset)
        v = await existing_version(dataset, version)
        headers, fresh = cache_headers(request, v, "csv" if geometry is None else "csv-wkt")
        if fresh:
            return Response(status_code=304, headers=headers)
        layout = CsvLayout(d, with_wkt=geometry == "wkt")
        # only conforming records: the file stays valid against the national schema; the header says how
        # many were left out and where they are (docs/validation.md)
        headers[LEFT_OUT_HEADER] = left_out_note(
            v.summary.incomplete, f"{base}/datasets/{dataset}/versions/{version}/features.geojson"
        )

        async def rows() -> AsyncIterator[str]:
            async for f in read_model.snapshot(dataset, version):
                if layout.includes(f):
                    yield layout.row(f)

        what = "csv" if geometry is None else "csv-wkt"
        return await export_file(
            v, what, "text/csv; charset=utf-8", headers, lambda: text_stream([layout.header()], rows(), [])
        )

    @r.get(
        "/datasets/{dataset}/versions/{version}/features.csvt",
        summary="GDAL's column types for the version's CSV (save it next to the CSV, named like it with .csvt)",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "one CSV line: each column's GDAL type"}},
    )
    async def version_csvt(
        request: Request,
        dataset: str,
        version: Annotated[int, Path(ge=1)],
        geometry: Annotated[Literal["wkt"] | None, Query(description=CSV_GEOMETRY)] = None,
    ) -> Response:
        d = ports.definition(dataset)
        v = await existing_version(dataset, version)
        what = "csvt" if geometry is None else "csvt-wkt"
        headers, fresh = cache_headers(request, v, what)
        if fresh:
            return Response(status_code=304, headers=headers)
        layout = CsvLayout(d, with_wkt=geometry == "wkt")

        async def line() -> AsyncIterator[bytes]:
            widths = [0] * len(layout.columns)  # a running maximum: one feature in memory at a time
            async for f in read_model.snapshot(dataset, version):
                if layout.includes(f):
                    widths = [max(w, n) for w, n in zip(widths, layout.widest([layout.cells(f)]), strict=True)]
            yield layout.csvt(widths).encode("utf-8")

        return await export_file(v, what, "text/plain; charset=utf-8", headers, line)

    @r.get(
        "/datasets/{dataset}/versions/{version}/features.prj",
        summary="The CRS of the version's CSV, WGS84 (save it next to the CSV, named like it with .prj)",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def version_prj(request: Request, dataset: str, version: Annotated[int, Path(ge=1)]) -> Response:
        v = await existing_version(dataset, version)
        headers, fresh = cache_headers(request, v, "prj")
        if fresh:
            return Response(status_code=304, headers=headers)

        async def prj() -> AsyncIterator[bytes]:
            yield WGS84_PRJ.encode("utf-8")

        return await export_file(v, "prj", "text/plain; charset=utf-8", headers, prj)

    async def latest_or_404(dataset: str) -> int:
        ports.definition(dataset)
        state = (await read_model.datasets()).get(dataset)
        if state is None or state.last_version == 0:
            raise problem(404, f"{dataset} has no published version yet")
        return int(state.last_version)

    @r.get(
        "/datasets/{dataset}/features.geojson",
        summary="The latest version as GeoJSON (redirects to the immutable version URL)",
        response_class=RedirectResponse,
        status_code=307,
    )
    async def latest_geojson(dataset: str) -> RedirectResponse:
        n = await latest_or_404(dataset)
        return RedirectResponse(f"{base}/datasets/{dataset}/versions/{n}/features.geojson", status_code=307)

    @r.get(
        "/datasets/{dataset}/features.csv",
        summary="The latest version as CSV (redirects to the immutable version URL)",
        response_class=RedirectResponse,
        status_code=307,
    )
    async def latest_csv(
        dataset: str, geometry: Annotated[Literal["wkt"] | None, Query(description=CSV_GEOMETRY)] = None
    ) -> RedirectResponse:
        n = await latest_or_404(dataset)
        query = "?geometry=wkt" if geometry else ""
        return RedirectResponse(f"{base}/datasets/{dataset}/versions/{n}/features.csv{query}", status_code=307)

    return r
