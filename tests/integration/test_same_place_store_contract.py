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

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, box
from sqlalchemy import text

from deploy.local.postgres import PostgresCluster
from services.contract.datasets.field_names import fold
from services.contract.messages import ChangeEvent, Operation
from services.infrastructure.database import make_engine
from services.normalise.adapters.postgis_store import PostgisUnitOfWork, create_schema
from services.normalise.adapters.same_place_store import sql_fold
from services.normalise.domain.canonical_feature import Candidate, CanonicalFeature, FeatureKey
from services.normalise.domain.dedup_decisions import Decision, Outcome, StoredFeature
from services.normalise.domain.feature_links import Member
from services.normalise.domain.same_place import folded_text_values
from services.normalise.service_layer.ports import NearbyProbe
from tests.fakes.normalise_store import InMemoryNormaliseStore, InMemoryUnitOfWork
from tests.great_circle import destination

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


def _probe(key: FeatureKey, geometry: Any, metres: float, **attributes: object) -> NearbyProbe:
    compared = ("nom",)
    return NearbyProbe(key, geometry, metres, compared, folded_text_values(attributes, compared))


async def _found(uow: Any, probes: list[NearbyProbe]) -> dict[int, dict[FeatureKey, dict[str, object]]]:
    async with uow:
        found = await uow.same_place.find_nearby(probes)
    by_probe: dict[int, dict[FeatureKey, dict[str, object]]] = {i: {} for i in range(len(probes))}
    for i, key, values in found:
        by_probe[i][key] = values
    return by_probe


async def test_nearby_features_of_other_communes_come_with_the_compared_attribute_values(
    unit_of_work: tuple[Any, str],
) -> None:
    uow, dataset = unit_of_work
    by_probe = await _found(
        uow,
        [
            _probe(FeatureKey(dataset, LYON, "new"), PROBE, 50.0, nom="PARC DE LA FEYSSINE"),
            _probe(FeatureKey(dataset, VILLEURBANNE, "new-point"), Point(4.8790, 45.7603), 5.0),  # 0 m from "west"
        ],
    )
    east, west, unnamed = (
        FeatureKey(dataset, c, f) for c, f in ((VILLEURBANNE, "east"), (BRON, "west"), (BRON, "unnamed"))
    )
    # the same name in other case, and a feature without a name, must come back with their values; a feature
    # of another name may (the fake returns it) or may not (PostGIS rules it out); the probe's own commune,
    # the deleted feature and the one 2 km away never do
    assert by_probe[0][east] == {"nom": "Parc de la Feyssine"}
    assert by_probe[0][unnamed] == {}
    assert set(by_probe[0]) - {east, unnamed} <= {west}
    assert by_probe[0].get(west, {"nom": "Square Other"}) == {"nom": "Square Other"}
    # a probe without a name rules nothing out by name
    assert by_probe[1] == {west: {"nom": "Square Other"}}


async def test_groups_of_the_previous_model_load_whole_and_are_forgotten_whole(unit_of_work: tuple[Any, str]) -> None:
    """What dissolving needs: any member's key loads its whole group; forgetting a group removes every member row
    of it and nothing of another group."""
    uow, dataset = unit_of_work
    east, west = FeatureKey(dataset, VILLEURBANNE, "east"), FeatureKey(dataset, BRON, "west")
    own, other = FeatureKey(dataset, LYON, "same-commune"), FeatureKey(dataset, BRON, "far-member")
    feature = CanonicalFeature.build({"nom": "x"}, Point(4.88, 45.76))
    members = [
        Member(east, east, "test", 1, NOW, False, feature, 0.0, NOW),
        Member(west, east, "test", 2, NOW, False, feature, 12.5, NOW),
        Member(own, own, "test", 1, NOW, False, feature, 0.0, NOW),
        Member(other, own, "test", 1, NOW, True, None, 3.0, NOW),
    ]
    async with uow:
        await uow.same_place.save_members(members, NOW)
        await uow.commit()
    async with uow:
        loaded = await uow.same_place.load_groups([west])
        assert set(loaded) == {east, west} and loaded[west].canonical == east and loaded[west].distance_m == 12.5
        assert loaded[west].feature is not None and loaded[west].feature.attributes == {"nom": "x"}
        await uow.same_place.forget_groups([east])
        await uow.commit()
    async with uow:
        assert await uow.same_place.load_groups([east, west]) == {}
        remaining = await uow.same_place.load_groups([other])
        assert set(remaining) == {own, other} and remaining[other].removed and remaining[other].feature is None


