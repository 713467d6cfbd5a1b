"""The fast decode (schemas read without logical types, uuid / timestamp-millis / enums converted by the codecs)
gives exactly what the reference decode gives (fastavro's logical types, enum calls: ``*_reference``): the same
events and changes for anything that decodes, the same UndecodableMessage reason AND message (or the same other
exception) for anything that does not - in both forms of both topics and across schema versions."""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.contract.avro_catalogue import MAGIC, SchemaCatalogue, UndecodableMessage, without_logical_types
from services.contract.codecs import Codecs
from services.contract.messages import ChangeEvents, ChangeKind, GeometryEncoding, Operation

CODECS = Codecs()
CAT = CODECS.catalogue
LONG = st.integers(-(2**63), 2**63 - 1)
# the instants a datetime can hold (years 1..9999), as timestamp-millis
MIN_MS, MAX_MS = -62_135_596_800_000, 253_402_300_799_999
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # any unicode Avro can carry
UUID_TEXT = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: u.urn),
    st.just("not a uuid"),
    st.just(""),
    st.just("١" * 32),  # Arabic-Indic digits: uuid.UUID reads them (int(..., 16)), the canonical form is ASCII
    st.uuids().map(lambda u: str(u) + "\n"),
    TEXT,
)
INSTANT = st.one_of(st.integers(MIN_MS, MAX_MS), st.integers(MIN_MS - 10**6, MIN_MS), LONG)
ATTRIBUTE = st.one_of(
    st.none(), st.booleans(), LONG, st.floats(allow_nan=False), TEXT
)  # every branch of the map's union (NaN is never equal to itself, so it would hide nothing here)


_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def _worded(text: str) -> str:
    """fastavro words some failures with the address of the stream it read ("cannot read boolean from <_io.BytesIO
    object at 0x7f...>"): a different address on every call, the reference path's own included."""
    return _ADDRESS.sub(" at 0x…", text)


def _outcome(decode: Callable[[bytes], Any], data: bytes) -> tuple[Any, ...]:
    """What a decode does with ``data``: its result (by value and repr: bool vs int, tz) or its failure."""
    try:
        result = decode(data)
    except UndecodableMessage as bad:
        return ("undecodable", bad.reason, _worded(bad.message), _worded(str(bad)))
    except Exception as other:  # noqa: BLE001 - any other failure must be the same one too
        return ("raised", type(other).__name__, _worded(str(other)))
    return ("decoded", result, repr(result))


def _same(fast: Callable[[bytes], Any], reference: Callable[[bytes], Any], data: bytes) -> tuple[Any, ...]:
    got, expected = _outcome(fast, data), _outcome(reference, data)
    assert got == expected
    return got


@st.composite
def geometries(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.booleans()):
        return None
    return {
        "encoding": draw(st.sampled_from([e.value for e in GeometryEncoding])),
        "value": draw(st.binary(max_size=40)),
        "crs": draw(st.one_of(st.none(), TEXT)),
    }


@st.composite
def event_records(
    draw: st.DrawFn, uuid_text: st.SearchStrategy[str] = UUID_TEXT, instant: st.SearchStrategy[int] = INSTANT
) -> dict[str, Any]:
    """A change_event record as written on the wire (uuid as text, timestamp-millis as a long)."""
    return {
        "event_id": draw(uuid_text),
        "dataset": draw(TEXT),
        "commune": draw(TEXT),
        "feature_id": draw(TEXT),
        "operation": draw(st.sampled_from([o.value for o in Operation])),
        "occurred_at": draw(instant),
        "sequence": draw(LONG),
        "source": draw(TEXT),
        "geometry": draw(geometries()),
        "attributes": draw(st.dictionaries(TEXT, ATTRIBUTE, max_size=6)),
        "source_row": draw(st.one_of(st.none(), LONG)),
    }


STATE = st.one_of(
    st.none(),
    st.fixed_dictionaries({"geometry": st.one_of(st.none(), TEXT), "attributes": TEXT, "content_hash": TEXT}),
)


@st.composite
def change_records(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "change_id": draw(LONG),
        "event_id": draw(TEXT),
        "dataset": draw(TEXT),
        "commune": draw(TEXT),
        "feature_id": draw(TEXT),
        "kind": draw(st.sampled_from([k.value for k in ChangeKind])),
        "sequence": draw(LONG),
        "occurred_at": draw(INSTANT),
        "applied_at": draw(st.one_of(st.just(1_780_000_000_000), INSTANT)),  # a batch's changes often share it
        "before": draw(STATE),
        "after": draw(STATE),
    }


