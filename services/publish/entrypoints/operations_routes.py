"""Operations: /metrics (Prometheus), /healthz, /readyz (the broker and the database asked now) and the
index of the API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.publish.domain import api_documents
from services.publish.entrypoints.api_ports import ApiPorts


def router(ports: ApiPorts) -> APIRouter:
    r = APIRouter()
    metrics = ports.metrics

    @r.get("/metrics", include_in_schema=False)
    async def metrics_page() -> Response:
        try:
            totals = await ports.subscriptions.totals()
            metrics.webhook_pending.set(totals["pending"])
            metrics.webhook_dead.set(totals["dead"])
            metrics.webhook_oldest_pending.set(totals["oldest_pending_seconds"])
        except Exception:  # noqa: BLE001 - metrics must answer while the database is down
            pass
        return Response(generate_latest(ports.registry), media_type=CONTENT_TYPE_LATEST.split(";")[0])

    @r.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": "publish"}

    @r.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        state = dict(ports.health)
        for name, check in ports.live_checks.items():  # the broker and the database, asked now
            state[name] = state.get(name, True) and await check()
        ok = all(state.values())
        return JSONResponse({"ready": ok, **state}, status_code=200 if ok else 503)

    @r.get("/", summary="Index of the API")
    async def index() -> dict[str, Any]:
        return api_documents.index(ports.base)

    return r
