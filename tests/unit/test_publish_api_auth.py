"""The publish API's subscription routes need an operator (admin) token, checked against its stored hash;
the open-data read routes need none. The API is built with fakes of our own ports (no database)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from services.contract.datasets.catalogue import DatasetCatalogue
from services.publish.entrypoints.http_api import build_api
from services.publish.metrics import PublishMetrics
from services.publish.service_layer.ports import NewSubscription, PushAnswer
from tests.fakes.ingest_ports import InMemoryTokens

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


class FixedClock:
    def now(self) -> datetime:
        return NOW


class PublicResolver:
    async def resolve(self, host: str, port: int) -> list[str]:
        return ["93.184.216.34"]


class RecordingSubscriptions:
    """Fake of the subscription queries: records every call, so a refused request is seen to touch nothing."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def subscriptions(self) -> list[Any]:
        self.calls.append("subscriptions")
        return []

    async def subscription(self, subscription_id: str) -> None:
        self.calls.append("subscription")

    async def deliveries(self, *args: Any) -> list[Any]:
        self.calls.append("deliveries")
        return []

    async def redeliver_dead(self, *args: Any) -> int:
        self.calls.append("redeliver_dead")
        return 0

    async def deactivate(self, subscription_id: str) -> bool:
        self.calls.append("deactivate")
        return False

    async def rotate_secret(self, *args: Any) -> bool:
        self.calls.append("rotate_secret")
        return False

    async def enable(self, *args: Any) -> bool:
        self.calls.append("enable")
        return False

    async def totals(self) -> dict[str, float]:
        return {"pending": 0.0, "dead": 0.0, "oldest_pending_seconds": 0.0}


class RecordingDeliveryStore:
    def __init__(self, added: list[NewSubscription]) -> None:
        self.added = added

    async def __aenter__(self) -> RecordingDeliveryStore:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def add_subscription(self, s: NewSubscription) -> None:
        self.added.append(s)

    async def commit(self) -> None:
        return None