def _single(record: dict[str, Any], version: int | None = None) -> bytes:
    if version == 1:
        record = {k: v for k, v in record.items() if k != "source_row"}
    return CAT.encode("change_event", record, version=version)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_records(), st.sampled_from([None, 1]))
def test_a_single_change_event_decodes_the_same(record: dict[str, Any], version: int | None) -> None:
    """Written with the latest change_event or with v1 (read into v2 by schema resolution)."""
    data = _single(record, version)
    _same(CODECS.decode_change_event, CODECS.decode_change_event_reference, data)
    _same(CODECS.decode_change_events, CODECS.decode_change_events_reference, data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    TEXT,
    TEXT,
    st.one_of(
        st.lists(event_records(), max_size=6),  # most hold a uuid or an instant that does not convert
        st.lists(event_records(st.uuids().map(str), st.integers(MIN_MS, MAX_MS)), max_size=6),  # they all decode
    ),
)
def test_a_bulk_message_decodes_the_same(dataset: str, commune: str, records: list[dict[str, Any]]) -> None:
    data = CAT.encode("change_event_batch", {"dataset": dataset, "commune": commune, "events": records})
    _same(CODECS.decode_change_events, CODECS.decode_change_events_reference, data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(change_records(), min_size=0, max_size=6), TEXT)
def test_feature_changes_decode_the_same(records: list[dict[str, Any]], dataset: str) -> None:
    batch = CAT.encode("feature_change_batch", {"dataset": dataset, "changes": records})
    _same(CODECS.decode_feature_changes, CODECS.decode_feature_changes_reference, batch)
    for record in records[:2]:
        single = CAT.encode("feature_change", record)
        _same(CODECS.decode_feature_changes, CODECS.decode_feature_changes_reference, single)
        _same(CODECS.decode_feature_change, CODECS.decode_feature_change_reference, single)


# -- malformed bodies ------------------------------------------------------------------------------------------

VALID_EVENT: dict[str, Any] = {
    "event_id": "0b5e1f8a-7c1d-4a51-9a7e-3f6f0e2d9c11",
    "dataset": "public_toilets",
    "commune": "69123",
    "feature_id": "wc-é-1",
    "operation": "UPSERT",
    "occurred_at": 1_780_000_000_123,
    "sequence": 7,
    "source": "test",
    "geometry": {"encoding": "WKT", "value": b"POINT (4.8 45.7)", "crs": None},
    "attributes": {"a": None, "b": True, "c": 3, "d": 1.5, "e": "x"},
    "source_row": 2,
}
VALID_CHANGE: dict[str, Any] = {
    "change_id": 12,
    "event_id": VALID_EVENT["event_id"],
    "dataset": "public_toilets",
    "commune": "69123",
    "feature_id": "wc-1",
    "kind": "UPDATED",
    "sequence": 7,
    "occurred_at": 1_780_000_000_123,
    "applied_at": 1_780_000_000_456,
    "before": {"geometry": None, "attributes": "{}", "content_hash": "00"},
    "after": {"geometry": '{"type":"Point","coordinates":[4.8,45.7]}', "attributes": '{"a":1}', "content_hash": "ab"},
}
VALID_MESSAGES = {
    "change_event": _single(VALID_EVENT),
    "change_event v1": _single(VALID_EVENT, 1),
    "change_event_batch": CAT.encode(
        "change_event_batch", {"dataset": "public_toilets", "commune": "69123", "events": [VALID_EVENT] * 3}
    ),
    "feature_change": CAT.encode("feature_change", VALID_CHANGE),
    "feature_change_batch": CAT.encode("feature_change_batch", {"dataset": "d", "changes": [VALID_CHANGE] * 3}),
}
Decoder = Callable[[bytes], Any]
PAIRS: dict[str, list[tuple[Decoder, Decoder]]] = {
    "change_event": [
        (CODECS.decode_change_event, CODECS.decode_change_event_reference),
        (CODECS.decode_change_events, CODECS.decode_change_events_reference),
    ],
    "change_event_batch": [(CODECS.decode_change_events, CODECS.decode_change_events_reference)],
    "feature_change": [
        (CODECS.decode_feature_change, CODECS.decode_feature_change_reference),
        (CODECS.decode_feature_changes, CODECS.decode_feature_changes_reference),
    ],
    "feature_change_batch": [(CODECS.decode_feature_changes, CODECS.decode_feature_changes_reference)],
}


