"""The publish HTTP API (FastAPI): datasets, immutable versions (metadata, diff, GeoJSON, CSV) with strong
ETags, the change feed, feature history, server-sent events, webhook subscriptions, DCAT JSON-LD and
OGC API – Features over the current data; plus /metrics, /healthz and /readyz.

Routes are glue: a read-model query, a pure shaping function from ``domain``, a response."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from services.contract.api_tokens import Principal, authenticate, parse_token
from services.contract.datasets.catalogue import DatasetCatalogue, DatasetDefinition
from services.publish.adapters.read_model import PostgresReadModel, VersionRecord
from services.publish.adapters.webhook_store import PostgresSubscriptionQueries
from services.publish.domain import dcat, ogc_features
from services.publish.domain.change_feed import BadCursor, decode_cursor, page_outcome
from services.publish.domain.feature_documents import (
    LEFT_OUT_HEADER,
    BadFeatureId,
    CsvLayout,
    StoredFeature,
    conformance_json,
    feature_dict,
    feature_json,
    left_out_note,
    parse_public_feature_id,
    public_feature_id,
)
from services.publish.domain.notifications import diff_entry_json, version_links
from services.publish.domain.webhooks import DeliveryState
from services.publish.metrics import PublishMetrics
from services.publish.service_layer.ports import AddressResolver, Clock, DeliveryStoreFactory, TokenStore
from services.publish.service_layer.webhooks import InvalidSubscription, register_subscription

API_VERSION = "1.0.0"
IMMUTABLE = "public, max-age=31536000, immutable"
GEOJSON = "application/geo+json"
JSONLD = "application/ld+json"


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _problem(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


class AccessRefused(Exception):
    """401 (no valid token) or 403 (a valid token without the operator scope), answered as
    ``{"error": <code>, "detail": <message>}``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


OPERATOR_ONLY: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, malformed, unknown or revoked bearer token"},
    403: {"description": "The token is not an operator (admin) token"},
}


class SubscriptionRequest(BaseModel):
    url: str = Field(description="Where to POST each version's CloudEvent (http or https)")
    datasets: list[str] | None = Field(default=None, description="Dataset ids to receive; omit for every dataset")
    secret: str | None = Field(
        default=None, description="HMAC-SHA256 signing secret (16+ characters); omit to get a generated one"
    )
    description: str = Field(default="", description="Free text to recognise the subscription")


class VersionWatcher:
    """One poll of every dataset's latest version per interval, shared by all open SSE streams."""

    def __init__(self, read_model: PostgresReadModel, interval: float) -> None:
        self._read_model = read_model
        self._interval = interval
        self._latest: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._listeners = 0

    async def _run(self) -> None:
        while self._listeners > 0:
            try:
                latest = await self._read_model.latest_versions()
            except Exception:  # noqa: BLE001 - the database may be restarting; streams just wait
                latest = self._latest
            if latest != self._latest:
                self._latest = latest
                async with self._changed:
                    self._changed.notify_all()
            await asyncio.sleep(self._interval)
        self._task = None

    async def wait_beyond(self, dataset: str, version: int, timeout: float) -> None:
        """Return when ``dataset`` has a version after ``version``, or after ``timeout`` seconds."""
        self._listeners += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._latest.get(dataset, 0) > version), timeout)
        except TimeoutError:
            pass
        finally:
            self._listeners -= 1


