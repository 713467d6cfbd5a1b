"""Same place, two records, through the handler with the in-memory unit of work (our own port's fake): each
record stays its own feature, written only by its commune, and the newer one carries a link; the other
commune's feature is never changed (issue #13: the attack that rewrote a Lyon toilet); markets on two days;
one batch; the previous model's groups are dissolved back into one feature per record."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import ChangeEvent, ChangeKind, GeometryEncoding, Operation, RawGeometry, SourcePosition
from services.normalise.domain.canonical_feature import EventNormaliser, FeatureKey
from services.normalise.domain.dedup_decisions import StoredFeature
from services.normalise.domain.feature_links import SAME_PLACE_AS, Member
from services.normalise.service_layer.process_batch import BatchReport, InboundMessage, process_batch
from tests.fakes.normalise_store import InMemoryNormaliseStore, InMemoryUnitOfWork
from tests.great_circle import destination

CODECS = Codecs()
NORMALISER = EventNormaliser(DatasetCatalogue.load())
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
# a toilet on the Lyon / Villeurbanne border (cours Émile-Zola side), and the same one 8 m north
BORDER = (4.8717, 45.7675)
EIGHT_M_NORTH = (4.8717, 45.7675 + 8 / 111_195)
LYON, VILLEURBANNE = "69123", "69266"


class FixedClock:
    def now(self) -> datetime:
        return T0 + timedelta(hours=1)


def toilet(
    gid: int, commune: str, where: tuple[float, float], *, seq: int = 1, minutes: int = 0, adresse: str = "x"
) -> ChangeEvent:
    return ChangeEvent(
        str(uuid.uuid4()),
        "public_toilets",
        commune,
        str(gid),
        Operation.UPSERT,
        T0 + timedelta(minutes=minutes),
        seq,
        "test",
        RawGeometry(GeometryEncoding.GEOJSON, json.dumps({"type": "Point", "coordinates": where}).encode()),
        {"gid": gid, "codinsee": commune, "adresse": adresse},
    )


def delete(ev: ChangeEvent, *, seq: int, minutes: int) -> ChangeEvent:
    return ChangeEvent(
        str(uuid.uuid4()),
        ev.dataset,
        ev.commune,
        ev.feature_id,
        Operation.DELETE,
        T0 + timedelta(minutes=minutes),
        seq,
        "test",
    )


def market(ident: int, commune: str, day: str, where: tuple[float, float]) -> ChangeEvent:
    lon, lat = where
    return ChangeEvent(
        str(uuid.uuid4()),
        "markets",
        commune,
        str(ident),
        Operation.UPSERT,
        T0,
        1,
        "test",
        None,
        {"identifiant": ident, "insee": commune, "type": "mixte", "jourtenue": day, "lon": lon, "lat": lat},
    )


async def run(store: InMemoryNormaliseStore, *events: ChangeEvent) -> BatchReport:
    messages = [InboundMessage(CODECS.encode_change_event(e), SourcePosition("in", 0, n)) for n, e in enumerate(events)]
    return await process_batch(
        messages,
        codecs=CODECS,
        normaliser=NORMALISER,
        uow_factory=lambda: InMemoryUnitOfWork(store),
        clock=FixedClock(),
    )


def live(store: InMemoryNormaliseStore) -> dict[FeatureKey, dict[str, object]]:
    return {k: s.feature.attributes for k, s in store.features.items() if not s.deleted and s.feature is not None}


async def test_the_same_toilet_from_two_communes_stays_two_features_and_the_newer_one_carries_the_link() -> None:
    store = InMemoryNormaliseStore()
    await run(store, toilet(1, LYON, BORDER, adresse="from Lyon"))
    lyon_key = FeatureKey("public_toilets", LYON, "1")
    lyon_before = store.features[lyon_key]
    report = await run(store, toilet(7, VILLEURBANNE, EIGHT_M_NORTH, minutes=1, adresse="from Villeurbanne"))
    assert report.outcomes[("public_toilets", "linked")] == 1
    vil_key = FeatureKey("public_toilets", VILLEURBANNE, "7")
    features = live(store)
    assert set(features) == {lyon_key, vil_key}
    # Lyon's feature is untouched: same stored state object, no change written for it after its creation
    assert store.features[lyon_key] is lyon_before
    assert [d.candidate.key for _, d in store.changes] == [lyon_key, vil_key]
    assert [d.change_kind for _, d in store.changes] == [ChangeKind.CREATED, ChangeKind.CREATED]
    # Villeurbanne's feature has its own content, commune code and position, and a link to Lyon's
    vil = features[vil_key]
    assert vil["adresse"] == "from Villeurbanne" and vil["codinsee"] == VILLEURBANNE
    (link,) = vil[SAME_PLACE_AS]  # type: ignore[misc]
    assert (link["commune"], link["feature_id"]) == (LYON, "1") and 7.5 < link["distance_m"] < 8.5  # type: ignore[index]
    geom = store.features[vil_key].feature.geometry  # type: ignore[union-attr]
    assert (geom.x, geom.y) == EIGHT_M_NORTH  # type: ignore[union-attr]
    assert SAME_PLACE_AS not in features[lyon_key]


async def test_the_overwrite_attack_changes_nothing_of_the_other_communes_feature() -> None:
    """Issue #13: commune 69266, with only its own key, sent a record 6.8 m from a Lyon toilet with the address
    "DEFACED": the previous model published Lyon's feature as updated with 69266's address, code, id and position."""
    store = InMemoryNormaliseStore()
    await run(store, toilet(1, LYON, BORDER, adresse="1 cours Emile-Zola"))
    lyon_key = FeatureKey("public_toilets", LYON, "1")
    before = store.features[lyon_key]
    changes_before = len(store.changes)
    near = (BORDER[0], BORDER[1] + 6.8 / 111_195)
    await run(store, toilet(666, VILLEURBANNE, near, minutes=5, adresse="DEFACED"))
    # and again, as an update and as a delete of its own record: still nothing of Lyon's moves
    await run(store, toilet(666, VILLEURBANNE, near, seq=2, minutes=6, adresse="DEFACED again"))
    await run(store, delete(toilet(666, VILLEURBANNE, near), seq=3, minutes=7))
    assert store.features[lyon_key] is before
    assert all(d.candidate.key.commune == VILLEURBANNE for _, d in store.changes[changes_before:])
    assert live(store)[lyon_key]["adresse"] == "1 cours Emile-Zola"


async def test_a_linked_record_keeps_its_link_on_updates_and_a_sender_cannot_forge_one() -> None:
    store = InMemoryNormaliseStore()
    await run(store, toilet(1, LYON, BORDER), toilet(7, VILLEURBANNE, EIGHT_M_NORTH, minutes=1))
    vil_key = FeatureKey("public_toilets", VILLEURBANNE, "7")
    await run(store, toilet(7, VILLEURBANNE, EIGHT_M_NORTH, seq=2, minutes=2, adresse="v2"))
    assert live(store)[vil_key]["adresse"] == "v2"
    assert live(store)[vil_key][SAME_PLACE_AS][0]["feature_id"] == "1"  # type: ignore[index]
    # the same content again is unchanged (the carried link does not count as a change)
    report = await run(store, toilet(7, VILLEURBANNE, EIGHT_M_NORTH, seq=3, minutes=3, adresse="v2"))
    assert report.outcomes[("public_toilets", "unchanged")] == 1
    # a sender's own "odc:same_place_as" is not a schema field: dropped by validation, never stored as sent
    forged = toilet(9, LYON, (4.80, 45.75))
    forged = replace(forged, attributes={**forged.attributes, SAME_PLACE_AS: "69266/7"})
    await run(store, forged)
    assert SAME_PLACE_AS not in live(store)[FeatureKey("public_toilets", LYON, "9")]


async def test_a_market_on_two_days_at_one_spot_stays_unlinked_and_one_commune_is_never_linked_to_itself() -> None:
    store = InMemoryNormaliseStore()
    irigny = (4.8227235, 45.6724498)
    await run(store, market(46, "69100", "Samedi", irigny))
    report = await run(store, market(47, "69123", "Mercredi", irigny))
    assert report.outcomes[("markets", "created")] == 1 and len(live(store)) == 2
    assert SAME_PLACE_AS not in live(store)[FeatureKey("markets", "69123", "47")]
    linked = await run(store, market(48, "69123", "Samedi", irigny))  # the Saturday one, sent by another sender
    assert linked.outcomes[("markets", "linked")] == 1 and len(live(store)) == 3
    assert live(store)[FeatureKey("markets", "69123", "48")][SAME_PLACE_AS][0]["feature_id"] == "46"  # type: ignore[index]
    same = await run(store, toilet(1, LYON, BORDER), toilet(2, LYON, BORDER))
    assert same.outcomes[("public_toilets", "created")] == 2


async def test_two_communes_records_of_one_place_in_one_batch_are_linked() -> None:
    store = InMemoryNormaliseStore()
    report = await run(store, toilet(1, LYON, BORDER), toilet(7, VILLEURBANNE, EIGHT_M_NORTH, minutes=1))
    assert (report.outcomes[("public_toilets", "created")], report.outcomes[("public_toilets", "linked")]) == (1, 1)
    assert set(live(store)) == {
        FeatureKey("public_toilets", LYON, "1"),
        FeatureKey("public_toilets", VILLEURBANNE, "7"),
    }
    # the tally stays with each sending commune
    assert store.tally[("public_toilets", VILLEURBANNE, "linked")] == 1


async def test_too_far_apart_stays_unlinked() -> None:
    store = InMemoryNormaliseStore()
    await run(store, toilet(1, LYON, BORDER), toilet(7, VILLEURBANNE, (BORDER[0], BORDER[1] + 20 / 111_195)))
    assert len(live(store)) == 2 and all(SAME_PLACE_AS not in a for a in live(store).values())


async def test_a_group_left_by_the_previous_model_is_dissolved_into_one_feature_per_record() -> None:
    """A store written before issue #13: Lyon's key held Villeurbanne's content (last writer), both records in
    ``feature_provenance``. The next event of either record gives each its own feature back, as changes."""
    store = InMemoryNormaliseStore()
    await run(store, toilet(1, LYON, BORDER, seq=10, adresse="from Lyon"))
    lyon_key = FeatureKey("public_toilets", LYON, "1")
    vil_key = FeatureKey("public_toilets", VILLEURBANNE, "7")
    own = store.features[lyon_key]
    # what the previous model left: a second, newer record merged into Lyon's row
    await run(store, toilet(7, VILLEURBANNE, EIGHT_M_NORTH, seq=3, minutes=1, adresse="from Villeurbanne"))
    merged_feature = store.features.pop(vil_key).feature
    assert merged_feature is not None
    store.features[lyon_key] = StoredFeature(own.sequence + 1, T0 + timedelta(minutes=1), False, merged_feature)
    at = T0 + timedelta(minutes=1)
    store.members = {
        lyon_key: Member(lyon_key, lyon_key, "test", 10, T0, False, own.feature, 0.0, at),
        vil_key: Member(vil_key, lyon_key, "test", 3, at, False, merged_feature, 8.0, at),
    }
    changes_before = len(store.changes)
    # Lyon's next event (sequence 11: newer for its own record, not above the group counter 11)
    report = await run(store, toilet(1, LYON, BORDER, seq=11, minutes=4, adresse="Lyon v2"))
    assert report.outcomes[("public_toilets", "updated")] == 1
    features = live(store)
    assert features[lyon_key]["adresse"] == "Lyon v2" and features[lyon_key]["codinsee"] == LYON
    assert features[vil_key]["adresse"] == "from Villeurbanne"
    assert features[vil_key][SAME_PLACE_AS][0]["feature_id"] == "1"  # type: ignore[index]
    assert store.members == {}
    keys = [d.candidate.key for _, d in store.changes[changes_before:]]
    assert keys == [lyon_key, vil_key, lyon_key]  # back to its own content, Villeurbanne's re-created, then the event
    sequences = [d.after.sequence for _, d in store.changes if d.after is not None and d.candidate.key == lyon_key]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    # Villeurbanne's record then follows its own sequence
    await run(store, toilet(7, VILLEURBANNE, EIGHT_M_NORTH, seq=4, minutes=5, adresse="Villeurbanne v2"))
    assert live(store)[vil_key]["adresse"] == "Villeurbanne v2" and live(store)[lyon_key]["adresse"] == "Lyon v2"


def test_the_bounding_box_shortcut_never_refuses_a_pair_within_the_distance() -> None:
    """``_boxes_farther_than`` skips the nearest-points measure; it must only skip pairs that measure farther."""
    import random

    from shapely.geometry import box

    from services.normalise.domain.canonical_feature import CanonicalFeature
    from services.normalise.domain.feature_links import _boxes_farther_than, _placed
    from services.normalise.domain.same_place import distance_m

    rng = random.Random(7)
    skipped = 0
    for _ in range(3000):
        lat = rng.uniform(-70, 70)
        lon = rng.uniform(-170, 170)
        size = rng.uniform(1e-5, 3e-3)
        a = box(lon, lat, lon + size, lat + size * rng.uniform(0.2, 2))
        b = box(*(v + rng.uniform(-4e-3, 4e-3) for v in (lon, lat)), lon + 4e-3, lat + 3e-3)
        if b.is_empty or not b.is_valid:
            continue
        fa, fb = CanonicalFeature({}, a, "h"), CanonicalFeature({}, b, "h")
        limit = rng.choice([10.0, 30.0, 100.0, 300.0])
        here, there = _placed("x", fa, fb)
        if _boxes_farther_than(fa, fb, limit):
            skipped += 1
            assert distance_m(here, there) > limit
    assert skipped > 300  # the shortcut is exercised, not vacuous


async def test_groups_that_no_event_reaches_are_dissolved_at_start_in_several_transactions() -> None:
    from services.normalise.service_layer.link_same_places import dissolve_previous_groups

    store = InMemoryNormaliseStore()
    at = T0 + timedelta(minutes=1)
    expected: dict[FeatureKey, str] = {}
    for n in range(5):  # five groups of the previous model: Lyon's key holding Villeurbanne's newer content
        lon = BORDER[0] + n * 0.01
        await run(store, toilet(100 + n, LYON, (lon, BORDER[1]), adresse=f"Lyon {n}"))
        lyon_key = FeatureKey("public_toilets", LYON, str(100 + n))
        own = store.features[lyon_key]
        await run(store, toilet(200 + n, VILLEURBANNE, (lon, EIGHT_M_NORTH[1]), minutes=1, adresse=f"Villeurbanne {n}"))
        vil_key = FeatureKey("public_toilets", VILLEURBANNE, str(200 + n))
        merged = store.features.pop(vil_key).feature
        store.features[lyon_key] = StoredFeature(own.sequence + 1, at, False, merged)
        store.members[lyon_key] = Member(lyon_key, lyon_key, "test", 1, T0, False, own.feature, 0.0, at)
        store.members[vil_key] = Member(vil_key, lyon_key, "test", 1, at, False, merged, 8.0, at)
        expected |= {lyon_key: f"Lyon {n}", vil_key: f"Villeurbanne {n}"}
    changes_before = len(store.changes)
    assert await dissolve_previous_groups(lambda: InMemoryUnitOfWork(store), FixedClock(), per_transaction=2) == 5
    assert store.members == {}
    assert {k: a["adresse"] for k, a in live(store).items()} == expected
    assert all(SAME_PLACE_AS in a for k, a in live(store).items() if k.commune == VILLEURBANNE)
    written = [d for _, d in store.changes[changes_before:]]
    assert len(written) == 10 and {d.change_kind for d in written} == {ChangeKind.UPDATED, ChangeKind.CREATED}
    assert all(d.candidate.event.event_id.startswith("repair:same-place:public_toilets/69123/") for d in written)
    # nothing left: a second start does nothing
    assert await dissolve_previous_groups(lambda: InMemoryUnitOfWork(store), FixedClock()) == 0


@settings(max_examples=500, deadline=None)
@given(
    lon=st.floats(-170, 170),
    lat=st.floats(-85, 85),
    width=st.floats(0, 0.05),
    height=st.floats(0, 0.05),
    fx=st.floats(0, 1),
    fy=st.floats(0, 1),
    bearing=st.floats(0, 360),
    metres=st.floats(0.5, 5_000),
    part=st.floats(0, 1),
)
def test_search_margins_hold_every_point_within_the_distance(
    lon: float,
    lat: float,
    width: float,
    height: float,
    fx: float,
    fy: float,
    bearing: float,
    metres: float,
    part: float,
) -> None:
    """The same-place search's box: any point within the distance (same_place.distance_m) of any point of a
    geometry's bounding box lies in the box widened by ``search_margins_deg``."""
    from services.normalise.domain.feature_links import search_margins_deg
    from services.normalise.domain.same_place import PlacedRecord, distance_m

    top = min(lat + height, 85.0)
    bounds = (lon, lat, lon + width, top)
    dx, dy = search_margins_deg(bounds, metres)
    x0, y0 = lon + fx * width, lat + fy * (top - lat)
    x1, y1 = destination(x0, y0, bearing, part * metres)
    assert distance_m(PlacedRecord("", x0, y0, {}), PlacedRecord("", x1, y1, {})) <= metres * (1 + 1e-9) + 1e-6
    assert bounds[0] - dx <= x1 <= bounds[2] + dx
    assert bounds[1] - dy <= y1 <= bounds[3] + dy


