"""The Avro contract: every schema parses, every codec round-trips, committed versions never change,
each version reads data written with the previous one, and foreign bytes are rejections, not crashes."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contract.avro_catalogue import MAGIC, SCHEMA_DIR, SchemaCatalogue, UndecodableMessage
from services.contract.codecs import Codecs
from services.contract.messages import (
    ChangeEvent,
    ChangeKind,
    DatasetVersionPublished,
    FeatureChange,
    FeatureState,
    FieldError,
    GeometryEncoding,
    Operation,
    RawGeometry,
    Rejection,
    SourcePosition,
)

CODECS = Codecs()
T0 = datetime(2026, 5, 19, 8, 30, 0, 123000, tzinfo=UTC)


def test_every_schema_parses_and_is_versioned() -> None:
    cat = SchemaCatalogue()
    assert set(cat.names()) == {
        "change_event",
        "change_event_batch",
        "rejection",
        "feature_change",
        "feature_change_batch",
        "dataset_version",
    }
    for name in cat.names():
        versions = [sv.version for sv in cat.versions(name)]
        assert versions == list(range(1, len(versions) + 1)), f"{name}: versions must be 1..N without gaps"


def test_committed_schema_versions_are_immutable() -> None:
    """A committed .avsc never changes: a change is a new version file. The lock records each one."""
    lock = json.loads((SCHEMA_DIR / "fingerprints.lock.json").read_text())
    cat = SchemaCatalogue()
    current = {sv.path.name: sv.fingerprint.hex() for n in cat.names() for sv in cat.versions(n)}
    for filename, fp in lock.items():
        assert filename in current, f"{filename} was deleted: committed versions must stay readable"
        assert current[filename] == fp, f"{filename} was edited after commit: add a new version instead"
    new = set(current) - set(lock)
    assert not new, f"new schema versions {sorted(new)}: add them to fingerprints.lock.json"


def _example(schema: object) -> object:
    """A value for any Avro schema: every field set, unions take their last branch (the richest)."""
    if isinstance(schema, str):
        return {
            "null": None,
            "boolean": True,
            "int": 7,
            "long": 1 << 40,
            "float": 1.5,
            "double": 2.25,
            "bytes": b"\x00\xff",
            "string": "é",
        }.get(schema)
    if isinstance(schema, list):
        return _example(schema[-1])
    assert isinstance(schema, dict)
    t = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return T0
    if schema.get("logicalType") == "uuid":
        return str(uuid.UUID(int=1))
    if t == "record":
        return {f["name"]: _example(f["type"]) for f in schema["fields"]}
    if t == "enum":
        return schema["symbols"][-1]
    if t == "array":
        return [_example(schema["items"])]
    if t == "map":
        return {"k": _example(schema["values"])}
    return _example(t)


def reads_older_data(older: dict, newer: dict) -> bool:  # type: ignore[type-arg]
    """Backward compatibility: a reader on ``newer`` decodes data written with ``older``."""
    old_p, new_p = fastavro.parse_schema(older), fastavro.parse_schema(newer)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old_p, _example(older))
    buf.seek(0)
    try:
        fastavro.schemaless_reader(buf, old_p, new_p)
    except Exception:  # noqa: BLE001 - any resolution error means incompatible
        return False
    return True


def test_the_compatibility_check_can_fail() -> None:
    v1 = json.loads((SCHEMA_DIR / "dataset_version.v1.avsc").read_text())
    compatible = json.loads(json.dumps(v1))
    compatible["fields"].append({"name": "links", "type": ["null", "string"], "default": None})
    incompatible = json.loads(json.dumps(v1))
    incompatible["fields"].append({"name": "links", "type": "string"})  # no default: old data unreadable
    assert reads_older_data(v1, compatible)
    assert not reads_older_data(v1, incompatible)


@pytest.mark.parametrize("name", SchemaCatalogue().names())
def test_each_version_reads_the_previous_version(name: str) -> None:
    cat = SchemaCatalogue()
    versions = cat.versions(name)
    for older, newer in itertools.pairwise(versions):
        assert reads_older_data(json.loads(older.path.read_text()), json.loads(newer.path.read_text())), (
            f"{newer.path.name} cannot read data written with {older.path.name}"
        )
    # and the latest version reads a message of every version through the catalogue
    for sv in versions:
        raw = cat.encode(name, _example(json.loads(sv.path.read_text())), version=sv.version)  # type: ignore[arg-type]
        assert raw[:2] == MAGIC and raw[2:10] == sv.fingerprint
        assert isinstance(cat.decode(raw, name), dict)


EVENT = ChangeEvent(
    str(uuid.uuid4()),
    "public_toilets",
    "69266",
    "7",
    Operation.UPSERT,
    T0,
    42,
    "test",
    RawGeometry(GeometryEncoding.GEOJSON, b'{"type":"Point","coordinates":[4.8,45.7]}', "EPSG:4326"),
    {"a": 1, "b": None, "c": "x", "d": 1.5, "e": True},
)
STATE = FeatureState('{"type":"Point","coordinates":[4.8,45.7]}', '{"a":1}', "ab" * 32)


@pytest.mark.parametrize(
    ("encode", "decode", "message"),
    [
        (CODECS.encode_change_event, CODECS.decode_change_event, EVENT),
        (CODECS.encode_change_event, CODECS.decode_change_event, replace(EVENT, source_row=93)),
        (
            CODECS.encode_change_event,
            CODECS.decode_change_event,
            ChangeEvent(str(uuid.uuid4()), "parks_gardens", "69123", "PAR-1", Operation.DELETE, T0, 0, "s"),
        ),
        (
            CODECS.encode_rejection,
            CODECS.decode_rejection,
            Rejection(
                "r1",
                T0,
                "normalise",
                "invalid_attributes",
                "bad",
                SourcePosition("t", 2, 99),
                b"\x00raw",
                "e1",
                "public_toilets",
                "69266",
                "7",
                (FieldError("pattern", "en", "fr", "codinsee", "6926"),),
            ),
        ),
        (
            CODECS.encode_feature_change,
            CODECS.decode_feature_change,
            FeatureChange(5, "e1", "public_toilets", "69266", "7", ChangeKind.UPDATED, 42, T0, T0, STATE, STATE),
        ),
        (
            CODECS.encode_feature_change,
            CODECS.decode_feature_change,
            FeatureChange(6, "e2", "public_toilets", "69266", "7", ChangeKind.DELETED, 43, T0, T0, STATE, None),
        ),
        (
            CODECS.encode_dataset_version,
            CODECS.decode_dataset_version,
            DatasetVersionPublished("public_toilets", 3, T0, 1, 2, 3, 480, "0" * 64, 10, 20),
        ),
        (
            CODECS.encode_dataset_version,
            CODECS.decode_dataset_version,
            DatasetVersionPublished("drinking_fountains", 4, T0, 1, 0, 0, 12, "0" * 64, 10, 20, incomplete=3),
        ),
    ],
)
def test_codec_round_trip(encode, decode, message) -> None:  # type: ignore[no-untyped-def]
    assert decode(encode(message)) == message


CHANGES = [
    FeatureChange(5, "e1", "public_toilets", "69266", "7", ChangeKind.UPDATED, 42, T0, T0, STATE, STATE),
    FeatureChange(6, "e2", "public_toilets", "69266", "7", ChangeKind.DELETED, 43, T0, T0, STATE, None),
    FeatureChange(9, "e3", "public_toilets", "69123", "8", ChangeKind.CREATED, 1, T0, T0, None, STATE),
]


def test_the_batch_form_carries_exactly_the_feature_change_record() -> None:
    """feature_change_batch's items are the latest feature_change schema, field for field: the two forms of
    odc.feature-changes cannot drift apart (a new feature_change version needs a new batch version too)."""
    cat = SchemaCatalogue()
    batch = json.loads(cat.latest("feature_change_batch").path.read_text(encoding="utf-8"))
    (changes,) = [f for f in batch["fields"] if f["name"] == "changes"]
    assert changes["type"]["type"] == "array"
    assert changes["type"]["items"] == json.loads(cat.latest("feature_change").path.read_text(encoding="utf-8"))


def test_a_batch_round_trips_in_order_and_the_single_form_still_decodes() -> None:
    raw = CODECS.encode_feature_change_batch("public_toilets", CHANGES)
    assert CODECS.catalogue.writer_name(raw) == "feature_change_batch"
    assert CODECS.decode_feature_changes(raw) == CHANGES
    # a message written before the batch form (one FeatureChange) is still read, as a list of one
    assert CODECS.decode_feature_changes(CODECS.encode_feature_change(CHANGES[1])) == [CHANGES[1]]
    # one batch message is smaller than the same changes sent one by one
    assert len(raw) < sum(len(CODECS.encode_feature_change(c)) for c in CHANGES)


def test_the_changes_topic_refuses_other_messages_with_a_reason() -> None:
    with pytest.raises(UndecodableMessage) as wrong:
        CODECS.decode_feature_changes(CODECS.encode_change_event(EVENT))
    assert wrong.value.reason == "wrong_schema"
    with pytest.raises(UndecodableMessage) as foreign:
        CODECS.decode_feature_changes(b"not avro at all")
    assert foreign.value.reason == "undecodable"


def test_the_bulk_form_carries_exactly_the_change_event_record() -> None:
    """change_event_batch's items are the latest change_event schema, field for field: the two forms of
    odc.change-events cannot drift apart (a new change_event version needs a new batch version too)."""
    cat = SchemaCatalogue()
    batch = json.loads(cat.latest("change_event_batch").path.read_text(encoding="utf-8"))
    assert [f["name"] for f in batch["fields"]] == ["dataset", "commune", "events"]
    (events,) = [f for f in batch["fields"] if f["name"] == "events"]
    assert events["type"]["type"] == "array"
    assert events["type"]["items"] == json.loads(cat.latest("change_event").path.read_text(encoding="utf-8"))


BULK = [
    replace(EVENT, event_id=str(uuid.UUID(int=n)), feature_id=str(n), sequence=n, source_row=n or None)
    for n in range(4)
] + [replace(EVENT, event_id=str(uuid.UUID(int=9)), operation=Operation.DELETE, geometry=None, attributes={})]


def test_a_bulk_message_round_trips_in_order_and_the_single_form_still_decodes() -> None:
    raw = CODECS.encode_change_event_batch("public_toilets", "69266", BULK)
    assert CODECS.catalogue.writer_name(raw) == "change_event_batch"
    read = CODECS.decode_change_events(raw)
    assert (read.dataset, read.commune, read.bulk) == ("public_toilets", "69266", True)
    assert read.events == tuple(BULK)
    single = CODECS.decode_change_events(CODECS.encode_change_event(BULK[2]))
    assert (single.dataset, single.commune, single.events, single.bulk) == (
        "public_toilets",
        "69266",
        (BULK[2],),
        False,
    )
    # one bulk message is smaller than the same events sent one by one
    assert len(raw) < sum(len(CODECS.encode_change_event(e)) for e in BULK)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(max_size=300), max_size=70),
    st.text(min_size=1, max_size=150),
    st.text(min_size=1, max_size=8),
)
def test_a_bulk_message_assembled_from_single_messages_is_the_encoder_s_bytes(
    texts: list[str], dataset: str, commune: str
) -> None:
    """The producers build the bulk form from the single-form values they already size-checked, without
    encoding again; the result is byte for byte what fastavro writes, and its size is known beforehand
    (varint lengths of any size: long texts and up to 70 events)."""
    events = [replace(EVENT, event_id=str(uuid.UUID(int=n)), attributes={"t": t}) for n, t in enumerate(texts)]
    singles = [CODECS.encode_change_event(e) for e in events]
    assembled = CODECS.change_event_batch_of_encoded(dataset, commune, singles)
    assert assembled == CODECS.encode_change_event_batch(dataset, commune, events)
    assert len(assembled) == CODECS.change_event_batch_size(dataset, commune, len(singles), sum(map(len, singles)))
    assert CODECS.decode_change_events(assembled).events == tuple(events)


def test_only_latest_single_form_values_are_assembled() -> None:
    """An item must be a latest change_event body; anything else would make a bulk message that lies."""
    record = {k: v for k, v in Codecs._change_event_to_wire(EVENT).items() if k != "source_row"}
    older = CODECS.catalogue.encode("change_event", record, version=1)
    assert CODECS.decode_change_event(older).event_id == EVENT.event_id
    for bad in (older, b"not avro", CODECS.encode_feature_change(CHANGES[0])):
        with pytest.raises(ValueError):
            CODECS.change_event_batch_of_encoded("public_toilets", "69266", [bad])


def test_the_input_topic_refuses_other_messages_with_a_reason() -> None:
    with pytest.raises(UndecodableMessage) as wrong:
        CODECS.decode_change_events(CODECS.encode_feature_change_batch("public_toilets", CHANGES))
    assert wrong.value.reason == "wrong_schema"
    with pytest.raises(UndecodableMessage) as foreign:
        CODECS.decode_change_events(b"not avro at all")
    assert foreign.value.reason == "undecodable"
    truncated = CODECS.encode_change_event_batch("public_toilets", "69266", BULK)[:-3]
    with pytest.raises(UndecodableMessage) as cut:
        CODECS.decode_change_events(truncated)
    assert cut.value.reason == "undecodable"


def test_a_v1_change_event_reads_as_v2_without_a_source_row() -> None:
    """Events written before source_row (change_event v1) still decode, with no row."""
    record = {
        "event_id": EVENT.event_id, "dataset": EVENT.dataset, "commune": EVENT.commune,
        "feature_id": EVENT.feature_id, "operation": EVENT.operation.value, "occurred_at": EVENT.occurred_at,
        "sequence": EVENT.sequence, "source": EVENT.source, "geometry": None, "attributes": dict(EVENT.attributes),
    }  # fmt: skip
    v1 = CODECS.catalogue.encode("change_event", record, version=1)
    decoded = CODECS.decode_change_event(v1)
    assert decoded.source_row is None and decoded.feature_id == EVENT.feature_id
    assert CODECS.decode_change_event(CODECS.encode_change_event(replace(EVENT, source_row=7))).source_row == 7


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "undecodable"),
        (b"hello world, not avro", "undecodable"),
        (MAGIC + b"\x00" * 8 + b"body", "unknown_schema"),
        (CODECS.encode_change_event(EVENT)[:-3], "undecodable"),
        (CODECS.encode_change_event(EVENT) + b"\x00", "undecodable"),
        (CODECS.encode_dataset_version(DatasetVersionPublished("d", 1, T0, 0, 0, 0, 0, "0", 1, 1)), "wrong_schema"),
    ],
)
def test_foreign_bytes_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UndecodableMessage) as info:
        CODECS.decode_change_event(data)
    assert info.value.reason == reason


def test_an_empty_message_is_told_apart_from_garbage() -> None:
    """A null value (a Kafka tombstone, which the normaliser reads as no bytes) deletes nothing: the answer says
    what to send instead."""
    with pytest.raises(UndecodableMessage) as empty:
        CODECS.decode_change_event(b"")
    with pytest.raises(UndecodableMessage) as garbage:
        CODECS.decode_change_event(b"hello world, not avro")
    assert empty.value.reason == garbage.value.reason == "undecodable"
    assert "empty message" in empty.value.message and "DELETE" in empty.value.message
    assert "empty" not in garbage.value.message


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(UndecodableMessage):
        CODECS.decode_change_event(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_valid_header_with_random_body_is_a_rejection(body: bytes) -> None:
    fp = SchemaCatalogue().latest("change_event").fingerprint
    try:
        CODECS.decode_change_event(MAGIC + fp + body)
    except UndecodableMessage as bad:
        assert bad.reason == "undecodable"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_a_bulk_header_with_a_random_body_is_a_rejection(body: bytes) -> None:
    """The normaliser decodes every message of the input topic with decode_change_events: random bytes after
    a bulk (change_event_batch) header are an ``undecodable`` rejection (or, by chance, events), never a crash."""
    fp = SchemaCatalogue().latest("change_event_batch").fingerprint
    try:
        CODECS.decode_change_events(MAGIC + fp + body)
    except UndecodableMessage as bad:
        assert bad.reason == "undecodable"


def test_schema_dir_is_in_the_repo() -> None:
    assert Path(__file__).resolve().parents[2] / "schemas" / "avro" == SCHEMA_DIR
