"""The producers' bulk form (issue #16.3): a call's events become ChangeEventBatch messages, one per dataset and
commune, split under the record size limit; every event is in exactly one message, in its order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from services.contract import size_limits
from services.contract.codecs import Codecs
from services.contract.messages import ChangeEvent, GeometryEncoding, Operation, RawGeometry
from services.ingest.adapters.kafka_event_publisher import (
    OutgoingMessage,
    bulk_key,
    bulk_messages,
    event_key,
    single_messages,
)
from services.ingest.settings import IngestSettings

CODECS = Codecs()
T0 = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)


def event(n: int, commune: str = "69266", dataset: str = "public_toilets", filler: int = 0) -> ChangeEvent:
    return ChangeEvent(
        str(uuid.UUID(int=n + 1)),
        dataset,
        commune,
        str(n),
        Operation.UPSERT,
        T0,
        n,
        "test",
        RawGeometry(GeometryEncoding.WKT, b"POINT (4.85 45.76)", "EPSG:4326"),
        {"gid": n, "adresse": "x" * filler},
    )


def encoded(events: list[ChangeEvent]) -> list[tuple[ChangeEvent, bytes]]:
    return [(e, CODECS.encode_change_event(e)) for e in events]


def read(messages: list[OutgoingMessage]) -> dict[bytes, list[ChangeEvent]]:
    """The events of each key, in send order, checking each message's form and its count."""
    by_key: dict[bytes, list[ChangeEvent]] = {}
    for m in messages:
        carried = CODECS.decode_change_events(m.value)
        assert len(carried.events) == m.events
        assert m.key == bulk_key(carried.dataset, carried.commune)
        assert all((e.dataset, e.commune) == (carried.dataset, carried.commune) for e in carried.events)
        by_key.setdefault(m.key, []).extend(carried.events)
    return by_key


def test_one_bulk_message_per_dataset_and_commune_in_order() -> None:
    events = [event(1), event(2, "69123"), event(3), event(4, dataset="drinking_fountains"), event(5, "69123")]
    messages = bulk_messages(encoded(events), CODECS, size_limits.MAX_RECORD_BYTES)
    assert [m.key for m in messages] == [
        b"public_toilets/69266",
        b"public_toilets/69123",
        b"drinking_fountains/69266",
    ]
    assert all(CODECS.catalogue.writer_name(m.value) == "change_event_batch" for m in messages)
    assert read(messages) == {
        b"public_toilets/69266": [events[0], events[2]],
        b"public_toilets/69123": [events[1], events[4]],
        b"drinking_fountains/69266": [events[3]],
    }
    assert bulk_messages([], CODECS, size_limits.MAX_RECORD_BYTES) == []


def test_a_group_is_split_under_the_limit_and_an_event_too_large_for_a_bulk_of_one_goes_alone() -> None:
    limit = 3_000
    small = [event(n, filler=500) for n in range(12)]
    # an event that fits the limit alone in the single form, not in a bulk message of one
    near = next(
        e for f in range(limit, 0, -1) if len(CODECS.encode_change_event(e := event(99, filler=f))) <= limit - 5
    )
    single_size = len(CODECS.encode_change_event(near))
    assert single_size <= limit < CODECS.change_event_batch_size(near.dataset, near.commune, 1, single_size)
    events = [*small[:6], near, *small[6:]]
    messages = bulk_messages(encoded(events), CODECS, limit)
    assert all(len(m.value) <= limit for m in messages)
    forms = [CODECS.catalogue.writer_name(m.value) for m in messages]
    assert forms.count("change_event") == 1 and forms.count("change_event_batch") >= 4
    (alone,) = [m for m in messages if CODECS.catalogue.writer_name(m.value) == "change_event"]
    assert alone.key == bulk_key("public_toilets", "69266")  # same key: same partition as its group's bulk messages
    assert read(messages) == {b"public_toilets/69266": events}  # nothing lost, nothing twice, order kept


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["69266", "69123", "69381"]), st.integers(0, 1_500)),
        max_size=60,
    ),
    st.integers(600, 6_000),
)
def test_every_event_is_in_exactly_one_message_under_the_limit(shape: list[tuple[str, int]], limit: int) -> None:
    events = [event(n, commune, filler=filler) for n, (commune, filler) in enumerate(shape)]
    sendable = [(e, v) for e, v in encoded(events) if len(v) <= limit]  # what the producer's size check lets through
    messages = bulk_messages(sendable, CODECS, limit)
    assert all(len(m.value) <= limit for m in messages)
    expected: dict[bytes, list[ChangeEvent]] = {}
    for e, _ in sendable:
        expected.setdefault(bulk_key(e.dataset, e.commune), []).append(e)
    assert read(messages) == expected
    assert sum(m.events for m in messages) == len(sendable)


def test_the_single_form_is_one_message_per_event_keyed_per_feature() -> None:
    events = [event(1), event(2, "69123")]
    messages = single_messages(encoded(events))
    assert [(m.key, CODECS.decode_change_event(m.value), m.events) for m in messages] == [
        (event_key(e), e, 1) for e in events
    ]


def test_bulk_sending_is_on_by_default_and_can_be_turned_off(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert IngestSettings().bulk_send is True
    monkeypatch.setenv("ODC_INGEST_BULK_SEND", "false")
    assert IngestSettings().bulk_send is False