async def _save(engine: Any, features: dict[FeatureKey, StoredFeature]) -> None:
    """Through the unit of work, as the normaliser writes: with each feature's folded compared values."""
    decisions = []
    for key, s in features.items():
        ev = ChangeEvent(str(uuid.uuid4()), key.dataset, key.commune, key.feature_id, Operation.UPSERT, NOW, 1, "test",
                         None, {})  # fmt: skip
        decisions.append(Decision(Candidate(ev, key, s.feature), Outcome.CREATED, None, s))
    uow = PostgisUnitOfWork(engine, {next(iter(features)).dataset: ("nom",)})
    async with uow:
        await uow.save(decisions, NOW)
        await uow.conn.commit()


@pytest.mark.parametrize("written_by", ["unit of work", "an older release"])
async def test_postgis_rules_out_other_names_in_the_nearby_search(engine: Any, written_by: str) -> None:
    """Features saved by the unit of work carry their folded names; rows from before that column are folded
    in SQL. Either way the same neighbours are ruled out."""
    dataset = f"parks-{uuid.uuid4().hex[:8]}"
    if written_by == "unit of work":
        await _save(engine, _features(dataset))
        async with engine.connect() as conn:
            folded = dict(
                (
                    await conn.execute(
                        text("SELECT feature_id, compared_folded FROM canonical_feature WHERE dataset = :d"),
                        {"d": dataset},
                    )
                ).all()
            )
        assert folded["east"] == {"nom": "parcdelafeyssine"} and folded["unnamed"] == {} and folded["deleted"] is None
    else:
        await _insert(engine, _features(dataset))
    by_probe = await _found(
        PostgisUnitOfWork(engine),
        [
            _probe(FeatureKey(dataset, LYON, "new"), PROBE, 50.0, nom="Parc de la  Feyssine!"),
            _probe(FeatureKey(dataset, LYON, "other"), PROBE, 50.0, nom="Jardin Émile"),
            _probe(FeatureKey(dataset, LYON, "empty"), PROBE, 50.0, nom=" - "),
        ],
    )
    east, west, unnamed = (
        FeatureKey(dataset, c, f) for c, f in ((VILLEURBANNE, "east"), (BRON, "west"), (BRON, "unnamed"))
    )
    assert set(by_probe[0]) == {east, unnamed}  # "Square Other" ruled out; case, spaces, punctuation folded
    assert set(by_probe[1]) == {unnamed}
    assert set(by_probe[2]) == {east, west, unnamed}  # a name that folds to nothing rules nothing out


_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
        st.sampled_from(list("ÉéÈèÊêËëÀàÂâÎîÏïÔôÙùÛûÜüÇçŒœÆæßİıſKÅﬁ①²ⅫＡｂ-' ")),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_TEXT, min_size=1, max_size=20))
def test_the_sql_fold_is_the_python_fold(postgis: PostgresCluster, values: list[str]) -> None:
    """The nearby search folds stored names in SQL and compares them with names folded in Python: the two
    folds must agree, or a true link would be missed."""
    with psycopg.connect(postgis.dsn) as conn:
        rows = conn.execute(
            f"SELECT {sql_fold('v')} FROM unnest(%s::text[]) v",  # type: ignore[arg-type]
            [[v.replace("\x00", "") for v in values]],
        ).fetchall()
    assert [r[0] for r in rows] == [fold(v.replace("\x00", "")) for v in values]


@pytest.mark.parametrize("lat", [0.0, 45.76, 70.0], ids=["equator", "lyon", "70N"])
async def test_every_feature_within_the_distance_is_found_at_any_latitude(
    unit_of_work: tuple[Any, str], engine: Any, lat: float
) -> None:
    """The search box is widened by the distance's degrees at the probe's latitude: a feature 99% of the
    distance away in any direction from a corner of the probe is a candidate (a box too tight would lose the
    north-east ones first); one at 300% in the same direction is not returned by either store."""
    uow, dataset = unit_of_work
    probe = box(4.88, lat, 4.881, lat + 0.0007)
    corners = {"ne": (4.881, lat + 0.0007, 45.0), "nw": (4.88, lat + 0.0007, 315.0), "se": (4.881, lat, 135.0)}
    near = {
        FeatureKey(dataset, BRON, f"{name}-{bearing}"): destination(x, y, bearing, 0.99 * 80.0)
        for name, (x, y, _) in corners.items()
        for bearing in (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0)
        if not probe.contains(Point(destination(x, y, bearing, 0.99 * 80.0)))
    }
    far = {
        FeatureKey(dataset, BRON, f"far-{name}"): destination(x, y, b, 3 * 80.0) for name, (x, y, b) in corners.items()
    }
    features = {
        k: StoredFeature(1, NOW, False, CanonicalFeature.build({"nom": "Parc"}, Point(*xy)))
        for k, xy in {**near, **far}.items()
    }
    if isinstance(uow, InMemoryUnitOfWork):
        uow.store.features.update(features)
    else:
        await _insert(engine, features)
    found = await _found(uow, [_probe(FeatureKey(dataset, LYON, "new"), probe, 80.0, nom="Parc")])
    assert set(near) <= set(found[0])
    assert not set(far) & set(found[0])
