"""The nearby search of the same-place store, the same contract for the in-memory fake the unit tests use
(tests/fakes/normalise_store.py) and the PostGIS adapter: features of other communes near each probe, with
the values of the attributes the probe names (what lets the service layer rule a feature out by its name
before locking and loading it)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from shapely.geometry import Point, box
from sqlalchemy import text

from deploy.local.postgres import PostgresCluster
from services.infrastructure.database import make_engine
from services.normalise.adapters.postgis_store import PostgisUnitOfWork, create_schema
from services.normalise.domain.canonical_feature import CanonicalFeature, FeatureKey
from services.normalise.domain.dedup_decisions import StoredFeature
from tests.fakes.normalise_store import InMemoryNormaliseStore, InMemoryUnitOfWork

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 23, tzinfo=UTC)
LYON, VILLEURBANNE, BRON = "69123", "69266", "69029"
# a park of Villeurbanne 20 m east of the probe, one of Bron 20 m west, one of Lyon (the probe's commune)
# over it, a deleted one of Bron over it, and one of Villeurbanne 2 km away
PROBE = box(4.8800, 45.7600, 4.8810, 45.7607)
EAST_20_M = box(4.8813, 45.7600, 4.8820, 45.7607)
WEST_20_M = box(4.8790, 45.7600, 4.87974, 45.7607)
FAR = box(4.9060, 45.7600, 4.9070, 45.7607)


@pytest.fixture
async def engine(postgis: PostgresCluster) -> AsyncIterator[Any]:
    e = make_engine(postgis.dsn, pool_size=2)
    await create_schema(e)
    yield e
    await e.dispose()


def _features(dataset: str) -> dict[FeatureKey, StoredFeature]:
    def live(geom: Any, **attributes: Any) -> StoredFeature:
        return StoredFeature(1, NOW, False, CanonicalFeature.build(attributes, geom))

    return {
        FeatureKey(dataset, VILLEURBANNE, "east"): live(EAST_20_M, nom="Parc de la Feyssine", surface=3),
        FeatureKey(dataset, BRON, "west"): live(WEST_20_M, nom="Square Other"),
        FeatureKey(dataset, LYON, "same-commune"): live(PROBE, nom="Parc de la Feyssine"),
        FeatureKey(dataset, BRON, "deleted"): StoredFeature(2, NOW, True, None),
        FeatureKey(dataset, VILLEURBANNE, "far"): live(FAR, nom="Parc de la Feyssine"),
        FeatureKey(dataset, BRON, "unnamed"): live(EAST_20_M),
    }


async def _insert(engine: Any, features: dict[FeatureKey, StoredFeature]) -> None:
    async with engine.begin() as conn:
        for key, s in features.items():
            f = s.feature
            await conn.execute(
                text(
                    "INSERT INTO canonical_feature (dataset, commune, feature_id, geom, attributes, content_hash, "
                    "sequence, occurred_at, deleted, last_event_id, updated_at) VALUES (:d, :c, :f, "
                    "ST_SetSRID(ST_GeomFromText(:wkt), 4326), CAST(:a AS jsonb), :h, 1, :t, :del, 'e', :t)"
                ),
                {
                    "d": key.dataset, "c": key.commune, "f": key.feature_id,
                    "wkt": None if f is None or f.geometry is None else f.geometry.wkt,
                    "a": None if f is None else json.dumps(f.attributes), "h": None if f is None else f.content_hash,
                    "t": NOW, "del": s.deleted,
                },
            )  # fmt: skip


@pytest.fixture(params=["fake", "postgres"])
async def unit_of_work(request: pytest.FixtureRequest, engine: Any) -> tuple[Any, str]:
    dataset = f"parks-{uuid.uuid4().hex[:8]}"  # a dataset of its own: the table is shared by the session
    if request.param == "fake":
        store = InMemoryNormaliseStore()
        store.features.update(_features(dataset))
        return InMemoryUnitOfWork(store), dataset
    await _insert(engine, _features(dataset))
    return PostgisUnitOfWork(engine), dataset


async def test_nearby_features_of_other_communes_come_with_the_named_attribute_values(
    unit_of_work: tuple[Any, str],
) -> None:
    uow, dataset = unit_of_work
    probe_key = FeatureKey(dataset, LYON, "new")
    other = FeatureKey(dataset, VILLEURBANNE, "new-point")
    async with uow:
        found = await uow.same_place.find_nearby(
            [
                (probe_key, PROBE, 50.0, ("nom",)),
                (other, Point(4.8790, 45.7603), 5.0, ()),  # 0 m from Bron's west park: no names asked
            ]
        )
    by_probe: dict[int, dict[FeatureKey, dict[str, object]]] = {}
    for i, key, values in found:
        by_probe.setdefault(i, {})[key] = values
    assert by_probe[0] == {
        FeatureKey(dataset, VILLEURBANNE, "east"): {"nom": "Parc de la Feyssine"},
        FeatureKey(dataset, BRON, "west"): {"nom": "Square Other"},
        FeatureKey(dataset, BRON, "unnamed"): {},
    }
    # the probe's own commune, the deleted feature and the one 2 km away are never returned
    assert by_probe[1] == {FeatureKey(dataset, BRON, "west"): {}}