class RouteMetrics:
    """Pure ASGI middleware counting requests by route template and status (streams included)."""

    def __init__(self, app: Any, metrics: PublishMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.api_requests.labels(template, str(status["code"])).inc()


def build_api(
    *,
    base_url: str,
    catalogue: DatasetCatalogue,
    read_model: PostgresReadModel,
    subscriptions: PostgresSubscriptionQueries,
    delivery_store_factory: DeliveryStoreFactory,
    resolver: AddressResolver,
    clock: Clock,
    metrics: PublishMetrics,
    registry: CollectorRegistry,
    health: dict[str, bool],
    tokens: TokenStore,
    live_checks: Mapping[str, Callable[[], Awaitable[bool]]] | None = None,
    allow_private_targets: bool = False,
    sse_poll_seconds: float = 0.5,
    sse_keepalive_seconds: float = 15.0,
) -> FastAPI:
    base = base_url.rstrip("/")
    ogc = f"{base}/ogc"
    watcher = VersionWatcher(read_model, sse_poll_seconds)
    app = FastAPI(
        title="odc publish API",
        version=API_VERSION,
        description=(
            "Versions with row-level history, change feeds, notifications (webhooks, server-sent events) and "
            "standard interfaces (GeoJSON, CSV, OGC API – Features, DCAT) for the Métropole de Lyon's "
            "OpenData des communes. Every version is immutable; feature ids (`<commune>:<feature_id>`) are "
            "stable across versions."
        ),
    )
    app.add_middleware(RouteMetrics, metrics=metrics)
    bearer = HTTPBearer(
        auto_error=False,
        description="An operator (admin) token from `odc token create --admin`; needed by every /subscriptions route",
    )

    @app.exception_handler(AccessRefused)
    async def access_refused(request: Request, exc: AccessRefused) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="odc"'} if exc.status == 401 else None
        return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status, headers=headers)

    async def operator(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:  # noqa: B008
        """Subscription management is for operators: an admin token, checked against its stored hash."""
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise AccessRefused(401, "unauthenticated", "an Authorization: Bearer <operator token> header is required")
        parsed = parse_token(credentials.credentials)
        principal = None if parsed is None else authenticate(credentials.credentials, await tokens.get(parsed[0]))
        if principal is None:
            raise AccessRefused(401, "unauthenticated", "unknown, malformed or revoked token")
        if not principal.may_operate:
            raise AccessRefused(
                403,
                "forbidden",
                f"token {principal.token_id} writes for commune {principal.commune}; managing webhook subscriptions "
                "needs an operator (admin) token",
            )
        return principal

    operator_only: dict[str, Any] = {"responses": OPERATOR_ONLY, "dependencies": [Depends(operator)]}

    # -- helpers --------------------------------------------------------------------------------------
    def definition(dataset: str) -> DatasetDefinition:
        d = catalogue.get(dataset)
        if d is None:
            raise _problem(404, f"unknown dataset {dataset[:100]!r}")
        return d

    async def existing_version(dataset: str, version: int) -> VersionRecord:
        definition(dataset)
        v = await read_model.version(dataset, version)
        if v is None:
            raise _problem(404, f"{dataset} has no version {version}")
        return v

    def etag(v: VersionRecord, what: str) -> str:
        return f'"{v.dataset}-v{v.summary.version}-{what}-{v.summary.content_hash[:16]}"'

    def not_modified(request: Request, tag: str) -> bool:
        header = request.headers.get("if-none-match", "")
        return tag in [t.strip() for t in header.split(",")] or header.strip() == "*"

    def version_json(v: VersionRecord) -> dict[str, Any]:
        s = v.summary
        return {
            "dataset": v.dataset,
            "version": s.version,
            "published_at": _iso(s.published_at),
            "added": s.added,
            "updated": s.updated,
            "removed": s.removed,
            "feature_count": s.feature_count,
            "conformance": conformance_json(s.feature_count, s.incomplete),
            "content_hash": s.content_hash,
            "first_change_id": v.first_change_id,
            "last_change_id": v.last_change_id,
            "links": {lk.rel: lk.href for lk in version_links(base, v.dataset, s.version)},
        }

    def immutable_json(request: Request, v: VersionRecord, what: str, doc: Callable[[], Any]) -> Response:
        tag = etag(v, what)
        headers = {"ETag": tag, "Cache-Control": IMMUTABLE}
        if not_modified(request, tag):
            return Response(status_code=304, headers=headers)
        return JSONResponse(doc(), headers=headers)

    async def text_stream(head: list[str], rows: AsyncIterator[str], tail: list[str]) -> AsyncIterator[bytes]:
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

    # -- operations -----------------------------------------------------------------------------------
    @app.get("/metrics", include_in_schema=False)
    async def metrics_page() -> Response:
        try:
            totals = await subscriptions.totals()
            metrics.webhook_pending.set(totals["pending"])
            metrics.webhook_dead.set(totals["dead"])
            metrics.webhook_oldest_pending.set(totals["oldest_pending_seconds"])
        except Exception:  # noqa: BLE001 - metrics must answer while the database is down
            pass
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": "publish"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        state = dict(health)
        for name, check in (live_checks or {}).items():  # the broker and the database, asked now
            state[name] = state.get(name, True) and await check()
        ok = all(state.values())
        return JSONResponse({"ready": ok, **state}, status_code=200 if ok else 503)

    @app.get("/", summary="Index of the API")
    async def index() -> dict[str, Any]:
        return {
            "title": "odc publish API",
            "links": {
                "datasets": f"{base}/datasets",
                "catalog": f"{base}/catalog",
                "ogcapi": ogc,
                "subscriptions": f"{base}/subscriptions",
                "openapi": f"{base}/openapi.json",
                "docs": f"{base}/docs",
            },
        }

    # -- datasets and versions ------------------------------------------------------------------------
    def dataset_json(d: DatasetDefinition, state: Any) -> dict[str, Any]:
        url = f"{base}/datasets/{d.id}"
        return {
            "id": d.id,
            "title": {"fr": d.title_fr, "en": d.title_en},
            "geometry_type": d.geometry.type,
            "national_schema": dcat.national_schema_json(d.national_schema),
            "latest_version": state.last_version if state else 0,
            "feature_count": state.feature_count if state else 0,
            "conformance": conformance_json(state.feature_count, state.incomplete) if state else None,
            "content_hash": state.content_hash if state else None,
            "updated_at": _iso(state.updated_at) if state else None,
            "links": {
                "self": url,
                "versions": f"{url}/versions",
                "changes": f"{url}/changes?since=0",
                "events": f"{url}/events",
                "geojson": f"{url}/features.geojson",
                "csv": f"{url}/features.csv",
                "dcat": f"{url}/dcat",
                "ogcapi": f"{ogc}/collections/{d.id}",
            },
        }

    @app.get("/datasets", summary="List the datasets with their latest version")
    async def list_datasets() -> dict[str, Any]:
        states = await read_model.datasets()
        return {"datasets": [dataset_json(d, states.get(d.id)) for d in catalogue]}

    @app.get("/datasets/{dataset}", summary="One dataset and its latest version")
    async def get_dataset(dataset: str) -> dict[str, Any]:
        d = definition(dataset)
        return dataset_json(d, (await read_model.datasets()).get(d.id))

    @app.get("/datasets/{dataset}/versions", summary="A dataset's versions, oldest first, paged")
    async def list_versions(
        dataset: str,
        after: Annotated[int, Query(ge=0, description="Only versions after this one")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        definition(dataset)
        rows = await read_model.versions(dataset, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        url = f"{base}/datasets/{dataset}"
        return {
            "dataset": dataset,
            "versions": [
                {
                    "version": v.version,
                    "published_at": _iso(v.published_at),
                    "added": v.added,
                    "updated": v.updated,
                    "removed": v.removed,
                    "feature_count": v.feature_count,
                    "conformance": conformance_json(v.feature_count, v.incomplete),
                    "content_hash": v.content_hash,
                    "href": f"{url}/versions/{v.version}",
                }
                for v in rows
            ],
            "next": f"{url}/versions?{urlencode({'after': rows[-1].version, 'limit': limit})}" if more else None,
        }

    @app.get("/datasets/{dataset}/versions/{version}", summary="One version's metadata (immutable, ETag)")
    async def get_version(request: Request, dataset: str, version: Annotated[int, Path(ge=1)]) -> Response:
        v = await existing_version(dataset, version)
        return immutable_json(request, v, "meta", lambda: version_json(v))

    @app.get(
        "/datasets/{dataset}/versions/{version}/diff",
        summary="One version's row-level diff: features added, updated (before and after) and removed (with what was removed)",
    )
    async def get_diff(request: Request, dataset: str, version: Annotated[int, Path(ge=1)]) -> Response:
        v = await existing_version(dataset, version)
        tag = etag(v, "diff")
        headers = {"ETag": tag, "Cache-Control": IMMUTABLE}
        if not_modified(request, tag):
            return Response(status_code=304, headers=headers)
        entries = await read_model.diff(dataset, version)
        return JSONResponse(
            {**version_json(v), "changes": [diff_entry_json(dataset, e) for e in entries]}, headers=headers
        )

    @app.get(
        "/datasets/{dataset}/versions/{version}/features.geojson",
        summary="The dataset as of a version, as a GeoJSON FeatureCollection (RFC 7946)",
        response_class=StreamingResponse,
        responses={200: {"content": {GEOJSON: {}}, "description": "FeatureCollection"}},
    )
    async def version_geojson(request: Request, dataset: str, version: Annotated[int, Path(ge=1)]) -> Response:
        v = await existing_version(dataset, version)
        tag = etag(v, "geojson")
        headers = {"ETag": tag, "Cache-Control": IMMUTABLE}
        if not_modified(request, tag):
            return Response(status_code=304, headers=headers)
        members = {"dataset": dataset, "version": version, "numberMatched": v.summary.feature_count}
        head = json.dumps({"type": "FeatureCollection", **members}, ensure_ascii=False)[:-1] + ',"features":['

        async def rows() -> AsyncIterator[str]:
            first = True
            async for f in read_model.snapshot(dataset, version):
                yield ("" if first else ",") + feature_json(f)
                first = False

        return StreamingResponse(text_stream([head], rows(), ["]}"]), media_type=GEOJSON, headers=headers)

    @app.get(
        "/datasets/{dataset}/versions/{version}/features.csv",
        summary="The dataset as of a version, as CSV in the dataset's schema column layout",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/csv": {}}, "description": "CSV, header row first"}},
    )
    async def version_csv(request: Request, dataset: str, version: Annotated[int, Path(ge=1)]) -> Response:
        d = definition(dataset)
        v = await existing_version(dataset, version)
        tag = etag(v, "csv")
        headers = {"ETag": tag, "Cache-Control": IMMUTABLE}
        if not_modified(request, tag):
            return Response(status_code=304, headers=headers)
        layout = CsvLayout(d)
        # only conforming records: the file stays valid against the national schema; the header says how
        # many were left out and where they are (docs/validation.md)
        headers[LEFT_OUT_HEADER] = left_out_note(
            v.summary.incomplete, f"{base}/datasets/{dataset}/versions/{version}/features.geojson"
        )

        async def rows() -> AsyncIterator[str]:
            async for f in read_model.snapshot(dataset, version):
                if layout.includes(f):
                    yield layout.row(f)

        return StreamingResponse(
            text_stream([layout.header()], rows(), []), media_type="text/csv; charset=utf-8", headers=headers
        )

    async def latest_or_404(dataset: str) -> int:
        definition(dataset)
        state = (await read_model.datasets()).get(dataset)
        if state is None or state.last_version == 0:
            raise _problem(404, f"{dataset} has no published version yet")
        return int(state.last_version)

    @app.get(
        "/datasets/{dataset}/features.geojson",
        summary="The latest version as GeoJSON (redirects to the immutable version URL)",
        response_class=RedirectResponse,
        status_code=307,
    )
    async def latest_geojson(dataset: str) -> RedirectResponse:
        n = await latest_or_404(dataset)
        return RedirectResponse(f"{base}/datasets/{dataset}/versions/{n}/features.geojson", status_code=307)

    @app.get(
        "/datasets/{dataset}/features.csv",
        summary="The latest version as CSV (redirects to the immutable version URL)",
        response_class=RedirectResponse,
        status_code=307,
    )
    async def latest_csv(dataset: str) -> RedirectResponse:
        n = await latest_or_404(dataset)
        return RedirectResponse(f"{base}/datasets/{dataset}/versions/{n}/features.csv", status_code=307)

    # -- change feed, history, events -----------------------------------------------------------------
    @app.get(
        "/datasets/{dataset}/changes",
        summary="Every feature change after version `since`, in version order, paged with a cursor",
        description=(
            "Follow `next` until it is null; each change appears exactly once across the pages. The last page "
            "gives `next_since`: ask with `since=<next_since>` next time to get only what changed after."
        ),
    )
    async def changes(
        response: Response,
        dataset: str,
        since: Annotated[int, Query(ge=0, description="Last version the client already has")] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
        cursor: Annotated[str | None, Query(description="The `next` page's cursor")] = None,
    ) -> dict[str, Any]:
        definition(dataset)
        start = None
        if cursor:
            try:
                start = decode_cursor(cursor)
            except BadCursor as bad:
                raise _problem(400, str(bad)) from bad
        rows = await read_model.changes(dataset, start, since, limit + 1)
        page = page_outcome([r.position for r in rows], limit, start.version if start else since)
        next_url = None
        if page.cursor is not None:
            next_url = f"{base}/datasets/{dataset}/changes?{urlencode({'since': since, 'limit': limit, 'cursor': page.cursor})}"
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return {
            "dataset": dataset,
            "since": since,
            "changes": [
                {
                    "version": r.position.version,
                    "published_at": _iso(r.published_at),
                    **diff_entry_json(dataset, r.entry),
                }
                for r in rows[:limit]
            ],
            "next": next_url,
            "next_since": page.next_since,
        }

    @app.get(
        "/datasets/{dataset}/features/{feature_id:path}/history",
        summary="Every published change of one feature (id `<commune>:<feature_id>`), oldest first",
    )
    async def feature_history(dataset: str, feature_id: Annotated[str, Path(max_length=300)]) -> dict[str, Any]:
        definition(dataset)
        try:
            commune, fid = parse_public_feature_id(feature_id)
        except BadFeatureId as bad:
            raise _problem(400, str(bad)) from bad
        rows = await read_model.feature_history(dataset, commune, fid)
        if not rows:
            raise _problem(404, f"{dataset} has never published feature {feature_id[:100]!r}")
        return {
            "dataset": dataset,
            "id": feature_id,
            "history": [
                {"version": r.version, "published_at": _iso(r.published_at), **diff_entry_json(dataset, r.entry)}
                for r in rows
            ],
            "pending_changes": await read_model.pending_change_count(dataset, commune, fid),
        }

    @app.get(
        "/datasets/{dataset}/events",
        summary="Server-sent events: one `version` event per published version (event id = version number)",
        description=(
            "Resume with the `Last-Event-ID` header (or `since`): every version after it is sent first, in order. "
            "Without either, the stream starts after the current version. Each event's data is the version's "
            "CloudEvent (JSON)."
        ),
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "event stream"}},
    )
    async def events(
        request: Request,
        dataset: str,
        since: Annotated[int | None, Query(ge=0)] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> EventSourceResponse:
        definition(dataset)
        if last_event_id is not None and last_event_id.strip():
            try:
                position = int(last_event_id)
            except ValueError as bad:
                raise _problem(400, "Last-Event-ID must be a version number") from bad
        elif since is not None:
            position = since
        else:
            state = (await read_model.datasets()).get(dataset)
            position = int(state.last_version) if state else 0

        async def stream() -> AsyncIterator[dict[str, str]]:
            nonlocal position
            metrics.sse_clients.inc()
            try:
                while True:
                    batch = await read_model.events_after(dataset, position)
                    for version, body in batch:
                        yield {"id": str(version), "event": "version", "data": body.decode("utf-8")}
                        position = version
                    if not batch:
                        await watcher.wait_beyond(dataset, position, sse_keepalive_seconds)
            finally:
                metrics.sse_clients.dec()

        return EventSourceResponse(stream(), ping=int(max(1, sse_keepalive_seconds)))

    # -- DCAT ----------------------------------------------------------------------------------------
    async def dcat_node(d: DatasetDefinition, latest: int) -> dict[str, Any]:
        versions = await read_model.versions(d.id, latest + 1, 50, newest_first=True) if latest else []
        return dcat.dataset_node(base, d, versions, latest, catalogue.territory.name)

    @app.get(
        "/datasets/{dataset}/dcat",
        summary="DCAT metadata of one dataset (JSON-LD), with its distributions and latest 50 versions",
        responses={200: {"content": {JSONLD: {}}}},
    )
    async def dataset_dcat(dataset: str) -> Response:
        d = definition(dataset)
        latest = (await read_model.latest_versions()).get(dataset, 0)
        doc = {"@context": dcat.CONTEXT, **(await dcat_node(d, latest))}
        return JSONResponse(doc, media_type=JSONLD)

    @app.get(
        "/catalog",
        summary="DCAT catalogue of every dataset (JSON-LD), for harvesting",
        responses={200: {"content": {JSONLD: {}}}},
    )
    async def catalog() -> Response:
        states = await read_model.datasets()
        nodes = [await dcat_node(d, states[d.id].last_version if d.id in states else 0) for d in catalogue]
        modified = max((s.updated_at for s in states.values()), default=None)
        return JSONResponse(dcat.catalogue_document(base, nodes, modified, catalogue.territory.name), media_type=JSONLD)

    # -- OGC API – Features --------------------------------------------------------------------------
    @app.get("/ogc", summary="OGC API – Features landing page", tags=["OGC API – Features"])
    async def ogc_landing() -> dict[str, Any]:
        return ogc_features.landing_page(ogc, f"{base}/openapi.json", catalogue.territory.name)

    @app.get("/ogc/conformance", summary="OGC API – Features conformance classes", tags=["OGC API – Features"])
    async def ogc_conformance() -> dict[str, Any]:
        return ogc_features.conformance()

    async def collection_doc(d: DatasetDefinition, latest: int) -> dict[str, Any]:
        return ogc_features.collection(ogc, d, await read_model.extent(d.id), latest)

    @app.get(
        "/ogc/collections", summary="OGC API – Features collections (one per dataset)", tags=["OGC API – Features"]
    )
    async def ogc_collections() -> dict[str, Any]:
        latest = await read_model.latest_versions()
        return ogc_features.collections(ogc, [await collection_doc(d, latest.get(d.id, 0)) for d in catalogue])

    @app.get("/ogc/collections/{collection_id}", summary="One collection", tags=["OGC API – Features"])
    async def ogc_collection(collection_id: str) -> dict[str, Any]:
        d = definition(collection_id)
        return await collection_doc(d, (await read_model.latest_versions()).get(d.id, 0))

    @app.get(
        "/ogc/collections/{collection_id}/items",
        summary="Features of the latest published version, filtered by bbox, paged by limit/offset",
        tags=["OGC API – Features"],
        responses={200: {"content": {GEOJSON: {}}}},
    )
    async def ogc_items(
        collection_id: str,
        bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (CRS84)")] = None,
        limit: Annotated[int | None, Query(description=f"1..{ogc_features.MAX_LIMIT}, default 10")] = None,
        offset: Annotated[int | None, Query(description="Index of the first feature (default 0)")] = None,
    ) -> Response:
        definition(collection_id)
        try:
            q = ogc_features.parse_items_query(bbox, limit, offset)
        except ogc_features.BadQuery as bad:
            raise _problem(400, str(bad)) from bad
        matched, page = await read_model.items(collection_id, q.bbox, q.limit, q.offset)
        members = ogc_features.items_members(
            ogc, collection_id, q, len(page), matched, _iso(clock.now().replace(microsecond=0))
        )
        body = (
            json.dumps({"type": "FeatureCollection", **members}, ensure_ascii=False)[:-1]
            + ',"features":['
            + ",".join(feature_json(f) for f in page)
            + "]}"
        )
        return Response(body.encode("utf-8"), media_type=GEOJSON)

    @app.get(
        "/ogc/collections/{collection_id}/items/{feature_id:path}",
        summary="One feature of the latest published version",
        tags=["OGC API – Features"],
        responses={200: {"content": {GEOJSON: {}}}},
    )
    async def ogc_item(collection_id: str, feature_id: Annotated[str, Path(max_length=300)]) -> Response:
        definition(collection_id)
        try:
            commune, fid = parse_public_feature_id(feature_id)
        except BadFeatureId as bad:
            raise _problem(404, str(bad)) from bad
        f: StoredFeature | None = await read_model.item(collection_id, commune, fid)
        if f is None:
            raise _problem(404, f"no feature {feature_id[:100]!r} in {collection_id}")
        doc = feature_dict(public_feature_id(f.commune, f.feature_id), f.geometry_geojson, f.attributes_json)
        doc["links"] = ogc_features.item_links(ogc, collection_id, doc["id"])
        return Response(json.dumps(doc, ensure_ascii=False).encode("utf-8"), media_type=GEOJSON)

    # -- webhook subscriptions -----------------------------------------------------------------------
    @app.post(
        "/subscriptions",
        status_code=201,
        summary="Register a webhook (the secret is shown only here; operator token)",
        **operator_only,
    )
    async def create_subscription(body: Annotated[SubscriptionRequest, Body()]) -> dict[str, Any]:
        try:
            sub = await register_subscription(
                body.url,
                body.datasets,
                body.secret,
                body.description,
                known_datasets=set(catalogue.ids()),
                store_factory=delivery_store_factory,
                resolver=resolver,
                allow_private=allow_private_targets,
                clock=clock,
                new_id=lambda: uuid.uuid4().hex[:16],
                new_secret=lambda: secrets.token_urlsafe(32),
            )
        except InvalidSubscription as bad:
            raise _problem(422, str(bad)) from bad
        return {
            "id": sub.id,
            "url": sub.url,
            "datasets": None if sub.datasets is None else list(sub.datasets),
            "secret": sub.secret,
            "created_at": _iso(sub.created_at),
            "links": {"self": f"{base}/subscriptions/{sub.id}"},
        }

    @app.get("/subscriptions", summary="Every subscription with its delivery state (operator token)", **operator_only)
    async def list_subscriptions() -> dict[str, Any]:
        return {"subscriptions": [s.as_json() for s in await subscriptions.subscriptions()]}

    @app.get(
        "/subscriptions/{subscription_id}",
        summary="One subscription's delivery state (operator token)",
        **operator_only,
    )
    async def get_subscription(subscription_id: str) -> dict[str, Any]:
        s = await subscriptions.subscription(subscription_id)
        if s is None:
            raise _problem(404, "no such subscription")
        return s.as_json()

    @app.get(
        "/subscriptions/{subscription_id}/deliveries",
        summary="A subscription's deliveries, newest first (operator token)",
        **operator_only,
    )
    async def list_deliveries(
        subscription_id: str,
        state: Annotated[DeliveryState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        if await subscriptions.subscription(subscription_id) is None:
            raise _problem(404, "no such subscription")
        return {"deliveries": await subscriptions.deliveries(subscription_id, state, limit)}

    @app.post(
        "/subscriptions/{subscription_id}/redeliver",
        summary="Queue a subscription's dead letters again (operator token)",
        **operator_only,
    )
    async def redeliver(subscription_id: str) -> dict[str, Any]:
        if await subscriptions.subscription(subscription_id) is None:
            raise _problem(404, "no such subscription")
        return {"requeued": await subscriptions.redeliver_dead(subscription_id, clock.now())}

    @app.delete(
        "/subscriptions/{subscription_id}",
        status_code=204,
        summary="Stop a subscription (operator token)",
        **operator_only,
    )
    async def delete_subscription(subscription_id: str) -> Response:
        if not await subscriptions.deactivate(subscription_id):
            raise _problem(404, "no such active subscription")
        return Response(status_code=204)

    return app
