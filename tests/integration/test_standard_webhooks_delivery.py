"""Standard Webhooks on the wire (issue #15.4): real deliveries from the PostgreSQL delivery outbox through
the real HTTP sender to a real receiver on 127.0.0.1, each verified with the official `standardwebhooks`
library; a secret rotation signs with both secrets for the overlap; a 410 Gone disables the subscription
(shown by the subscription queries) and keeps its deliveries for when it is enabled again; a subscription
registered before (legacy) also gets the old X-Odc-Signature header."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import text
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from werkzeug import Request, Response

from deploy.local.ports import free_port
from services.infrastructure.database import make_engine
from services.infrastructure.schema_migrations import upgrade_schema
from services.publish.adapters.http_webhook_sender import HttpxWebhookSender, SystemResolver
from services.publish.adapters.tables import PUBLISH_SCHEMA
from services.publish.adapters.webhook_store import PostgresDeliveryStore, PostgresSubscriptionQueries
from services.publish.domain.webhooks import RetryPolicy, standard_secret, verify_signature
from services.publish.service_layer.webhooks import deliver_due

pytestmark = pytest.mark.integration


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@pytest.fixture
async def engine(database: str) -> AsyncIterator[Any]:
    # a database of its own: in the session's, the running publisher delivers pending webhooks too, and took this
    # test's delivery before the test's own round did (fresh-clone CI, 2026-12-05: the receiver had nothing yet)
    e = make_engine(database, pool_size=3)
    await upgrade_schema(e, PUBLISH_SCHEMA)
    yield e
    await e.dispose()


class Receiver:
    """A real HTTP server answering the queued statuses (then 200), keeping each request's body and headers."""

    def __init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", port=free_port())
        self.statuses: list[int] = []
        self.got: list[tuple[bytes, dict[str, str], int]] = []
        self.server.expect_request("/hook", method="POST").respond_with_handler(self.handle)
        self.server.start()

    def handle(self, request: Request) -> Response:
        status = self.statuses.pop(0) if self.statuses else 200
        self.got.append((request.get_data(), dict(request.headers), status))
        return Response("", status=status)

    @property
    def url(self) -> str:
        return self.server.url_for("/hook")


async def add_subscription(engine: Any, url: str, secret: str, *, legacy: bool = False) -> str:
    sid = uuid.uuid4().hex[:16]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO webhook_subscription (id, url, datasets, secret, description, active, created_at, "
                "legacy_signature) VALUES (:id, :url, NULL, :secret, '', true, now(), :legacy)"
            ),
            {"id": sid, "url": url, "secret": secret, "legacy": legacy},
        )
    return sid


async def add_delivery(engine: Any, sid: str) -> str:
    """A version event (its CloudEvent body) and its pending delivery to ``sid``."""
    dataset, version = f"swh_{sid}", int(time.time() * 1000) % 1_000_000_000
    event_id = f"{dataset}:v{version}"
    body = json.dumps({"specversion": "1.0", "id": event_id, "data": {"version": version}}).encode()
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO version_event (dataset, version, event_id, body) VALUES (:d, :v, :e, :b)"),
            {"d": dataset, "v": version, "e": event_id, "b": body},
        )
        await conn.execute(
            text(
                "INSERT INTO webhook_delivery (subscription_id, dataset, version, event_id, state, attempts, "
                "next_attempt_at, created_at) VALUES (:s, :d, :v, :e, 'pending', 0, now(), now())"
            ),
            {"s": sid, "d": dataset, "v": version, "e": event_id},
        )
    return event_id


async def deliver(engine: Any) -> None:
    # a generous timeout: a delivery the client gave up on while the receiver answered would be retried as a
    # failure, and on a loaded machine the receiver thread can take seconds to answer
    sender = HttpxWebhookSender(60.0, SystemResolver(), allow_private=True)
    try:
        await deliver_due(
            store_factory=lambda: PostgresDeliveryStore(engine),
            sender=sender,
            resolver=SystemResolver(),
            clock=WallClock(),
            policy=RetryPolicy(5, 0.01, 0.05),
            jitter=lambda: 0.0,
            allow_private=True,
            monotonic=time.monotonic,
        )
    finally:
        await sender.close()


