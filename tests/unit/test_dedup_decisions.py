"""What an event does to the stored feature: stale, identical, tombstones, in-batch order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from shapely.geometry import Point

from services.contract.messages import ChangeEvent, Operation
from services.normalise.domain.canonical_feature import Candidate, CanonicalFeature, FeatureKey, content_hash
from services.normalise.domain.dedup_decisions import (
    Decision,
    Outcome,
    StoredFeature,
    decide,
    decide_batch,
    events_without_change_rows,
    final_states,
    split_duplicates,
)

T = datetime(2026, 1, 1, tzinfo=UTC)
KEY = FeatureKey("public_toilets", "69266", "7")


def feature(name: str) -> CanonicalFeature:
    attrs = {"adresse": name}
    geom = Point(4.8, 45.7)
    return CanonicalFeature(attrs, geom, content_hash(attrs, geom))


def upsert(seq: int, name: str = "a", dt: int = 0, eid: str | None = None) -> Candidate:
    ev = ChangeEvent(
        eid or f"e{seq}{name}{dt}",
        KEY.dataset,
        KEY.commune,
        KEY.feature_id,
        Operation.UPSERT,
        T + timedelta(seconds=dt),
        seq,
        "t",
    )
    return Candidate(ev, KEY, feature(name))


def delete(seq: int, dt: int = 0) -> Candidate:
    ev = ChangeEvent(
        f"d{seq}{dt}", KEY.dataset, KEY.commune, KEY.feature_id, Operation.DELETE, T + timedelta(seconds=dt), seq, "t"
    )
    return Candidate(ev, KEY, None)


def live(seq: int, name: str = "a", dt: int = 0) -> StoredFeature:
    return StoredFeature(seq, T + timedelta(seconds=dt), False, feature(name))


def tomb(seq: int, dt: int = 0) -> StoredFeature:
    return StoredFeature(seq, T + timedelta(seconds=dt), True, None)


@pytest.mark.parametrize(
    ("stored", "candidate", "outcome"),
    [
        (None, upsert(1), Outcome.CREATED),
        (live(1, "a"), upsert(2, "b"), Outcome.UPDATED),
        (live(1, "a"), upsert(2, "a"), Outcome.UNCHANGED),  # identical content: no change
        (live(5, "a"), upsert(4, "b"), Outcome.STALE),  # older sequence
        (live(5, "a", dt=10), upsert(5, "b", dt=9), Outcome.STALE),  # same sequence, older time
        (live(5, "a", dt=10), upsert(5, "b", dt=10), Outcome.STALE),  # same position: not newer
        (live(5, "a", dt=10), upsert(5, "b", dt=11), Outcome.UPDATED),  # same sequence, newer time
        (live(1), delete(2), Outcome.DELETED),
        (None, delete(2), Outcome.UNCHANGED),  # delete of an unknown feature: tombstone only
        (tomb(3), delete(4), Outcome.UNCHANGED),
        (tomb(3), upsert(2), Outcome.STALE),  # late older upsert cannot resurrect a deleted feature
        (tomb(3), upsert(4), Outcome.CREATED),  # a newer upsert re-creates it
    ],
)
def test_decide(stored: StoredFeature | None, candidate: Candidate, outcome: Outcome) -> None:
    assert decide(stored, candidate).outcome is outcome


def test_identical_upsert_still_advances_the_position() -> None:
    d = decide(live(1, "a"), upsert(7, "a"))
    assert d.after is not None and d.after.sequence == 7 and d.after.feature == feature("a")
    # so a later event older than 7 is stale
    assert decide(d.after, upsert(6, "b")).outcome is Outcome.STALE


def test_delete_of_unknown_feature_leaves_a_tombstone() -> None:
    d = decide(None, delete(9))
    assert d.after == tomb(9)
    assert decide(d.after, upsert(8)).outcome is Outcome.STALE


def test_batch_is_decided_in_order_and_writes_last_state_once() -> None:
    decisions = decide_batch({}, [upsert(1, "a"), upsert(2, "b"), upsert(1, "c"), delete(3), upsert(2, "z")])
    assert [d.outcome for d in decisions] == [
        Outcome.CREATED,
        Outcome.UPDATED,
        Outcome.STALE,
        Outcome.DELETED,
        Outcome.STALE,
    ]
    finals = final_states(decisions)
    assert list(finals) == [KEY] and finals[KEY][0] == tomb(3)
    # the update's "before" is the state the create left
    assert decisions[1].before is not None and decisions[1].before.feature == feature("a")


def test_an_event_processed_before_or_repeated_in_the_batch_is_a_duplicate() -> None:
    a, b, c = upsert(1, eid="a"), upsert(2, eid="b"), upsert(3, eid="c")
    to_decide, duplicates = split_duplicates([a, b, a, c, b], processed={"c"})
    assert [x.event.event_id for x in to_decide] == ["a", "b"]
    assert [x.event.event_id for x in duplicates] == ["a", "c", "b"]


def test_only_events_that_wrote_no_change_row_need_a_processed_event_row() -> None:
    created, stale, unchanged, gone = (
        upsert(2, "a", eid="new"),
        upsert(1, eid="old"),
        upsert(3, "a", eid="same"),
        delete(4),
    )
    decisions = decide_batch({KEY: live(1, "x")}, [created, stale, unchanged])
    assert [d.outcome for d in decisions] == [Outcome.UPDATED, Outcome.STALE, Outcome.UNCHANGED]
    nothing = decide(None, gone)  # a delete of a feature never stored: unchanged, a tombstone, no change row
    assert events_without_change_rows([created, stale, unchanged, gone], [*decisions, nothing]) == [
        "old",
        "same",
        gone.event.event_id,
    ]


def test_an_event_whose_id_another_key_s_change_carries_needs_no_processed_event_row() -> None:
    # the same-place path (feature_links.dissolve_group): the changes that dissolve a previous group are written
    # at the members' keys under the id of the event that reached it, which may itself be stale
    trigger = upsert(1, eid="reached-the-group")
    other = Candidate(
        ChangeEvent("reached-the-group", KEY.dataset, "69123", "member", Operation.UPSERT, T, 5, "t"),
        FeatureKey(KEY.dataset, "69123", "member"),
        feature("m"),
    )
    saved = [Decision(other, Outcome.CREATED, None, StoredFeature(5, T, False, feature("m")))]
    assert events_without_change_rows([trigger], saved) == []
    assert events_without_change_rows([trigger], [decide(live(9), trigger)]) == ["reached-the-group"]
