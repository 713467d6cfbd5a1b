"""Standard Webhooks routes of a subscription (operator token): rotate its signing secret (both secrets sign
during the overlap), and enable again a subscription its receiver disabled with 410 Gone."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException

from services.publish.adapters.webhook_store import PostgresSubscriptionQueries
from services.publish.domain.webhooks import standard_secret
from services.publish.service_layer.ports import Clock


def router(
    subscriptions: PostgresSubscriptionQueries, clock: Clock, overlap_seconds: float, **router_options: Any
) -> APIRouter:
    """``router_options``: the APIRouter's own (the operator dependency and its responses)."""
    routes = APIRouter(**router_options)

    @routes.post(
        "/subscriptions/{subscription_id}/rotate-secret",
        summary="Issue a new whsec_ signing secret; the previous one also signs until the overlap ends",
    )
    async def rotate_secret(subscription_id: str) -> dict[str, Any]:
        new = standard_secret(secrets.token_bytes(32))
        until = clock.now() + timedelta(seconds=overlap_seconds)
        if not await subscriptions.rotate_secret(subscription_id, new, until):
            raise HTTPException(404, "no such subscription")
        return {
            "id": subscription_id,
            "secret": new,
            "previous_secret_valid_until": until.isoformat().replace("+00:00", "Z"),
        }

    @routes.post(
        "/subscriptions/{subscription_id}/enable",
        summary="Deliver again to a subscription its receiver disabled (410 Gone)",
    )
    async def enable(subscription_id: str) -> dict[str, Any]:
        if not await subscriptions.enable(subscription_id, clock.now()):
            raise HTTPException(404, "no subscription disabled by its receiver with this id")
        return {"id": subscription_id, "active": True}

    return routes
