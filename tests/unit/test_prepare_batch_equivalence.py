"""The normaliser's second CPU pass (docs/performance.md, "Normaliser CPU per event, second pass") changed how
some values are computed, never what they are: each faster way against the way it replaced, on generated
inputs, and prepare_batch on real signed batches against values computed the old way."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, Point, Polygon

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.datasets.field_names import FieldMatcher, fold
from services.contract.event_signature import EventAuthenticator, SigningKey, sign
from services.contract.messages import SourcePosition
from services.normalise.domain.canonical_feature import (
    EXTRA,
    CanonicalFeature,
    EventNormaliser,
    canonical_json,
    has_json_nul,
    seed_geojson,
)
from services.normalise.service_layer.process_batch import InboundMessage, prepare_batch
from tests.unit.bundled_samples import sample_events

_OLD_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def old_canonical_json(values: object) -> str:
    return json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# texts rich in backslashes, "u0000" and NULs: where the guard and the regex could part
tricky = st.text(alphabet=st.sampled_from(["\\", "u", "0", "\x00", '"', "a", "é"]), max_size=30)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text() | tricky, json_values | tricky, max_size=8))
def test_canonical_json_is_json_dumps_byte_for_byte(values: dict) -> None:  # type: ignore[type-arg]
    assert canonical_json(values) == old_canonical_json(values)


@settings(max_examples=600, deadline=None)
@given(st.one_of(tricky, st.text(), st.dictionaries(tricky, tricky | json_values, max_size=5).map(old_canonical_json)))
def test_has_json_nul_answers_as_the_regex_alone(text: str) -> None:
    assert has_json_nul(text) == (_OLD_JSON_NUL.search(text) is not None)


def test_has_json_nul_finds_a_nul_and_not_an_escaped_text() -> None:
    assert has_json_nul(old_canonical_json({"a": "x\x00y"}))
    assert has_json_nul(old_canonical_json({"a\x00": 1}))
    assert not has_json_nul(old_canonical_json({"a": "x\\u0000y"}))  # the six characters, not a NUL


names = st.text(alphabet=st.sampled_from(list("aAéÉ _-.0xyZ\u0301")), min_size=0, max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(names, min_size=1, max_size=5, unique=True),
    st.dictionaries(names, st.lists(names, max_size=2), max_size=3),
    st.lists(st.lists(names, max_size=6), min_size=1, max_size=4),
)
def test_field_matcher_remembering_targets_matches_folding_each_time(
    fields: list[str], aliases: dict[str, list[str]], records: list[list[str]]
) -> None:
    aliases = {k: v for k, v in aliases.items() if k in fields}
    matcher = FieldMatcher(fields, aliases)
    fresh = FieldMatcher(fields, aliases)

    def old_target(sent: str) -> str | None:
        if sent in fresh._exact:
            return sent
        return fresh._alias.get(sent) or fresh._folded.get(fold(sent))

    for record in records * 2:  # the second time from what the matcher remembered
        assert [matcher.target(k) for k in record] == [old_target(k) for k in record]
        attrs = {k: i for i, k in enumerate(record)}
        assert matcher.map(attrs) == FieldMatcher(fields, aliases).map(attrs)


def test_field_matcher_remembers_a_bounded_number_of_names() -> None:
    matcher = FieldMatcher(["code_insee"])
    for i in range(5000):
        assert matcher.target(f"Code INSEE {i}") is None
    assert matcher.target("Code INSEE") == "code_insee"
    assert len(matcher._targets) == 4096


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["point", "line", "polygon", "empty", "none"]),
            st.floats(-180, 180, allow_nan=False),
            st.floats(-90, 90, allow_nan=False),
        ),
        max_size=8,
    )
)
def test_geojson_seeded_per_batch_is_the_geojson_of_each(shapes: list[tuple[str, float, float]]) -> None:
    def geometry(kind: str, x: float, y: float):  # type: ignore[no-untyped-def]
        return {
            "point": Point(x, y),
            "line": LineString([(x, y), (x + 1e-3, y)]),
            "polygon": Polygon([(x, y), (x + 1e-3, y), (x, y + 1e-3)]),
            "empty": Point(),
            "none": None,
        }[kind]

    features = [CanonicalFeature({}, geometry(*s), "h") for s in shapes]
    alone = [CanonicalFeature({}, geometry(*s), "h").geometry_geojson() for s in shapes]
    seed_geojson([*features, None])
    assert [f.geometry_geojson() for f in features] == alone
    assert alone == [None if f.geometry is None else shapely.to_geojson(f.geometry) for f in features]


def test_seed_geojson_keeps_a_value_already_computed() -> None:
    f = CanonicalFeature({}, Point(4.8, 45.7), "h")
    first = f.geometry_geojson()
    seed_geojson([f])
    assert f.geometry_geojson() is first
    assert shapely.to_geojson(np.array([Point(4.8, 45.7)], dtype=object))[0] == first


def test_prepare_batch_on_signed_samples_gives_the_old_hashes_and_json() -> None:
    """Real signed batches of both sample datasets, with some messages spoilt (a bad signature, a NUL in
    the record's extra columns): candidates' canonical JSON and content hashes recomputed the old way, rejections' wording."""
    import hashlib

    codecs, norm = Codecs(), EventNormaliser(DatasetCatalogue.load())
    key = SigningKey("k", b"k" * 32, None)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    messages = []
    for dataset in ("public_toilets", "parks_gardens"):
        for i, sample in enumerate(sample_events(dataset, 60)):
            ev = replace(sample, event_id=str(uuid.UUID(int=len(messages) + 1)))  # the contract's ids are UUIDs
            if i % 7 == 3:
                ev = replace(ev, attributes={**ev.attributes, EXTRA: '{"note": "a\x00b"}'})
            value = codecs.encode_change_event(ev)
            headers = tuple(sign(value, key)) if i % 11 != 5 else ((sign(value, key)[0]), ("odc-signature", b"00"))
            messages.append(InboundMessage(value, SourcePosition("t", 0, len(messages)), headers))
    prepared = prepare_batch(
        messages, codecs=codecs, normaliser=norm, now=now, authenticator=EventAuthenticator({"k": key})
    )
    assert prepared.candidates and prepared.rejections
    for c in prepared.candidates:
        f = c.feature
        assert f is not None
        text = old_canonical_json(f.attributes)
        assert f.attributes_json() == text
        h = hashlib.sha256(text.encode("utf-8"))
        h.update(b"\x00")
        if f.geometry is not None:
            h.update(shapely.to_wkb(f.geometry, hex=False, output_dimension=2, byte_order=1, include_srid=False))
        assert f.content_hash == h.hexdigest()
    reasons = {r.reason for r in prepared.rejections}
    assert "unauthenticated" in reasons
    nul = [r for r in prepared.rejections if any(e.rule == "control_character" for e in r.errors)]
    assert len(nul) == 2 * sum(1 for i in range(60) if i % 7 == 3 and i % 11 != 5)  # signed ones, both datasets
    assert all(e.message_en == "a value contains a NUL character" for r in nul for e in r.errors if e.field is None)