def test_search_margins_are_the_distance_not_a_degree_taken_as_50_km() -> None:
    """At Lyon, 50 m is 0.00045 degrees of latitude and 0.00065 of longitude (the margin used before was 0.001
    both ways); a point due east at 50 m from the box's top edge needs nearly all of the longitude margin."""
    from services.normalise.domain.feature_links import search_margins_deg

    bounds = (4.88, 45.76, 4.881, 45.7607)
    dx, dy = search_margins_deg(bounds, 50.0)
    assert dy == pytest.approx(0.00044966, rel=1e-4)
    east_x, _ = destination(4.881, 45.7607, 90.0, 50.0)
    assert east_x - 4.881 <= dx <= (east_x - 4.881) * 1.001


def test_two_communes_records_of_one_place_in_one_batch_are_linked_at_any_latitude() -> None:
    """The batch's own grid (records not yet stored) finds a neighbour however few metres a degree of
    longitude holds: 8 m due east at 89.5° N is 0.0082 degrees, almost twice the grid's bucket (0.0045); the
    grid searched one bucket each way and lost it there. (The pure decision, not ``process_batch``: the
    toilets' schema refuses a position outside the Métropole. The store's search is held to the same in the
    same-place contract tests.)"""
    from shapely.geometry import Point

    from services.normalise.domain.canonical_feature import Candidate, CanonicalFeature
    from services.normalise.domain.feature_links import decide_linked_batch

    policies = {"public_toilets": NORMALISER.catalogue.get("public_toilets").same_place}  # type: ignore[union-attr]

    def candidate(ev: ChangeEvent, where: tuple[float, float]) -> Candidate:
        key = FeatureKey(ev.dataset, ev.commune, ev.feature_id)
        return Candidate(ev, key, CanonicalFeature.build({"adresse": ev.attributes["adresse"]}, Point(where), ()))

    for lat in (0.0, 45.7675, 70.0, 89.5):
        here, east = (BORDER[0], lat), destination(BORDER[0], lat, 90.0, 8.0)
        first = candidate(toilet(1, LYON, here, adresse="one"), here)
        second = candidate(toilet(7, VILLEURBANNE, east, minutes=1, adresse="two"), east)
        batch = decide_linked_batch({}, {}, [first, second], policies, T0)
        assert [d.outcome.value for d in batch.reported] == ["created", "linked"], lat
        (link,) = batch.reported[1].candidate.feature.attributes[SAME_PLACE_AS]  # type: ignore[union-attr,misc]
        assert link["feature_id"] == "1" and 7.5 < link["distance_m"] < 8.5, lat  # type: ignore[index]