async def test_deliveries_verify_with_the_standardwebhooks_library_through_a_rotation(engine: Any) -> None:
    receiver, first = Receiver(), standard_secret(os.urandom(32))
    try:
        sid = await add_subscription(engine, receiver.url, first)
        e1 = await add_delivery(engine, sid)
        await deliver(engine)
        body, headers, _ = receiver.got[-1]
        assert Webhook(first).verify(body, headers)["id"] == e1 == headers["Webhook-Id"]
        assert len(headers["Webhook-Signature"].split(" ")) == 1 and "X-Odc-Signature" not in headers
        with pytest.raises(WebhookVerificationError):
            Webhook(first).verify(body.replace(b'"version"', b'"versioN"'), headers)

        queries = PostgresSubscriptionQueries(engine)
        second = standard_secret(os.urandom(32))
        assert await queries.rotate_secret(sid, second, datetime.now(UTC) + timedelta(hours=1))
        view = await queries.subscription(sid)
        assert view is not None and view.as_json()["previous_secret_valid_until"] is not None
        e2 = await add_delivery(engine, sid)
        await deliver(engine)
        body, headers, _ = receiver.got[-1]
        assert len(headers["Webhook-Signature"].split(" ")) == 2  # the overlap: both secrets sign
        assert Webhook(second).verify(body, headers)["id"] == e2
        assert Webhook(first).verify(body, headers)["id"] == e2

        third = standard_secret(os.urandom(32))  # a rotation whose overlap is already over
        assert await queries.rotate_secret(sid, third, datetime.now(UTC) - timedelta(seconds=1))
        await add_delivery(engine, sid)
        await deliver(engine)
        body, headers, _ = receiver.got[-1]
        Webhook(third).verify(body, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(second).verify(body, headers)
    finally:
        receiver.server.stop()


async def test_a_410_gone_disables_the_subscription_until_it_is_enabled(engine: Any) -> None:
    receiver, secret = Receiver(), standard_secret(os.urandom(24))
    try:
        sid = await add_subscription(engine, receiver.url, secret)
        e1 = await add_delivery(engine, sid)
        receiver.statuses = [410]
        await deliver(engine)
        queries = PostgresSubscriptionQueries(engine)
        view = await queries.subscription(sid)
        assert view is not None
        shown = view.as_json()
        assert shown["active"] is False and "410" in shown["disabled"]["reason"] and shown["disabled"]["at"]
        assert shown["deliveries"] == {"pending": 1, "delivered": 0, "dead": 0}  # kept, not lost
        await add_delivery(engine, sid)
        await deliver(engine)
        await deliver(engine)
        assert len(receiver.got) == 1  # a disabled subscription gets nothing

        assert await queries.enable(sid, datetime.now(UTC))
        for _ in range(2):
            await deliver(engine)
        assert next(Webhook(secret).verify(b, h)["id"] for b, h, s in receiver.got if s == 200) == e1
        view = await queries.subscription(sid)
        assert view is not None and view.as_json()["disabled"] is None and view.delivered == 2
    finally:
        receiver.server.stop()


async def test_a_legacy_subscription_gets_both_the_old_and_the_standard_headers(engine: Any) -> None:
    receiver, raw = Receiver(), "registered-before-" + uuid.uuid4().hex
    try:
        sid = await add_subscription(engine, receiver.url, raw, legacy=True)
        await add_delivery(engine, sid)
        await deliver(engine)
        body, headers, _ = receiver.got[-1]
        assert verify_signature(raw, headers["X-Odc-Signature"], body, int(time.time()))
        Webhook(raw.encode()).verify(body, headers)
        view = await PostgresSubscriptionQueries(engine).subscription(sid)
        assert view is not None and view.as_json()["signatures"] == ["webhook-signature", "X-Odc-Signature"]
    finally:
        receiver.server.stop()
