"""Webhook subscriptions (operator token on every route): register, list, inspect deliveries, redeliver
dead letters, stop."""

from __future__ import annotations

import secrets
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from services.contract.api_tokens import Principal, authenticate, parse_token
from services.publish.domain import api_documents
from services.publish.domain.webhooks import DeliveryState, standard_secret
from services.publish.entrypoints import webhook_secret_routes
from services.publish.entrypoints.api_ports import ApiPorts, problem
from services.publish.service_layer.webhooks import InvalidSubscription, register_subscription


class AccessRefused(Exception):
    """401 (no valid token) or 403 (a valid token without the operator scope), answered as
    ``{"error": <code>, "detail": <message>}`` (the app factory installs the handler)."""

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
        default=None, description="Signing secret whsec_<base64 of 24..64 bytes>; omit to get a generated one"
    )
    description: str = Field(default="", description="Free text to recognise the subscription")


def router(ports: ApiPorts) -> APIRouter:
    base, subscriptions, clock = ports.base, ports.subscriptions, ports.clock
    bearer = HTTPBearer(
        auto_error=False,
        description="An operator (admin) token from `odc token create --admin`; needed by every /subscriptions route",
    )

    async def operator(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:  # noqa: B008
        """Subscription management is for operators: an admin token, checked against its stored hash."""
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise AccessRefused(401, "unauthenticated", "an Authorization: Bearer <operator token> header is required")
        parsed = parse_token(credentials.credentials)
        principal = None if parsed is None else authenticate(credentials.credentials, await ports.tokens.get(parsed[0]))
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

    r = APIRouter(responses=OPERATOR_ONLY, dependencies=[Depends(operator)])
    # Standard Webhooks: rotate a secret, enable again a subscription its receiver disabled (operator token too)
    r.routes.extend(
        webhook_secret_routes.router(
            subscriptions,
            clock,
            ports.secret_rotation_overlap_seconds,
            responses=OPERATOR_ONLY,
            dependencies=[Depends(operator)],
        ).routes
    )

    @r.post(
        "/subscriptions", status_code=201, summary="Register a webhook (the secret is shown only here; operator token)"
    )
    async def create_subscription(body: Annotated[SubscriptionRequest, Body()]) -> dict[str, Any]:
        try:
            sub = await register_subscription(
                body.url,
                body.datasets,
                body.secret,
                body.description,
                known_datasets=set(ports.catalogue.ids()),
                store_factory=ports.delivery_store_factory,
                resolver=ports.resolver,
                allow_private=ports.allow_private_targets,
                clock=clock,
                new_id=lambda: uuid.uuid4().hex[:16],
                new_secret=lambda: standard_secret(secrets.token_bytes(32)),
            )
        except InvalidSubscription as bad:
            raise problem(422, str(bad)) from bad
        return api_documents.subscription_created(base, sub.id, sub.url, sub.datasets, sub.secret, sub.created_at)

    @r.get("/subscriptions", summary="Every subscription with its delivery state (operator token)")
    async def list_subscriptions() -> dict[str, Any]:
        return {"subscriptions": [s.as_json() for s in await subscriptions.subscriptions()]}

    @r.get("/subscriptions/{subscription_id}", summary="One subscription's delivery state (operator token)")
    async def get_subscription(subscription_id: str) -> dict[str, Any]:
        s = await subscriptions.subscription(subscription_id)
        if s is None:
            raise problem(404, "no such subscription")
        return s.as_json()

    @r.get(
        "/subscriptions/{subscription_id}/deliveries",
        summary="A subscription's deliveries, newest first (operator token)",
    )
    async def list_deliveries(
        subscription_id: str,
        state: Annotated[DeliveryState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        if await subscriptions.subscription(subscription_id) is None:
            raise problem(404, "no such subscription")
        return {"deliveries": await subscriptions.deliveries(subscription_id, state, limit)}

    @r.post(
        "/subscriptions/{subscription_id}/redeliver",
        summary="Queue a subscription's dead letters again (operator token)",
    )
    async def redeliver(subscription_id: str) -> dict[str, Any]:
        if await subscriptions.subscription(subscription_id) is None:
            raise problem(404, "no such subscription")
        return {"requeued": await subscriptions.redeliver_dead(subscription_id, clock.now())}

    @r.delete("/subscriptions/{subscription_id}", status_code=204, summary="Stop a subscription (operator token)")
    async def delete_subscription(subscription_id: str) -> Response:
        if not await subscriptions.deactivate(subscription_id):
            raise problem(404, "no such active subscription")
        return Response(status_code=204)

    return r
