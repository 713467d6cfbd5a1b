"""The ingest service process: the communes' push API (FastAPI), their status, the snapshot connector
scheduler, and /metrics /healthz /readyz. ``build_app(settings)`` is the composition root."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import uvicorn
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.contract.api_tokens import Principal, authenticate, parse_token
from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.infrastructure.api_tokens import PostgresTokenStore
from services.infrastructure.database import is_transient, make_engine
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics
from services.infrastructure.logging_setup import configure_logging
from services.infrastructure.readiness import CachedCheck, broker_reachable, database_answers
from services.infrastructure.retry import retry_transient
from services.infrastructure.signing_keys import named_admin_key
from services.ingest.adapters.connector_store import PostgresConnectorStore
from services.ingest.adapters.event_outcomes import PostgresOutcomeReader
from services.ingest.adapters.idempotency_store import PostgresIdempotencyStore
from services.ingest.adapters.kafka_event_publisher import KafkaEventPublisher
from services.ingest.adapters.profile_store import PostgresProfileStore
from services.ingest.adapters.receipt_store import PostgresReceiptStore
from services.ingest.adapters.snapshot_fetcher import SnapshotFetcherAdapter
from services.ingest.adapters.status_read_model import PostgresStatusReadModel
from services.ingest.adapters.tables import create_ingest_schema
from services.ingest.domain.rate_limit import TokenBuckets
from services.ingest.domain.source_profiles import ProfileError, profile_from_dict
from services.ingest.entrypoints.api_models import ChangeBatch, CommuneStatus, ErrorDoc, PushAccepted
from services.ingest.entrypoints.profile_routes import ALL_COMMUNES, profile_router
from services.ingest.metrics import IngestMetrics
from services.ingest.service_layer.ports import (
    EventSink,
    IdempotencyStore,
    OutcomeReader,
    ProfileStore,
    PublishFailed,
    ReceiptStore,
    RecordsTooLarge,
    StatusReadModel,
    TokenStore,
)
from services.ingest.service_layer.push_changes import PushLimits, push_changes
from services.ingest.service_layer.read_receipt import read_receipt
from services.ingest.service_layer.run_connector import RunReport, run_connector
from services.ingest.settings import IngestSettings

log = logging.getLogger("odc.ingest")
INSEE_PATTERN = r"^(\d{5}|2[AB]\d{3})$"


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class ApiPorts:
    """What the push API talks to. Built from the settings at start-up, or given by a test (fakes)."""

    tokens: TokenStore
    idempotency: IdempotencyStore
    sink: EventSink
    status: StatusReadModel
    profiles: ProfileStore | None = None  # source profiles (None: the profile routes answer 503)
    receipts: ReceiptStore | None = None
    outcomes: OutcomeReader | None = None


@dataclass
class Runtime:
    """What the lifespan builds; None until started."""

    ports: ApiPorts | None = None
    engine: AsyncEngine | None = None
    ready: bool = False
    scheduler: asyncio.Task[None] | None = None
    topics: asyncio.Task[None] | None = None
    broker_ok: Callable[[], Awaitable[bool]] | None = None
    database_ok: Callable[[], Awaitable[bool]] | None = None


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status, headers=headers)


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorDoc, "description": "Malformed body (not JSON, not a batch of records)"},
    401: {"model": ErrorDoc, "description": "Missing, unknown or revoked token"},
    403: {"model": ErrorDoc, "description": "The token's commune may not write (or read) this commune"},
}


def build_app(
    settings: IngestSettings,
    registry: CollectorRegistry | None = None,
    *,
    catalogue: DatasetCatalogue | None = None,
    ports: ApiPorts | None = None,
) -> FastAPI:
    """The ingest service. With ``ports`` (tests) nothing external is started: no database, broker or
    connector scheduler."""
    registry = registry or CollectorRegistry()
    metrics = IngestMetrics(registry)
    catalogue = catalogue or DatasetCatalogue.load(territory=settings.territory)
    clock = SystemClock()
    buckets = TokenBuckets(settings.rate_limit_records_per_second, settings.rate_limit_burst_records)
    limits = PushLimits(max_records=settings.max_records_per_request, retry_after_seconds=settings.retry_after_seconds)
    rt = Runtime()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if ports is not None:
            rt.ports, rt.ready = ports, True
            yield
            return
        rt.engine = make_engine(settings.database_url.get_secret_value())
        await retry_transient(
            lambda: create_ingest_schema(rt.engine),  # type: ignore[arg-type]
            is_transient=is_transient,
            what="create ingest schema",
            max_attempts=30,
        )
        key = await named_admin_key(rt.engine, settings.service_signing_key_id, "ingest service (HTTP API, connectors)")
        rt.topics = asyncio.create_task(topics_ensured(), name="odc-ensure-topics")
        publisher = KafkaEventPublisher(
            settings.kafka_bootstrap,
            settings.topic_change_events,
            Codecs(),
            security=KafkaClientSecurity.from_settings(settings),
            signing_key=key,
            request_timeout_ms=15000,
            max_record_bytes=settings.max_record_bytes,
            max_request_bytes=settings.producer_max_request_bytes,
            deadline_seconds=settings.publish_timeout_seconds,
            bulk=settings.bulk_send,
        )
        try:
            await publisher.start()
        except KafkaError as exc:  # started anyway: requests get 503 until the broker answers
            log.warning("broker unreachable at start (%s); the push API answers 503 until it is back", exc)
        rt.ports = ApiPorts(
            tokens=PostgresTokenStore(rt.engine),
            idempotency=PostgresIdempotencyStore(rt.engine, settings.idempotency_ttl_hours),
            sink=publisher,
            status=PostgresStatusReadModel(rt.engine),
            profiles=PostgresProfileStore(rt.engine),
            receipts=PostgresReceiptStore(rt.engine),
            outcomes=PostgresOutcomeReader(rt.engine),
        )
        engine = rt.engine
        rt.broker_ok = CachedCheck(
            lambda: broker_reachable(settings.kafka_bootstrap, settings.readiness_timeout_seconds)
        )
        rt.database_ok = CachedCheck(lambda: database_answers(engine, settings.readiness_timeout_seconds))
        if settings.run_connectors:
            rt.scheduler = asyncio.create_task(scheduler_loop(), name="odc-connector-scheduler")
        rt.ready = True
        metrics.ready.labels("ingest").set(1)
        try:
            yield
        finally:
            rt.ready = False
            for task in (rt.topics, rt.scheduler):
                if task is not None and not task.done():
                    task.cancel()
            if rt.scheduler is not None:
                rt.scheduler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await rt.scheduler
            await publisher.stop()
            await rt.engine.dispose()

    async def topics_ensured() -> None:
        """The input topic exists (auto-create is off); retried until the broker answers."""
        spec = [TopicSpec(settings.topic_change_events, settings.input_partitions)]
        while True:
            try:
                await ensure_topics(
                    settings.kafka_bootstrap, spec, security=KafkaClientSecurity.from_settings(settings), timeout=30
                )
                return
            except RuntimeError as exc:
                log.warning("input topic not checked yet: %s", exc)
                await asyncio.sleep(1.0)  # an ACL refusal raises at once: do not spin

    async def run_one(name: str) -> RunReport:
        assert rt.engine is not None and rt.ports is not None
        report = await run_connector(
            name,
            store=PostgresConnectorStore(rt.engine),
            fetcher=SnapshotFetcherAdapter(
                timeout=settings.connector_fetch_timeout_seconds, max_bytes=settings.connector_max_snapshot_bytes
            ),
            sink=rt.ports.sink,
            catalogue=catalogue,
            clock=clock,
            new_id=lambda: str(uuid.uuid4()),
            profiles=rt.ports.profiles,
        )
        metrics.connector_runs.labels(report.status).inc()
        return report

    async def scheduler_loop() -> None:
        """Run every connector that is due; one failing connector does not stop the others."""
        assert rt.engine is not None
        store = PostgresConnectorStore(rt.engine)
        while True:
            try:
                for name in await store.due(clock.now()):
                    try:
                        report = await run_one(name)
                    except (PublishFailed, RecordsTooLarge) as failed:  # the state is unchanged, retried when due
                        await store.record_run(name, "failed", {"error": str(failed)})
                        metrics.connector_runs.labels("failed").inc()
                        continue
                    log.info("connector %s: %s %s", name, report.status, report.summary())
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("connector scheduler: database unavailable, will retry: %s", exc)
            await asyncio.sleep(settings.connector_poll_seconds)

    app = FastAPI(
        title="odc ingest — communes' push API",
        version="1.0.0",
        description=(
            "Communes push changes to their datasets (each token writes for one commune; the Métropole's admin "
            "token for any) and read what became of them. The full validation happens in the stream; refusals "
            "here are about the envelope and the record shape. See docs/ingest.md."
        ),
        lifespan=lifespan,
    )
    app.state.odc_runtime = rt
    app.state.odc_metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "message": e.get("msg", "")} for e in exc.errors()]
        return _error(400, "bad_request", "the request is not valid", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", str(exc.detail), headers=getattr(exc, "headers", None))

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        metrics.http_requests.labels(getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    def unavailable(what: str, detail: str) -> JSONResponse:
        retry = settings.retry_after_seconds
        return _error(
            503,
            f"{what}_unavailable",
            f"the {what} is unavailable ({detail}); nothing was published; retry in {retry} s",
            {"Retry-After": str(retry)},
            retry_after=retry,
        )

    async def answered_in_time(work: Callable[[], Awaitable[Any]]) -> Any:
        """Run a request's work within the answer deadline: a database that is down or does not answer, or a
        broker the publisher gave up on, is a 503 with Retry-After, never a hang or a bare 500."""
        try:
            async with asyncio.timeout(settings.answer_timeout_seconds):
                return await work()
        except TimeoutError:
            log.warning("request not answered within %.1f s: 503", settings.answer_timeout_seconds)
            return unavailable("service", f"no answer within {settings.answer_timeout_seconds:g} s")
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("database unavailable: 503 (%s)", type(exc).__name__)
            return unavailable("database", type(exc).__name__)

    async def principal_of(authorization: str | None) -> Principal | JSONResponse:
        unauthorised = {"WWW-Authenticate": 'Bearer realm="odc"'}
        if not authorization or not authorization.lower().startswith("bearer "):
            return _error(401, "unauthenticated", "an Authorization: Bearer <token> header is required", unauthorised)
        text = authorization[7:].strip()
        parsed = parse_token(text)
        if parsed is None:
            return _error(401, "unauthenticated", "unknown or revoked token", unauthorised)
        if rt.ports is None:
            retry = str(settings.retry_after_seconds)
            return _error(503, "not_ready", "the service is starting", {"Retry-After": retry})
        principal = authenticate(text, await rt.ports.tokens.get(parsed[0]))
        if principal is None:
            return _error(401, "unauthenticated", "unknown or revoked token", unauthorised)
        return principal

    async def read_body(request: Request) -> bytes | JSONResponse:
        declared = request.headers.get("content-length")
        too_large = _error(
            413,
            "payload_too_large",
            f"the body exceeds {settings.max_body_bytes} bytes",
            max_bytes=settings.max_body_bytes,
        )
        if declared is not None:
            if not declared.isdigit():
                return _error(400, "bad_request", "invalid Content-Length")
            if int(declared) > settings.max_body_bytes:
                return too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                return too_large
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post(
        "/v1/datasets/{dataset}/changes",
        status_code=202,
        response_model=PushAccepted,
        responses={
            **ERRORS,
            404: {"model": ErrorDoc, "description": "Unknown dataset"},
            409: {"model": ErrorDoc, "description": "A request with this Idempotency-Key is still being handled"},
            413: {"model": ErrorDoc, "description": "Body larger than the limit, or too many records"},
            422: {"model": ErrorDoc, "description": "Idempotency-Key reused with a different body"},
            429: {"model": ErrorDoc, "description": "Rate limited; see Retry-After"},
            503: {
                "model": ErrorDoc,
                "description": "Broker or database unavailable; nothing was published; see Retry-After",
            },
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ChangeBatch.model_json_schema()}},
            }
        },
        summary="Push a batch of upserts and deletes for one dataset",
    )
    async def push(
        request: Request,
        dataset: str = Path(description="Canonical dataset id, e.g. public_toilets", max_length=100),
        authorization: str | None = Header(default=None, description="Bearer <token> (odc token create)"),
        idempotency_key: str | None = Header(
            default=None, max_length=200, description="Same key + same body: the first answer is replayed"
        ),
        profile: str | None = Query(
            default=None,
            max_length=200,
            description="records in a commune's own layout: the source name of a saved profile (/v1/profiles)",
        ),
    ) -> Any:
        body = await read_body(request)
        if isinstance(body, JSONResponse):
            return body
        return await answered_in_time(lambda: push_one(body, dataset, authorization, idempotency_key, profile))

    async def push_one(
        body: bytes, dataset: str, authorization: str | None, idempotency_key: str | None, profile: str | None
    ) -> Any:
        principal = await principal_of(authorization)
        if isinstance(principal, JSONResponse):
            return principal
        assert rt.ports is not None
        layout = None
        if profile is not None:
            if rt.ports.profiles is None:
                return _error(
                    503,
                    "not_ready",
                    "source profiles are not available",
                    {"Retry-After": str(settings.retry_after_seconds)},
                )
            stored = await rt.ports.profiles.get(principal.commune or ALL_COMMUNES, dataset, profile)
            if stored is None:
                return _error(
                    404, "unknown_profile", f"no saved profile {principal.commune or ALL_COMMUNES}/{dataset}/{profile}"
                )
            try:
                layout = profile_from_dict(stored.profile)
            except ProfileError as bad:
                return _error(409, "invalid_profile", f"the saved profile cannot be used: {bad}")
        result = await push_changes(
            principal=principal,
            dataset=dataset,
            body=body,
            idempotency_key=idempotency_key,
            catalogue=catalogue,
            sink=rt.ports.sink,
            idempotency=rt.ports.idempotency,
            buckets=buckets,
            clock=clock,
            new_id=lambda: str(uuid.uuid4()),
            limits=limits,
            profile=layout,
            receipts=rt.ports.receipts,
        )
        if result.status == 202 and "Idempotent-Replayed" not in result.headers:
            metrics.published.labels(dataset, "http").inc(len(result.body["accepted"]))
            for r in result.body["refused"]:
                metrics.records_refused.labels(dataset, r["reason"]).inc()
        return JSONResponse(result.body, status_code=result.status, headers=result.headers or None)

    @app.get(
        "/v1/receipts/{receipt_id}",
        responses={**ERRORS, 404: {"model": ErrorDoc, "description": "No such receipt for this token"}},
        summary="The outcome of each record of one push request (conforming, incomplete, refused, pending)",
    )
    async def receipt(
        receipt_id: str = Path(max_length=100, description="receipt_id from the push answer"),
        authorization: str | None = Header(default=None, description="Bearer <token> of the sender, or admin"),
    ) -> Any:
        principal = await principal_of(authorization)
        if isinstance(principal, JSONResponse):
            return principal
        assert rt.ports is not None
        if rt.ports.receipts is None or rt.ports.outcomes is None:
            return _error(503, "receipts_unavailable", "receipts are not kept by this deployment")
        result = await read_receipt(receipt_id, principal, rt.ports.receipts, rt.ports.outcomes)
        return JSONResponse(result.body, status_code=result.status)

    @app.get(
        "/v1/communes/{insee}/status",
        response_model=CommuneStatus,
        responses=ERRORS,
        summary="What became of a commune's events, per dataset",
    )
    async def commune_status(
        insee: str = Path(pattern=INSEE_PATTERN, description="INSEE code of the commune"),
        authorization: str | None = Header(default=None, description="Bearer <token> of this commune, or admin"),
    ) -> Any:
        return await answered_in_time(lambda: status_of(insee, authorization))

    async def status_of(insee: str, authorization: str | None) -> Any:
        principal = await principal_of(authorization)
        if isinstance(principal, JSONResponse):
            return principal
        if not principal.may_write(insee):
            return _error(403, "forbidden_commune", f"this token is for commune {principal.commune}, not {insee}")
        assert rt.ports is not None
        doc = await rt.ports.status.commune_status(insee, catalogue.ids())
        return JSONResponse(doc)

    app.include_router(
        profile_router(
            catalogue=catalogue,
            principal_of=principal_of,
            store_of=lambda: rt.ports.profiles if rt.ports is not None else None,
        )
    )

    @app.get("/metrics", include_in_schema=False)
    async def metrics_page() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": "ingest"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        scheduler_ok = rt.scheduler is None or not rt.scheduler.done()
        broker = await rt.broker_ok() if rt.broker_ok is not None else rt.ready
        database = await rt.database_ok() if rt.database_ok is not None else rt.ready
        topics = rt.topics is None or (rt.topics.done() and not rt.topics.cancelled() and not rt.topics.exception())
        ok = rt.ready and scheduler_ok and broker and database and topics
        metrics.ready.labels("ingest").set(1 if ok else 0)
        body = {
            "ready": ok,
            "broker": broker,
            "database": database,
            "input_topic": topics,
            "connector_scheduler": scheduler_ok,
        }
        return JSONResponse(
            body,
            status_code=200 if ok else 503,
            headers=None if ok else {"Retry-After": str(settings.retry_after_seconds)},
        )

    return app


def main() -> None:
    disable_created_metrics()
    settings = IngestSettings()
    configure_logging(settings.log_level)
    app = build_app(settings)
    uvicorn.run(app, host=settings.web_host, port=settings.web_port, log_config=None, access_log=False)
