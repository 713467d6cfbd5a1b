"""Same place, two records, through the handler with the in-memory unit of work (our own port's fake):
linking, provenance, last writer by event time, deletes per member, markets on two days, one batch."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import ChangeEvent, ChangeKind, GeometryEncoding, Operation, RawGeometry, SourcePosition
from services.normalise.domain.canonical_feature import EventNormaliser, FeatureKey
from services.normalise.domain.feature_links import PROVENANCE
from services.normalise.service_layer.process_batch import BatchReport, InboundMessage, process_batch
from tests.fakes.normalise_store import InMemoryNormaliseStore, InMemoryUnitOfWork

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


async def test_the_same_toilet_from_two_communes_is_one_feature_with_two_provenances() -> None:
    store = InMemoryNormaliseStore()
    await run(store, toilet(1, LYON, BORDER, adresse="from Lyon"))
    report = await run(store, toilet(7, VILLEURBANNE, EIGHT_M_NORTH, minutes=1, adresse="from Villeurbanne"))
    assert report.outcomes[("public_toilets", "linked")] == 1
    (key, attributes), *others = live(store).items()
    assert not others and key == FeatureKey("public_toilets", LYON, "1")  # the first record's key stays
    provenance = attributes[PROVENANCE]
    assert [(p["commune"], p["feature_id"]) for p in provenance] == [(LYON, "1"), (VILLEURBANNE, "7")]  # type: ignore[index,union-attr]
    assert 7.5 < provenance[1]["distance_m"] < 8.5  # type: ignore[index]
    assert attributes["adresse"] == "from Villeurbanne"  # last writer by event time
    # the link is an update of the existing feature, not a second feature
    kinds = [d.change_kind for _, d in store.changes]
    assert kinds == [ChangeKind.CREATED, ChangeKind.UPDATED]
    assert {d.candidate.key for _, d in store.changes} == {key}
    assert len(store.members) == 2


async def test_updates_from_either_member_last_writer_by_event_time_and_per_member_staleness() -> None:
    store = InMemoryNormaliseStore()
    await run(store, toilet(1, LYON, BORDER, seq=50), toilet(7, VILLEURBANNE, EIGHT_M_NORTH, seq=1, minutes=1))
    key = FeatureKey("public_toilets", LYON, "1")
    assert len(live(store)) == 1
    # Villeurbanne's sequence 2 is far below Lyon's 50, yet it is newer for its own record: it applies
    await run(store, toilet(7, VILLEURBANNE, EIGHT_M_NORTH, seq=2, minutes=5, adresse="v2 from Villeurbanne"))
    assert live(store)[key]["adresse"] == "v2 from Villeurbanne"
    # an event older than Lyon's own last one is stale for Lyon's record
    report = await run(store, toilet(1, LYON, BORDER, seq=49, minutes=9, adresse="stale"))
    assert report.outcomes[("public_toilets", "stale")] == 1
    # Lyon's next event, but older in event time than Villeurbanne's last: the feature keeps Villeurbanne's content
    await run(store, toilet(1, LYON, BORDER, seq=51, minutes=3, adresse="Lyon, older"))
    assert live(store)[key]["adresse"] == "v2 from Villeurbanne"
    await run(store, toilet(1, LYON, BORDER, seq=52, minutes=8, adresse="Lyon, newest"))
    assert live(store)[key]["adresse"] == "Lyon, newest"
    sequences = [d.after.sequence for _, d in store.changes if d.after is not None]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)  # one ordered history


async def test_a_delete_from_one_member_keeps_the_feature_and_the_last_delete_removes_it() -> None:
    store = InMemoryNormaliseStore()
    lyon = toilet(1, LYON, BORDER, adresse="from Lyon")
    villeurbanne = toilet(7, VILLEURBANNE, EIGHT_M_NORTH, minutes=1, adresse="from Villeurbanne")
    await run(store, lyon, villeurbanne)
    key = FeatureKey("public_toilets", LYON, "1")
    await run(store, delete(villeurbanne, seq=2, minutes=2))
    attributes = live(store)[key]
    assert attributes["adresse"] == "from Lyon"  # back to the remaining member's content
    assert [p["commune"] for p in attributes[PROVENANCE]] == [LYON]  # type: ignore[union-attr]
    assert store.changes[-1][1].change_kind is ChangeKind.UPDATED
    await run(store, delete(lyon, seq=2, minutes=3))
    assert live(store) == {}
    assert store.changes[-1][1].change_kind is ChangeKind.DELETED
    assert store.changes[-1][1].candidate.key == key


async def test_a_market_on_two_days_at_one_spot_stays_two_and_one_commune_is_never_linked_to_itself() -> None:
    store = InMemoryNormaliseStore()
    irigny = (4.8227235, 45.6724498)
    await run(store, market(46, "69100", "Samedi", irigny))
    report = await run(store, market(47, "69123", "Mercredi", irigny))
    assert report.outcomes[("markets", "created")] == 1 and len(live(store)) == 2
    linked = await run(store, market(48, "69123", "Samedi", irigny))  # the Saturday one, sent by another sender
    assert linked.outcomes[("markets", "linked")] == 1 and len(live(store)) == 2
    same = await run(store, toilet(1, LYON, BORDER), toilet(2, LYON, BORDER))
    assert same.outcomes[("public_toilets", "created")] == 2


async def test_two_communes_records_of_one_place_in_one_batch_are_linked() -> None:
    store = InMemoryNormaliseStore()
    report = await run(store, toilet(1, LYON, BORDER), toilet(7, VILLEURBANNE, EIGHT_M_NORTH, minutes=1))
    assert (report.outcomes[("public_toilets", "created")], report.outcomes[("public_toilets", "linked")]) == (1, 1)
    assert list(live(store)) == [FeatureKey("public_toilets", LYON, "1")]
    # the tally stays with each sending commune
    assert store.tally[("public_toilets", VILLEURBANNE, "linked")] == 1


async def test_too_far_apart_stays_two() -> None:
    store = InMemoryNormaliseStore()
    await run(store, toilet(1, LYON, BORDER), toilet(7, VILLEURBANNE, (BORDER[0], BORDER[1] + 20 / 111_195)))
    assert len(live(store)) == 2 and store.members == {}


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
