"""The publish HTTP API (FastAPI): the app factory. Each resource is one router module in this package,
built from the app's ports (``ApiPorts``) by its ``router(ports)`` factory and registered below in
``ROUTERS`` — the one place to add a resource:

- ``operations_routes``: /metrics, /healthz, /readyz and the index
- ``version_routes``: datasets, immutable versions (metadata, diff, GeoJSON, CSV) with strong ETags
- ``change_feed_routes``: the change feed and feature history
- ``event_routes``: server-sent events
- ``dcat_routes``: DCAT (JSON-LD, Turtle, RDF/XML), paged with Hydra
- ``ogc_routes``: OGC API – Features over the current data
- ``ogc_edit_routes``: OGC API – Features Part 4, a commune's edits (through the push API, never the database)
- ``subscription_routes``: webhook subscriptions, Standard Webhooks secret rotation (operator token)
- ``asyncapi_routes``: the AsyncAPI document and the Avro schemas

Routes are glue: a read-model query, a pure shaping function from ``domain``, a response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from services.contract.datasets.catalogue import DatasetCatalogue
from services.publish.adapters.export_files import LocalExportFiles
from services.publish.adapters.read_model import PostgresReadModel
from services.publish.adapters.webhook_store import PostgresSubscriptionQueries
from services.publish.domain import dcat
from services.publish.entrypoints import (
    asyncapi_routes,
    change_feed_routes,
    dcat_routes,
    event_routes,
    ogc_edit_routes,
    ogc_routes,
    operations_routes,
    subscription_routes,
    version_routes,
)
from services.publish.entrypoints.api_ports import ApiPorts
from services.publish.entrypoints.subscription_routes import AccessRefused
from services.publish.metrics import PublishMetrics
from services.publish.service_layer.ports import (
    AddressResolver,
    Clock,
    DeliveryStoreFactory,
    ExportFiles,
    PushApi,
    TokenStore,
)

API_VERSION = "1.0.0"


def asyncapi_router(ports: ApiPorts) -> APIRouter:
    """The AsyncAPI document and the Avro schemas it (and the CloudEvents ``dataschema``) points to."""
    return asyncapi_routes.router(ports.base, ports.async_topics, ports.kafka_bootstrap)


# Every resource of the API, one router factory each, in registration order.
ROUTERS: list[Callable[[ApiPorts], APIRouter]] = [
    operations_routes.router,
    version_routes.router,
    change_feed_routes.router,
    event_routes.router,
    dcat_routes.router,
    ogc_routes.router,
    ogc_edit_routes.router,
    subscription_routes.router,
    asyncapi_router,
]


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


class HeadAsGet:
    """HEAD on every GET route (FastAPI's APIRoutes answer HEAD with 405): the request is served as a GET
    and only its status and headers (Content-Length included where the GET has one) are sent. The GET is
    stopped once its headers are out, so a HEAD on a stream or an export reads no rows beyond the first
    chunk. The scope is changed in place, so the route-metrics middleware outside still sees the route."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        scope["method"] = "GET"
        headers_sent = asyncio.Event()

        async def send_headers_only(message: Any) -> None:
            if message["type"] == "http.response.start" and not headers_sent.is_set():
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                headers_sent.set()

        get = asyncio.ensure_future(self.app(scope, receive, send_headers_only))
        sent = asyncio.ensure_future(headers_sent.wait())
        try:
            await asyncio.wait({get, sent}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sent.cancel()
            if not get.done():
                get.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await get
        if get.done() and not get.cancelled() and not headers_sent.is_set():
            get.result()  # an error before any header: let it propagate as it would for a GET


async def access_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AccessRefused)
    headers = {"WWW-Authenticate": 'Bearer realm="odc"'} if exc.status == 401 else None
    return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status, headers=headers)


def create_app(ports: ApiPorts) -> FastAPI:
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
    app.add_middleware(HeadAsGet)
    app.add_middleware(RouteMetrics, metrics=ports.metrics)  # added last: outermost
    app.add_exception_handler(AccessRefused, access_refused)
    for make_router in ROUTERS:
        # The routes themselves, not a lazily included router: every APIRoute stays in ``app.routes``
        # (FastAPI >= 0.16x keeps included routers as opaque branches), for the OpenAPI document, the
        # route-template metrics label and the tests that walk the routes.
        app.router.routes.extend(make_router(ports).routes)
    return app


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
    dcat_contact: dcat.ContactPoint = dcat.DEFAULT_CONTACT,
    sse_poll_seconds: float = 0.5,
    sse_keepalive_seconds: float = 15.0,
    secret_rotation_overlap_seconds: float = 86400.0,
    async_topics: Mapping[str, str] | None = None,
    kafka_bootstrap: str = "127.0.0.1:19092",
    push_api: PushApi | None = None,
    ingest_public_url: str = "",
    edit_wait_seconds: float = 5.0,
    export_files: ExportFiles | None = None,
) -> FastAPI:
    return create_app(
        ApiPorts(
            base=base_url.rstrip("/"),
            catalogue=catalogue,
            read_model=read_model,
            subscriptions=subscriptions,
            delivery_store_factory=delivery_store_factory,
            resolver=resolver,
            clock=clock,
            metrics=metrics,
            registry=registry,
            health=health,
            tokens=tokens,
            live_checks=live_checks or {},
            allow_private_targets=allow_private_targets,
            sse_poll_seconds=sse_poll_seconds,
            sse_keepalive_seconds=sse_keepalive_seconds,
            dcat_contact=dcat_contact,
            secret_rotation_overlap_seconds=secret_rotation_overlap_seconds,
            async_topics=async_topics,
            kafka_bootstrap=kafka_bootstrap,
            push_api=push_api,
            ingest_public_url=ingest_public_url,
            edit_wait_seconds=edit_wait_seconds,
            export_files=export_files or LocalExportFiles(),
        )
    )