@settings(max_examples=300, deadline=None)
@given(
    lon=st.floats(-170, 170),
    lat=st.floats(-89.9, 89.9),
    size=st.floats(0, 0.01),
    bearing=st.floats(0, 360),
    part=st.floats(0, 1),
    distance=st.sampled_from([5.0, 10.0, 50.0, 300.0]),
    crowd=st.integers(0, 30),
)
def test_the_batch_grid_returns_every_feature_within_the_distance(
    lon: float, lat: float, size: float, bearing: float, part: float, distance: float, crowd: int
) -> None:
    """``_Grid.near`` is a superset of the features within the distance, at any latitude and bucket count (with
    ``crowd`` other features held, so both of its ways of reading the buckets are taken)."""
    from shapely.geometry import Point, box

    from services.contract.datasets.catalogue import SamePlacePolicy
    from services.normalise.domain.canonical_feature import CanonicalFeature
    from services.normalise.domain.feature_links import _Grid

    policy = SamePlacePolicy(distance_m=distance)
    grid = _Grid()
    top = min(lat + size, 89.95)
    here = CanonicalFeature({}, box(lon, lat, lon + size, top) if size else Point(lon, lat), "h")
    x, y = destination(lon + size / 2, (lat + top) / 2, bearing, part * distance)
    there = FeatureKey("d", "c", "there")
    grid.add(there, CanonicalFeature({}, Point(x, y), "h"), policy)
    for n in range(crowd):
        grid.add(FeatureKey("d", "c", str(n)), CanonicalFeature({}, Point(lon + 1 + n, lat / 2), "h"), policy)
    if size == 0 or abs(y) <= top:  # the point lies within the distance of the geometry
        assert there in grid.near("d", here, policy)