def _pairs(label: str) -> list[tuple[Decoder, Decoder]]:
    return PAIRS[label.split(" ", maxsplit=1)[0]]


@pytest.mark.parametrize("label", sorted(VALID_MESSAGES))
def test_a_message_cut_anywhere_fails_the_same(label: str) -> None:
    data = VALID_MESSAGES[label]
    failures = 0
    for end in range(len(data)):
        for fast, reference in _pairs(label):
            failures += _same(fast, reference, data[:end])[0] != "decoded"
    assert failures  # (the cuts are not all decodable: the comparison above saw failures)


@pytest.mark.parametrize("label", sorted(VALID_MESSAGES))
def test_a_message_with_bytes_added_fails_the_same(label: str) -> None:
    for fast, reference in _pairs(label):
        assert _same(fast, reference, VALID_MESSAGES[label] + b"\x00")[0] == "undecodable"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(PAIRS)), st.binary(max_size=300))
def test_random_bytes_after_a_valid_header_fail_the_same(name: str, body: bytes) -> None:
    data = MAGIC + CAT.latest(name).fingerprint + body
    for fast, reference in PAIRS[name]:
        _same(fast, reference, data)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(VALID_MESSAGES)), st.data())
def test_a_flipped_byte_in_a_valid_body_gives_the_same(label: str, data: st.DataObject) -> None:
    raw = bytearray(VALID_MESSAGES[label])
    at = data.draw(st.integers(10, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255))
    for fast, reference in _pairs(label):
        _same(fast, reference, bytes(raw))


@pytest.mark.parametrize(
    "event_id",
    [
        "not a uuid",
        "",
        "0b5e1f8a-7c1d-4a51-9a7e-3f6f0e2d9c1",  # one digit short
        "0b5e1f8a-7c1d-4a51-9a7e-3f6f0e2d9c11\n",
        "0B5E1F8A-7C1D-4A51-9A7E-3F6F0E2D9C11",  # valid, not canonical: read as its canonical text
        "{0b5e1f8a-7c1d-4a51-9a7e-3f6f0e2d9c11}",
        "urn:uuid:0b5e1f8a-7c1d-4a51-9a7e-3f6f0e2d9c11",
        "0b5e1f8a7c1d4a519a7e3f6f0e2d9c11",
        "0b5e1f8a-7c1d-4a51-9a7e-3f6f0e2d9c1g",
        "١" * 32,
    ],
)
def test_uuid_text_reads_as_fastavro_reads_it(event_id: str) -> None:
    record = dict(VALID_EVENT, event_id=event_id)
    single = _single(record)
    bulk = CAT.encode("change_event_batch", {"dataset": "d", "commune": "c", "events": [VALID_EVENT, record]})
    got = _same(CODECS.decode_change_event, CODECS.decode_change_event_reference, single)
    _same(CODECS.decode_change_events, CODECS.decode_change_events_reference, bulk)
    try:
        expected = str(uuid.UUID(event_id))
    except ValueError:
        assert got[:2] == ("undecodable", "undecodable")
    else:
        assert got[0] == "decoded" and got[1].event_id == expected


@pytest.mark.parametrize(
    "millis", [MIN_MS, MIN_MS - 1, MAX_MS, MAX_MS + 1, 0, -1, 2**62, -(2**62), 2**63 - 1, -(2**63)]
)
def test_instants_at_and_beyond_the_ends_of_datetime_read_the_same(millis: int) -> None:
    event = _single(dict(VALID_EVENT, occurred_at=millis))
    got = _same(CODECS.decode_change_event, CODECS.decode_change_event_reference, event)
    assert (got[0] == "decoded") == (MIN_MS <= millis <= MAX_MS)
    for field in ("occurred_at", "applied_at"):
        change = dict(VALID_CHANGE, **{field: millis})
        batch = CAT.encode("feature_change_batch", {"dataset": "d", "changes": [VALID_CHANGE, change]})
        _same(CODECS.decode_feature_changes, CODECS.decode_feature_changes_reference, batch)
        _same(
            CODECS.decode_feature_change, CODECS.decode_feature_change_reference, CAT.encode("feature_change", change)
        )


