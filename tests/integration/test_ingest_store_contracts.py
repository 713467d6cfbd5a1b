"""The same contract for the ingest's in-memory fakes (tests/fakes/ingest_ports.py) and its PostgreSQL
adapters, so the fakes the unit tests rely on cannot drift from the real stores."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from deploy.local.postgres import PostgresCluster
from services.infrastructure.database import make_engine
from services.ingest.adapters.connector_store import PostgresConnectorStore
from services.ingest.adapters.idempotency_store import PostgresIdempotencyStore
from services.ingest.adapters.tables import create_ingest_schema
from services.ingest.domain.snapshot_diff import FeatureRef
from services.ingest.service_layer.ports import ConnectorConfig
from tests.fakes.ingest_ports import InMemoryConnectors, InMemoryIdempotency

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(postgis: PostgresCluster) -> AsyncIterator[Any]:
    e = make_engine(postgis.dsn, pool_size=3)
    await create_ingest_schema(e)
    yield e
    await e.dispose()


@pytest.fixture(params=["fake", "postgres"])
async def idempotency(request: pytest.FixtureRequest, engine: Any) -> Any:
    return InMemoryIdempotency() if request.param == "fake" else PostgresIdempotencyStore(engine)


@pytest.fixture(params=["fake", "postgres"])
async def connectors(request: pytest.FixtureRequest, engine: Any) -> tuple[Any, str]:
    name = f"contract-{uuid.uuid4().hex[:8]}"
    cfg = ConnectorConfig(name, "69266", "public_toilets", "/nowhere.geojson", None, 0, 0.5)
    if request.param == "fake":
        return InMemoryConnectors({name: cfg}), name
    store = PostgresConnectorStore(engine)
    await store.add(cfg)
    return store, name


async def test_idempotency_claim_complete_replay_release(idempotency: Any) -> None:
    scope, key = "69266", f"k-{uuid.uuid4()}"
    assert await idempotency.get(scope, key) is None
    assert await idempotency.claim(scope, key, "sha-1")
    assert not await idempotency.claim(scope, key, "sha-2")
    pending = await idempotency.get(scope, key)
    assert (pending.request_sha256, pending.status, pending.body) == ("sha-1", None, None)
    await idempotency.complete(scope, key, 202, {"accepted": [1]})
    done = await idempotency.get(scope, key)
    assert (done.status, done.body) == (202, {"accepted": [1]})
    await idempotency.release(scope, key)  # a completed answer is kept
    assert (await idempotency.get(scope, key)).status == 202
    other = f"k-{uuid.uuid4()}"
    assert await idempotency.claim(scope, other, "sha-3")
    await idempotency.release(scope, other)  # a failed request frees its key
    assert await idempotency.get(scope, other) is None
    assert await idempotency.claim("69123", key, "sha-9")  # keys are per scope


async def test_connector_state_is_what_was_applied(connectors: tuple[Any, str]) -> None:
    store, name = connectors
    assert (await store.get(name)).commune == "69266"
    assert await store.state(name) == {}
    a, b, c = FeatureRef("69266", "1"), FeatureRef("69266", "2"), FeatureRef("69123", "1")
    await store.apply(name, {a: "h1", b: "h2", c: "h3"}, [], {"added": 3})
    await store.apply(name, {a: "h1bis"}, [b], {"changed": 1, "removed": 1})
    assert await store.state(name) == {a: "h1bis", c: "h3"}
    await store.record_run(name, "held", {"hold_reason": "empty_snapshot"})
    assert await store.state(name) == {a: "h1bis", c: "h3"}


async def test_one_run_of_a_connector_at_a_time(connectors: tuple[Any, str]) -> None:
    store, name = connectors
    async with store.exclusive(name) as first:
        assert first
        async with store.exclusive(name) as second:
            assert not second
    async with store.exclusive(name) as again:
        assert again
