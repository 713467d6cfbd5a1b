"""Operations: /metrics (Prometheus), /healthz, /readyz (the broker and the database asked now), served by the
worker runtime's routes (services/infrastructure/operations_http.py), and the index of the API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.infrastructure.operations_http import Operations, operations_router
from services.publish.domain import api_documents
from services.publish.entrypoints.api_ports import ApiPorts


def router(ports: ApiPorts) -> APIRouter:
    metrics = ports.metrics

    async def webhook_totals() -> None:
        totals = await ports.subscriptions.totals()
        metrics.webhook_pending.set(totals["pending"])
        metrics.webhook_dead.set(totals["dead"])
        metrics.webhook_oldest_pending.set(totals["oldest_pending_seconds"])

    r = operations_router(Operations("publish", ports.registry, ports.health, ports.live_checks, webhook_totals))

    @r.get("/", summary="Index of the API")
    async def index() -> dict[str, Any]:
        return api_documents.index(ports.base)

    return r
