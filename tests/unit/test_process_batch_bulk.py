"""The normaliser with bulk messages (change_event_batch, issue #16.3): a bulk message is expanded into its
events, each handled exactly as if it had come alone; nothing of it is lost."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.contract.event_signature import EventAuthenticator, SigningKey, sign
from services.contract.messages import ChangeEvent, Operation, SourcePosition
from services.normalise.domain.canonical_feature import FeatureKey
from services.normalise.service_layer.process_batch import BatchReport, InboundMessage, prepare_batch, process_batch
from tests.fakes.normalise_store import InMemoryNormaliseStore, InMemoryUnitOfWork
from tests.unit.test_process_batch import CODECS, NORMALISER, NOW, FixedClock, msgs, toilet

VILLEURBANNE = SigningKey("k-69266", b"v" * 32, "69266")
LYON = SigningKey("k-69123", b"l" * 32, "69123")
AUTH = EventAuthenticator({k.key_id: k for k in (VILLEURBANNE, LYON)})


def bulk(events: list[ChangeEvent], offset: int = 0, key: SigningKey | None = None, **form: str) -> InboundMessage:
    value = CODECS.encode_change_event_batch(
        form.get("dataset", "public_toilets"), form.get("commune", "69266"), events
    )
    return InboundMessage(value, SourcePosition("in", 0, offset), tuple(sign(value, key)) if key else ())


async def run(
    store: InMemoryNormaliseStore, messages: list[InboundMessage], auth: EventAuthenticator | None = None
) -> BatchReport:
    return await process_batch(
        messages,
        codecs=CODECS,
        normaliser=NORMALISER,
        uow_factory=lambda: InMemoryUnitOfWork(store),
        clock=FixedClock(),
        authenticator=auth,
    )


APPLIED = toilet(20)  # already applied before the bulk message: sent again, a duplicate
PRIOR = [toilet(10, seq=5, adresse="new"), toilet(11, seq=1), toilet(12, seq=1), APPLIED]
TOMBSTONE = toilet(11, seq=3, op=Operation.DELETE)


async def prior_state() -> InMemoryNormaliseStore:
    """Feature 10 at sequence 5, feature 11 deleted at sequence 3, feature 12 at sequence 1, APPLIED applied."""
    store = InMemoryNormaliseStore()
    await run(store, msgs(*PRIOR))
    await run(store, msgs(TOMBSTONE))
    return store


def mixed() -> tuple[list[ChangeEvent], list[ChangeEvent]]:
    """The events of a bulk message mixing every outcome, and those of them that name another commune or
    dataset than the message (refused alone, as invalid_envelope)."""
    twice = toilet(4)
    bad_attributes = toilet(5)
    bad_attributes = replace(
        bad_attributes, attributes={**bad_attributes.attributes, "payant": "peut-être", "codinsee": "69123"}
    )
    outside = [toilet(6, commune="69123"), toilet(7, dataset="drinking_fountains")]
    events = [
        toilet(1),  # created
        toilet(3, coords=(0.0, 0.0)),  # invalid_geometry
        twice,  # created
        bad_attributes,  # invalid_attributes
        APPLIED,  # duplicate of an event applied before
        outside[0],  # another commune than the message's
        twice,  # duplicate of an event earlier in the same message
        toilet(10, seq=4, adresse="old"),  # stale: older than what is stored
        toilet(11, seq=2, adresse="late"),  # stale: the feature was deleted later (tombstone)
        toilet(12, seq=2, adresse="Rue neuve"),  # updated
        outside[1],  # another dataset than the message's
        toilet(13, seq=1, op=Operation.DELETE),  # a delete of an unknown feature
        toilet(2),  # created
    ]
    return events, outside


async def test_a_bulk_message_mixing_every_outcome_is_the_same_events_sent_alone() -> None:
    """Every outcome of a bulk message is that of its events sent one message each (same validation, dedup,
    stale and tombstone decisions, same counts and metrics), plus a refusal of each event that names another
    commune or dataset than its message. Nothing is lost: every event is an outcome or a rejection."""
    events, outside = mixed()
    as_bulk, alone = await prior_state(), await prior_state()
    bulk_report = await run(as_bulk, [bulk(events, offset=40)])
    alone_report = await run(alone, msgs(*[e for e in events if e not in outside]))

    assert bulk_report.received == len(events) == alone_report.received + len(outside)
    assert bulk_report.outcomes == alone_report.outcomes
    assert bulk_report.outcomes == {
        ("public_toilets", "created"): 3,
        ("public_toilets", "updated"): 1,
        ("public_toilets", "stale"): 2,
        ("public_toilets", "duplicate"): 2,
        **{k: v for k, v in alone_report.outcomes.items() if k[1] not in {"created", "updated", "stale", "duplicate"}},
    }
    assert bulk_report.tally == alone_report.tally and bulk_report.levels == alone_report.levels
    assert bulk_report.changes_written == alone_report.changes_written
    assert as_bulk.features == alone.features and as_bulk.processed == alone.processed
    assert as_bulk.features[FeatureKey("public_toilets", "69266", "10")].feature.attributes["adresse"] == "new"  # type: ignore[union-attr]
    assert as_bulk.features[FeatureKey("public_toilets", "69266", "11")].deleted

    refused_alone = {rid: (r.reason, r.errors, r.event_id, r.original) for rid, r in alone.rejections.items()}
    refused_in_bulk = {rid: (r.reason, r.errors, r.event_id, r.original) for rid, r in as_bulk.rejections.items()}
    outside_ids = {f"{e.event_id}:invalid_envelope" for e in outside}
    assert {rid: v for rid, v in refused_in_bulk.items() if rid not in outside_ids} == refused_alone
    assert sorted(v[0] for v in refused_alone.values()) == ["invalid_attributes", "invalid_geometry"]
    expected = {("public_toilets", "invalid_attributes"): 1, ("public_toilets", "invalid_geometry"): 1}
    assert alone_report.rejections == expected
    # counted under each event's own dataset, as any rejection of an event
    outside_counts = {("public_toilets", "invalid_envelope"): 1, ("drinking_fountains", "invalid_envelope"): 1}
    assert bulk_report.rejections == {**expected, **outside_counts}

    # each outside event refused alone, naming the field that differs; its original is the event alone,
    # replayable; its source is the bulk message's position
    for ev, field in zip(outside, ("commune", "dataset"), strict=True):
        r = as_bulk.rejections[f"{ev.event_id}:invalid_envelope"]
        assert [(e.rule, e.field) for e in r.errors] == [("bulk_mismatch", field)]
        assert CODECS.decode_change_event(r.original) == ev and r.original == CODECS.encode_change_event(ev)
        assert r.source == SourcePosition("in", 0, 40)
    assert {r.source for r in as_bulk.rejections.values()} == {SourcePosition("in", 0, 40)}
    # nothing lost: every event of the message is counted once, as an outcome or a rejection
    assert sum(bulk_report.outcomes.values()) + sum(bulk_report.rejections.values()) == len(events)


async def test_a_rejection_from_a_bulk_message_replays_on_its_own() -> None:
    """The original of a refused inner event is that event in the single form: once its sender fixes what
    was wrong, or simply sent again as it is, it is read as one event."""
    store = InMemoryNormaliseStore()
    bad = toilet(3, coords=(0.0, 0.0))
    await run(store, [bulk([toilet(1), bad], offset=7)])
    (rejection,) = store.rejections.values()
    assert rejection.rejection_id == f"{bad.event_id}:invalid_geometry"
    assert CODECS.catalogue.writer_name(rejection.original) == "change_event"
    fixed = replace(CODECS.decode_change_event(rejection.original), geometry=toilet(3).geometry)
    report = await run(store, msgs(fixed))
    assert report.outcomes[("public_toilets", "created")] == 1


@pytest.mark.parametrize(
    "value",
    [
        CODECS.encode_change_event_batch("public_toilets", "69266", [toilet(1), toilet(2)])[:-5],  # cut short
        CODECS.encode_change_event_batch("public_toilets", "69266", []),  # no events
    ],
    ids=["truncated", "empty"],
)
async def test_an_unreadable_or_empty_bulk_message_is_one_rejection_with_the_bytes_received(value: bytes) -> None:
    store = InMemoryNormaliseStore()
    report = await run(store, [InboundMessage(value, SourcePosition("in", 2, 9))])
    (rejection,) = store.rejections.values()
    assert rejection.rejection_id == "in/2/9" and rejection.original == value and rejection.event_id is None
    assert rejection.reason in {"undecodable", "invalid_envelope"}
    assert report.received == 1 and sum(report.rejections.values()) == 1 and not store.features


async def test_the_signature_covers_the_whole_bulk_message_and_its_commune() -> None:
    """Signed by the commune's key: applied. Signed by another commune's key, or tampered with after signing,
    or unsigned: each event refused (as it would be alone), nothing written. An event naming another commune
    inside a message its key may sign is refused: a key cannot reach another commune through the bulk form."""
    store = InMemoryNormaliseStore()
    own = [toilet(1), toilet(2)]
    foreign_key = [toilet(3), toilet(4)]
    unsigned = [toilet(5)]
    smuggled = [toilet(6), toilet(7, commune="69123")]
    tampered = bulk([toilet(8)], offset=4, key=VILLEURBANNE)
    other = CODECS.encode_change_event_batch("public_toilets", "69266", [toilet(9)])
    report = await run(
        store,
        [
            bulk(own, 0, VILLEURBANNE),
            bulk(foreign_key, 1, LYON),
            bulk(unsigned, 2),
            bulk(smuggled, 3, VILLEURBANNE),
            InboundMessage(other, tampered.position, tampered.headers),  # the headers of another value
        ],
        AUTH,
    )
    assert set(store.features) == {FeatureKey("public_toilets", "69266", g) for g in ("1", "2", "6")}
    reasons = {r.event_id: r.reason for r in store.rejections.values()}
    assert reasons == {
        **{e.event_id: "forbidden_commune" for e in foreign_key},
        unsigned[0].event_id: "unauthenticated",
        smuggled[1].event_id: "invalid_envelope",
        next(iter(CODECS.decode_change_events(other).events)).event_id: "unauthenticated",
    }
    assert report.received == 8 and report.rejections[("public_toilets", "forbidden_commune")] == 2
    assert store.tally == {("public_toilets", "69266", "created"): 3}


def test_a_bulk_message_and_single_messages_prepare_alike_in_one_batch() -> None:
    """Bulk and single messages mixed in one batch: candidates in message order, then event order."""
    a, b, c, d = toilet(1), toilet(2), toilet(3), toilet(4)
    prepared = prepare_batch(
        [*msgs(a), bulk([b, c], offset=1), *msgs(d)], codecs=CODECS, normaliser=NORMALISER, now=NOW
    )
    assert [x.event.event_id for x in prepared.candidates] == [a.event_id, b.event_id, c.event_id, d.event_id]
    assert prepared.report.received == 4 and not prepared.rejections