class RecordingPushApi:
    """The push API port: records what an OGC API edit would send."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def push(self, token: str, dataset: str, record: dict[str, Any], idempotency_key: str) -> PushAnswer:
        self.calls.append(("push", record))
        return PushAnswer(503, {"message": "fake"}, "5")

    async def receipt(self, token: str, receipt_path: str) -> PushAnswer:
        self.calls.append(("receipt", receipt_path))
        return PushAnswer(404, {})


class Api:
    def __init__(self) -> None:
        self.tokens = InMemoryTokens()
        self.push_api = RecordingPushApi()
        self.subscriptions = RecordingSubscriptions()
        self.added: list[NewSubscription] = []
        registry = CollectorRegistry()
        self.app = build_api(
            base_url="http://odc.test",
            catalogue=DatasetCatalogue.load(),
            read_model=None,  # type: ignore[arg-type]  # no read route below touches it
            subscriptions=self.subscriptions,  # type: ignore[arg-type]
            delivery_store_factory=lambda: RecordingDeliveryStore(self.added),  # type: ignore[arg-type,return-value]
            resolver=PublicResolver(),
            clock=FixedClock(),
            metrics=PublishMetrics(registry),
            registry=registry,
            health={"database": True},
            tokens=self.tokens,
            push_api=self.push_api,
        )

    def client(self) -> AbstractContextManager[TestClient]:
        return TestClient(self.app)


# Every route under /subscriptions, with a request that would do something if it were let through.
SUBSCRIPTION_CALLS = [
    ("POST", "/subscriptions", {"url": "https://hooks.example.org/odc", "datasets": ["public_toilets"]}),
    ("GET", "/subscriptions", None),
    ("GET", "/subscriptions/abc", None),
    ("GET", "/subscriptions/abc/deliveries", None),
    ("POST", "/subscriptions/abc/redeliver", None),
    ("DELETE", "/subscriptions/abc", None),
    ("POST", "/subscriptions/abc/rotate-secret", None),
    ("POST", "/subscriptions/abc/enable", None),
]


def test_the_calls_cover_every_subscription_route_and_every_write_route() -> None:
    # from the OpenAPI paths: routes included from a router (FastAPI's lazy _IncludedRouter) are not
    # APIRoute members of app.routes, but every route is in the OpenAPI document
    app = Api().app
    routes = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
    routes |= {(m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods}
    assert ("POST", "/subscriptions/{subscription_id}/rotate-secret") in routes  # an included router's route
    subscription_routes = {(m, p) for m, p in routes if p.startswith("/subscriptions")}
    called = {(m, p.replace("/abc", "/{subscription_id}")) for m, p, _ in SUBSCRIPTION_CALLS}
    assert called == subscription_routes
    edit_routes = {
        (m, p.replace("/69123.1", "/{feature_id}").replace("/public_toilets/", "/{collection_id}/"))
        for m, p, _ in EDIT_CALLS
    }
    writes = {
        (m, p.replace("{feature_id:path}", "{feature_id}")) for m, p in routes if m not in ("GET", "HEAD", "OPTIONS")
    }
    assert writes and writes <= subscription_routes | edit_routes, f"a write route not covered: {writes}"
    assert {(m, p) for m, p in writes if p.startswith("/ogc")} == edit_routes


# Every OGC API Part 4 write: a commune's push token, checked against its stored hash, before anything is sent.
EDIT_CALLS = [
    ("POST", "/ogc/collections/public_toilets/items", {"type": "Feature", "geometry": None, "properties": {}}),
    ("PUT", "/ogc/collections/public_toilets/items/69123.1", {"type": "Feature", "geometry": None, "properties": {}}),
    ("PATCH", "/ogc/collections/public_toilets/items/69123.1", {"properties": {"adresse": "x"}}),
    ("DELETE", "/ogc/collections/public_toilets/items/69123.1", None),
]


@pytest.mark.parametrize(("method", "path", "body"), EDIT_CALLS)
@pytest.mark.parametrize(
    "authorization",
    [None, "Basic b2RjOm9kYw==", "Bearer ", "Bearer not-a-token", "Bearer odc_0123456789ab_" + "A" * 43, "revoked"],
)
def test_an_ogc_edit_without_a_valid_token_is_401_and_sends_nothing(
    method: str, path: str, body: Any, authorization: str | None
) -> None:
    api = Api()
    if authorization == "revoked":
        token = api.tokens.issue("69123")
        api.tokens.revoke(token)
        authorization = f"Bearer {token}"
    headers = {} if authorization is None else {"Authorization": authorization}
    with api.client() as c:
        r = c.request(method, path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "Unauthorized" and r.headers["www-authenticate"].startswith("Bearer")
    assert api.push_api.calls == []


@pytest.mark.parametrize(("method", "path", "body"), EDIT_CALLS[1:])
def test_an_ogc_edit_of_another_communes_feature_is_403_and_sends_nothing(method: str, path: str, body: Any) -> None:
    api = Api()
    token = api.tokens.issue("69266")
    with api.client() as c:
        r = c.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and r.json()["code"] == "Forbidden", r.text
    assert api.push_api.calls == []


@pytest.mark.parametrize(("method", "path", "body"), SUBSCRIPTION_CALLS)
@pytest.mark.parametrize(
    "authorization",
    [None, "Basic b2RjOm9kYw==", "Bearer ", "Bearer not-a-token", "Bearer odc_0123456789ab_" + "A" * 43],
    ids=["missing", "basic", "empty", "malformed", "unknown"],
)
def test_no_valid_token_is_401_with_a_json_error_and_touches_nothing(
    method: str, path: str, body: Any, authorization: str | None
) -> None:
    api = Api()
    headers = {} if authorization is None else {"Authorization": authorization}
    with api.client() as c:
        r = c.request(method, path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthenticated" and r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert api.subscriptions.calls == [] and api.added == []


@pytest.mark.parametrize(("method", "path", "body"), SUBSCRIPTION_CALLS)
def test_a_revoked_admin_token_is_401(method: str, path: str, body: Any) -> None:
    api = Api()
    token = api.tokens.issue(None)
    api.tokens.revoke(token)
    with api.client() as c:
        r = c.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"
    assert api.subscriptions.calls == [] and api.added == []


@pytest.mark.parametrize(("method", "path", "body"), SUBSCRIPTION_CALLS)
def test_a_communes_token_is_403_it_cannot_manage_subscriptions(method: str, path: str, body: Any) -> None:
    api = Api()
    token = api.tokens.issue("69266")
    with api.client() as c:
        r = c.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "forbidden" and "operator" in r.json()["detail"]
    assert api.subscriptions.calls == [] and api.added == []


@pytest.mark.parametrize(("method", "path", "body"), SUBSCRIPTION_CALLS)
def test_an_admin_token_gets_through(method: str, path: str, body: Any) -> None:
    api = Api()
    token = api.tokens.issue(None)
    with api.client() as c:
        r = c.request(method, path, json=body, headers={"Authorization": f"bearer {token}"})
    assert r.status_code in (200, 201, 404), r.text  # 404: the fake knows no subscription "abc"
    assert api.subscriptions.calls or api.added


def test_an_admin_token_registers_a_webhook() -> None:
    api = Api()
    token = api.tokens.issue(None)
    with api.client() as c:
        r = c.post(
            "/subscriptions",
            json={"url": "https://hooks.example.org/odc", "datasets": ["public_toilets"]},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert r.status_code == 201
    (added,) = api.added
    assert added.url == "https://hooks.example.org/odc" and r.json()["secret"] == added.secret


@pytest.mark.parametrize("path", ["/", "/ogc", "/ogc/conformance", "/openapi.json", "/healthz"])
def test_read_routes_stay_open_without_a_token(path: str) -> None:
    with Api().client() as c:
        assert c.get(path).status_code == 200
