"""The normaliser's handler with an in-memory unit of work: decode, validate, dedupe, reject."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import ChangeEvent, GeometryEncoding, Operation, RawGeometry, SourcePosition
from services.normalise.domain.canonical_feature import EventNormaliser, FeatureKey
from services.normalise.service_layer.process_batch import InboundMessage, process_batch
from tests.fakes.normalise_store import InMemoryNormaliseStore, InMemoryUnitOfWork

CODECS = Codecs()
NORMALISER = EventNormaliser(DatasetCatalogue.load())
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class FixedClock:
    def now(self) -> datetime:
        return NOW


def toilet(
    gid: int,
    seq: int = 1,
    adresse: str = "Place de la Mairie",
    op: Operation = Operation.UPSERT,
    commune: str = "69266",
    dataset: str = "public_toilets",
    event_id: str | None = None,
    coords: tuple[float, float] = (45.7268, 4.893),
) -> ChangeEvent:
    return ChangeEvent(
        event_id or str(uuid.uuid4()),
        dataset,
        commune,
        str(gid),
        op,
        NOW,
        seq,
        "test",
        RawGeometry(
            GeometryEncoding.GEOJSON,
            json.dumps({"type": "Point", "coordinates": coords}).encode(),
            "urn:ogc:def:crs:OGC:1.3:CRS84",
        ),
        {"gid": gid, "codinsee": commune, "adresse": adresse, "acceshandi": "1", "payant": None},
    )


def msgs(*items: ChangeEvent | bytes) -> list[InboundMessage]:
    return [
        InboundMessage(i if isinstance(i, bytes) else CODECS.encode_change_event(i), SourcePosition("in", 0, n))
        for n, i in enumerate(items)
    ]


@pytest.fixture
def store() -> InMemoryNormaliseStore:
    return InMemoryNormaliseStore()


async def run(store: InMemoryNormaliseStore, *items: ChangeEvent | bytes):  # type: ignore[no-untyped-def]
    return await process_batch(
        msgs(*items),
        codecs=CODECS,
        normaliser=NORMALISER,
        uow_factory=lambda: InMemoryUnitOfWork(store),
        clock=FixedClock(),
    )


async def test_valid_events_become_canonical_features(store: InMemoryNormaliseStore) -> None:
    report = await run(store, toilet(1), toilet(2))
    assert report.outcomes[("public_toilets", "created")] == 2
    f = store.features[FeatureKey("public_toilets", "69266", "1")].feature
    assert f is not None and f.attributes["acceshandi"] is True and f.attributes["codinsee"] == "69266"
    assert (round(f.geometry.x, 4), round(f.geometry.y, 4)) == (4.893, 45.7268)  # axis swapped back
    assert "axis_swapped" in f.corrections


async def test_same_event_twice_is_applied_once(store: InMemoryNormaliseStore) -> None:
    ev = toilet(1)
    await run(store, ev)
    report = await run(store, ev, ev)
    assert report.outcomes[("public_toilets", "duplicate")] == 2
    assert len(store.changes) == 1


async def test_resend_with_new_ids_changes_nothing(store: InMemoryNormaliseStore) -> None:
    await run(store, toilet(1, seq=1))
    report = await run(store, toilet(1, seq=2))
    assert report.outcomes[("public_toilets", "unchanged")] == 1 and len(store.changes) == 1


async def test_older_event_after_newer_is_stale(store: InMemoryNormaliseStore) -> None:
    await run(store, toilet(1, seq=5, adresse="new"))
    report = await run(store, toilet(1, seq=4, adresse="old"))
    assert report.outcomes[("public_toilets", "stale")] == 1
    f = store.features[FeatureKey("public_toilets", "69266", "1")].feature
    assert f is not None and f.attributes["adresse"] == "new"


async def test_delete_then_late_upsert_stays_deleted(store: InMemoryNormaliseStore) -> None:
    await run(store, toilet(1, seq=1))
    await run(store, toilet(1, seq=3, op=Operation.DELETE))
    report = await run(store, toilet(1, seq=2, adresse="late"))
    assert report.outcomes[("public_toilets", "stale")] == 1
    assert store.features[FeatureKey("public_toilets", "69266", "1")].deleted


async def test_bad_events_are_rejected_with_reasons_and_good_ones_flow(store: InMemoryNormaliseStore) -> None:
    report = await run(
        store,
        b"\x00garbage",
        toilet(1, dataset="no_such_dataset"),
        toilet(2, commune="6926"),
        toilet(3, coords=(0.0, 0.0)),
        toilet(4),
    )
    assert report.outcomes[("public_toilets", "created")] == 1
    reasons = sorted(r.reason for r in store.rejections.values())
    assert reasons == ["invalid_envelope", "invalid_geometry", "undecodable", "unknown_dataset"]
    undecodable = next(r for r in store.rejections.values() if r.reason == "undecodable")
    assert undecodable.original == b"\x00garbage" and undecodable.rejection_id == "in/0/0"
    geo = next(r for r in store.rejections.values() if r.reason == "invalid_geometry")
    assert geo.errors[0].rule == "placeholder_coordinates" and geo.feature_id == "3" and geo.commune == "69266"


async def test_attribute_errors_name_field_rule_and_value(store: InMemoryNormaliseStore) -> None:
    ev = toilet(1)
    bad = ChangeEvent(
        ev.event_id,
        ev.dataset,
        ev.commune,
        ev.feature_id,
        ev.operation,
        ev.occurred_at,
        ev.sequence,
        ev.source,
        ev.geometry,
        {**ev.attributes, "payant": "peut-être", "codinsee": "69123"},
    )
    await run(store, bad)
    (rej,) = store.rejections.values()
    assert rej.reason == "invalid_attributes"
    assert {(e.field, e.rule) for e in rej.errors} == {("payant", "type"), ("codinsee", "commune_mismatch")}
    payant = next(e for e in rej.errors if e.field == "payant")
    assert payant.value == "peut-être" and "booléen" in payant.message_fr


@pytest.mark.parametrize(
    ("change", "reason", "rule"),
    [
        ({"adresse": "a\x00b"}, "invalid_attributes", "control_character"),
        ({"feature_id": "12\x00"}, "invalid_envelope", "control_character"),
        ({"source": "odc\x00send"}, "invalid_envelope", "control_character"),
    ],
)
async def test_nul_and_control_characters_are_rejections_not_database_errors(
    store: InMemoryNormaliseStore, change: dict[str, str], reason: str, rule: str
) -> None:
    """PostgreSQL refuses NUL in text and jsonb: such values must be refused before any store sees them."""
    ev = toilet(1)
    attrs = {**ev.attributes, **{k: v for k, v in change.items() if k == "adresse"}}
    fields = {k: v for k, v in change.items() if k != "adresse"}
    bad = ChangeEvent(
        fields.get("event_id", ev.event_id),
        ev.dataset,
        ev.commune,
        fields.get("feature_id", ev.feature_id),
        ev.operation,
        ev.occurred_at,
        ev.sequence,
        fields.get("source", ev.source),
        ev.geometry,
        attrs,
    )
    await run(store, bad)
    assert not store.features
    (rej,) = store.rejections.values()
    assert rej.reason == reason and rule in {e.rule for e in rej.errors}


def test_a_batch_prepared_in_slices_is_the_batch_prepared_at_once() -> None:
    """The worker prepares a batch in slices (yielding between them) and merges them: same candidates,
    rejections and counters as one prepare, in the same order."""
    from services.normalise.service_layer.process_batch import PreparedBatch, prepare_batch

    batch = msgs(toilet(1), b"junk", toilet(2, commune="6926"), toilet(3), toilet(4, coords=(0.0, 0.0)), toilet(5))

    def prep(part: list[InboundMessage]) -> PreparedBatch:
        return prepare_batch(part, codecs=CODECS, normaliser=NORMALISER, now=NOW)

    whole = prep(batch)
    sliced = PreparedBatch.merge([prep(batch[i : i + 2]) for i in range(0, len(batch), 2)])
    assert [c.event.event_id for c in sliced.candidates] == [c.event.event_id for c in whole.candidates]
    assert [r.rejection_id for r in sliced.rejections] == [r.rejection_id for r in whole.rejections]
    assert sliced.report.received == whole.report.received == 6
    assert sliced.report.rejections == whole.report.rejections
    assert len(whole.candidates) == 3 and len(whole.rejections) == 3


async def test_apply_batch_can_be_retried_without_counting_twice() -> None:
    from services.normalise.service_layer.process_batch import apply_batch, prepare_batch

    store = InMemoryNormaliseStore()
    prepared = prepare_batch(msgs(toilet(1), b"junk"), codecs=CODECS, normaliser=NORMALISER, now=NOW)
    first = await apply_batch(prepared, normaliser=NORMALISER, uow_factory=lambda: InMemoryUnitOfWork(store))
    again = await apply_batch(prepared, normaliser=NORMALISER, uow_factory=lambda: InMemoryUnitOfWork(store))
    assert sum(first.rejections.values()) == sum(again.rejections.values()) == 1
    assert first.outcomes[("public_toilets", "created")] == 1
    assert again.outcomes[("public_toilets", "duplicate")] == 1 and again.outcomes[("public_toilets", "created")] == 0


async def test_a_refusal_is_resolved_when_the_same_source_record_is_later_accepted(
    store: InMemoryNormaliseStore,
) -> None:
    from dataclasses import replace

    refused = replace(toilet(1, coords=(0.0, 0.0)), source_row=12)
    await run(store, refused)
    (rej,) = store.rejections.values()
    assert rej.source_row == 12 and not store.resolved
    await run(store, toilet(2))  # another record: the refusal stays
    assert not store.resolved
    await run(store, toilet(1, seq=2))  # the same record, fixed
    assert store.resolved == {rej.rejection_id}


async def test_a_refusal_names_the_columns_of_the_sent_file(store: InMemoryNormaliseStore) -> None:
    ev = toilet(1)
    attrs = {("CODINSEE" if k == "codinsee" else k): v for k, v in ev.attributes.items()}
    bad = ChangeEvent(ev.event_id, ev.dataset, ev.commune, ev.feature_id, ev.operation, ev.occurred_at, ev.sequence,
                      ev.source, ev.geometry, {**attrs, "CODINSEE": "6926"})  # fmt: skip
    await run(store, bad)
    (rej,) = store.rejections.values()
    (e,) = [e for e in rej.errors if e.field == "codinsee"]
    assert e.column == "CODINSEE"


async def test_the_batch_report_counts_applied_records_per_conformance_level(store: InMemoryNormaliseStore) -> None:
    complete, partial = toilet(1), toilet(2)
    fountain = ChangeEvent(
        str(uuid.uuid4()), "drinking_fountains", "69123", "F1", Operation.UPSERT, NOW, 1, "test", None,
        {"id": "F1", "latitude": 45.764, "longitude": 4.8357, "code_commune_insee": "69123"},
    )  # fmt: skip
    report = await run(store, complete, partial, fountain)
    assert report.levels == {("public_toilets", "conforming"): 2, ("drinking_fountains", "incomplete"): 1}


async def test_an_applied_event_is_remembered_by_its_change_row_and_only_the_others_are_claimed(
    store: InMemoryNormaliseStore,
) -> None:
    applied, same, stale = toilet(1, seq=2), toilet(1, seq=3), toilet(1, seq=1)
    first = await run(store, applied, same, stale)
    assert [first.outcomes[("public_toilets", o)] for o in ("created", "unchanged", "stale")] == [1, 1, 1]
    assert [d.candidate.event.event_id for _, d in store.changes] == [applied.event_id]
    assert store.processed == {same.event_id, stale.event_id}  # the applied event's change row is its record
    again = await run(store, applied, same, stale)
    assert again.outcomes[("public_toilets", "duplicate")] == 3 and len(store.changes) == 1


def test_a_refused_batch_and_a_record_over_the_size_limit_are_refused_before_decoding() -> None:
    """The consumer hands over a batch that expanded past its bound as one message (kafka_decompression.py); a
    record larger than any odc producer may send is refused as the push API refuses it; the rest goes on."""
    from services.contract import size_limits
    from services.contract.messages import RefusedBatch
    from services.normalise.service_layer.process_batch import prepare_batch

    refused = InboundMessage(b"", SourcePosition("in", 2, 41), (), RefusedBatch("zstd", 32 << 20, 40, 41))
    huge = InboundMessage(b"\0" * (size_limits.MAX_RECORD_BYTES + 1), SourcePosition("in", 2, 42))
    prepared = prepare_batch([refused, huge, *msgs(toilet(1))], codecs=CODECS, normaliser=NORMALISER, now=NOW)
    assert [c.event.feature_id for c in prepared.candidates] == [toilet(1).feature_id]
    by_offset = {r.source.offset: r for r in prepared.rejections}
    assert by_offset[41].reason == "batch_too_large"
    assert by_offset[41].message.startswith("a zstd-compressed record batch (offsets 40 to 41) expands past 32 MiB")
    assert by_offset[41].errors[0].message_fr.startswith("un lot d'enregistrements compressé en zstd")
    assert by_offset[42].reason == "record_too_large"
    assert by_offset[42].message.startswith(f"a record of {size_limits.MAX_RECORD_BYTES + 1:,} bytes (decompressed)")
    at_limit = InboundMessage(b"\0" * size_limits.MAX_RECORD_BYTES, SourcePosition("in", 2, 43))
    (undecodable,) = prepare_batch([at_limit], codecs=CODECS, normaliser=NORMALISER, now=NOW).rejections
    assert undecodable.reason == "undecodable"  # at the limit: read (and here, not Avro)
