"""The source-profile store's contract, for the in-memory fake and PostgreSQL: each save a new version,
latest and given versions read back, latest of each listed, per commune."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from deploy.local.postgres import PostgresCluster
from services.infrastructure.database import make_engine
from services.ingest.adapters.profile_store import PostgresProfileStore
from services.ingest.adapters.tables import create_ingest_schema
from tests.fakes.ingest_ports import InMemoryProfiles

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(postgis: PostgresCluster) -> AsyncIterator[Any]:
    e = make_engine(postgis.dsn, pool_size=4)
    await create_ingest_schema(e)
    yield e
    await e.dispose()


@pytest.fixture(params=["fake", "postgres"])
async def store(request: pytest.FixtureRequest, engine: Any) -> Any:
    return InMemoryProfiles() if request.param == "fake" else PostgresProfileStore(engine)


async def test_versions_latest_and_listing(store: Any) -> None:
    dataset = f"ds-{uuid.uuid4().hex[:8]}"  # this test's own rows, whatever else the database holds
    one = await store.save("69266", dataset, "sig", {"dataset": dataset, "note": "v1"}, "69266")
    two = await store.save("69266", dataset, "sig", {"dataset": dataset, "note": "v2"}, "admin")
    other = await store.save("69123", dataset, "sig", {"dataset": dataset, "note": "lyon"}, "69123")
    assert (one.version, two.version, other.version) == (1, 2, 1)
    latest = await store.get("69266", dataset, "sig")
    assert (latest.version, latest.profile["note"], latest.saved_by) == (2, "v2", "admin")
    assert (await store.get("69266", dataset, "sig", 1)).profile["note"] == "v1"
    assert await store.get("69266", dataset, "sig", 3) is None
    assert await store.get("69266", dataset, "other") is None
    assert [v.version for v in await store.versions("69266", dataset, "sig")] == [1, 2]
    listed = await store.list_latest(dataset=dataset)
    assert [(p.commune, p.version) for p in listed] == [("69123", 1), ("69266", 2)]
    assert [p.commune for p in await store.list_latest("69266", dataset)] == ["69266"]


async def test_concurrent_saves_get_distinct_versions(store: Any) -> None:
    dataset = f"ds-{uuid.uuid4().hex[:8]}"
    saved = await asyncio.gather(*(store.save("*", dataset, "s", {"n": i}, "t") for i in range(5)))
    assert sorted(s.version for s in saved) == [1, 2, 3, 4, 5]