def _with_extra_symbol(name: str, enum: str, record: dict[str, Any], field: str) -> bytes:
    """``record`` written as ``name`` whose enum ``enum`` has one more symbol, chosen for ``field``: an index the
    real schema does not have, under the real schema's fingerprint."""
    raw = json.loads(CAT.latest(name).path.read_text(encoding="utf-8"))

    def widen(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("type") == "enum" and node.get("name") == enum:
                return dict(node, symbols=[*node["symbols"], "UNKNOWN"])
            return {k: widen(v) for k, v in node.items()}
        if isinstance(node, list):
            return [widen(v) for v in node]
        return node

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(widen(raw)), dict(record, **{field: "UNKNOWN"}))
    return MAGIC + CAT.latest(name).fingerprint + buf.getvalue()


@pytest.mark.parametrize(
    ("name", "enum", "field"), [("change_event", "Operation", "operation"), ("feature_change", "ChangeKind", "kind")]
)
def test_an_enum_index_out_of_range_fails_the_same(name: str, enum: str, field: str) -> None:
    data = _with_extra_symbol(name, enum, VALID_EVENT if name == "change_event" else VALID_CHANGE, field)
    for fast, reference in PAIRS[name]:
        assert _same(fast, reference, data)[:2] == ("undecodable", "undecodable")


def test_a_geometry_encoding_out_of_range_fails_the_same() -> None:
    raw = json.loads(CAT.latest("change_event").path.read_text(encoding="utf-8"))
    geometry = raw["fields"][8]["type"][1]
    geometry["fields"][0]["type"]["symbols"].append("UNKNOWN")
    buf = io.BytesIO()
    record = dict(VALID_EVENT, geometry=dict(VALID_EVENT["geometry"], encoding="UNKNOWN"))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(raw), record)
    data = MAGIC + CAT.latest("change_event").fingerprint + buf.getvalue()
    assert _same(CODECS.decode_change_event, CODECS.decode_change_event_reference, data)[0] == "undecodable"


# -- the fast path is the one taken, and its pieces stay in step with the schemas ----------------------------


class _NoReference(Codecs):
    """Codecs whose reference path fails the test when asked: a valid message must not need it."""

    def decode_change_event_reference(self, data: bytes) -> Any:
        raise AssertionError("the fast path fell back")

    def decode_change_events_reference(self, data: bytes) -> ChangeEvents:
        raise AssertionError("the fast path fell back")

    def decode_feature_change_reference(self, data: bytes) -> Any:
        raise AssertionError("the fast path fell back")

    def decode_feature_changes_reference(self, data: bytes) -> Any:
        raise AssertionError("the fast path fell back")


def test_valid_messages_never_take_the_reference_path() -> None:
    fast = _NoReference()
    for label, data in VALID_MESSAGES.items():
        for decode, reference in _pairs(label):
            assert getattr(fast, decode.__name__)(data) == reference(data)


def test_the_schema_copies_without_logical_types_have_the_same_canonical_form() -> None:
    """Same canonical form = same fingerprint and the same binary encoding; and the copies hold no logical type."""
    for name in CAT.names():
        for sv in CAT.versions(name):
            raw = json.loads(sv.path.read_text(encoding="utf-8"))
            plain = without_logical_types(raw)
            assert "logicalType" not in json.dumps(plain)
            assert fastavro.schema.to_parsing_canonical_form(
                fastavro.parse_schema(plain, _write_hint=False)
            ) == fastavro.schema.to_parsing_canonical_form(sv.parsed)
    assert "logicalType" in json.dumps(json.loads(CAT.latest("change_event").path.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    ("name", "enum", "members"),
    [
        ("change_event", "Operation", Operation),
        ("change_event", "GeometryEncoding", GeometryEncoding),
        ("feature_change", "ChangeKind", ChangeKind),
    ],
)
def test_the_enums_have_the_schemas_symbols(name: str, enum: str, members: Any) -> None:
    found: list[list[str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "enum" and node.get("name") == enum:
                found.append(node["symbols"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for sv in CAT.versions(name):
        walk(json.loads(sv.path.read_text(encoding="utf-8")))
    assert found and all(symbols == [m.value for m in members] for symbols in found)


def test_a_catalogue_without_logical_types_in_its_reader_still_resolves_versions() -> None:
    """change_event v1 written, read as v2 through the logical-type-free copies: source_row takes its default."""
    v1 = _single(VALID_EVENT, 1)
    assert CAT.decode_plain(v1, "change_event")["source_row"] is None
    assert CODECS.decode_change_event(v1).source_row is None
    assert CODECS.decode_change_event(v1) == CODECS.decode_change_event_reference(v1)
    assert SchemaCatalogue().decode_plain(v1, "change_event")["event_id"] == VALID_EVENT["event_id"]
