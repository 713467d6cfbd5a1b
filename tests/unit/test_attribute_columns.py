"""The columnar validator (services/normalise/domain/attribute_columns.py) against the per-record one: same
values, same errors, same wording, record for record, on generated schemas and records and on real ones."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import ChangeEvent, FieldError, Operation
from services.ingest.domain.source_records import UnreadableFile, read_csv
from services.normalise.domain.attribute_columns import ColumnarSchema
from services.normalise.domain.attribute_validation import Canonical, CompiledField, CompiledSchema
from services.normalise.domain.canonical_feature import Candidate, EventNormaliser
from tests.unit.bundled_samples import sample_events

CATALOGUE = DatasetCatalogue.load()
NORMALISER = EventNormaliser(CATALOGUE)
EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "schema-repo-examples"


def same(schema: CompiledSchema, rows: list[dict[str, Any]]) -> None:
    expected = [schema.validate_mapped(r) for r in rows]
    got = ColumnarSchema(schema).validate_rows(rows)
    assert got == expected
    # dict equality ignores order: the record's fields also come in the same order
    assert [list(r.values) for r in got] == [list(r.values) for r in expected]


# --- generated schemas and records ----------------------------------------------------------------------

WORDS = ["Oui", "oui", "non", "1", "0", "true", "False", "Commune", "Métropole", "69123", "01053", "2A004", "x"]
texts = st.one_of(
    st.sampled_from(["", " ", "None", "NA", " Oui", "non ", "\x00", "a\x00b", "12,5", "1 234", "2019.0", "31/03/2024"]),
    st.sampled_from(WORDS),
    st.sampled_from(WORDS).map(lambda w: f" {w} "),
    st.text(max_size=12),
    st.text(alphabet="0123456789", min_size=1, max_size=7),
    st.text(alphabet="ab ", min_size=0, max_size=14),
)
cells = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    st.integers(-5, 3000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 12.5, 1e300, 1500.0, 2100.0, 2100.5]),
    texts,
)
bounds = st.one_of(st.none(), st.integers(-10, 2100), st.sampled_from(["0", "-90", 1.5]))


@st.composite
def field_specs(draw: st.DrawFn, name: str) -> dict[str, Any]:
    ftype = draw(st.sampled_from(["string", "string", "boolean", "integer", "number", "year", "date", "any"]))
    spec: dict[str, Any] = {"name": name, "type": ftype}
    c: dict[str, Any] = {}
    if draw(st.booleans()):
        c["required"] = True
    if ftype == "string":
        if draw(st.booleans()):
            c["pattern"] = draw(st.sampled_from(["^[0-9]{5}$", "^(69[0-9]{3})$", "[a-z]+", "^\\d[AB\\d]\\d{3}$"]))
        if draw(st.booleans()):
            c["enum"] = draw(st.lists(st.sampled_from([*WORDS, " Oui ", 3]), min_size=1, max_size=4))
        if draw(st.booleans()):
            c["maxLength"] = draw(st.integers(0, 8))
        if draw(st.booleans()):
            c["minLength"] = draw(st.integers(0, 4))
        if draw(st.integers(0, 5)) == 0:
            spec["format"] = draw(st.sampled_from(["email", "uri", "uuid"]))
    elif ftype == "boolean" and draw(st.booleans()):
        spec["trueValues"] = draw(st.lists(st.sampled_from([*WORDS, " vrai", "None"]), min_size=1, max_size=4))
        spec["falseValues"] = draw(st.lists(st.sampled_from([*WORDS, "faux "]), min_size=1, max_size=4))
    elif ftype in ("integer", "number", "year"):
        lo, hi = draw(bounds), draw(bounds)
        if lo is not None:
            c["minimum"] = lo
        if hi is not None:
            c["maximum"] = hi
        if draw(st.integers(0, 5)) == 0:
            c["enum"] = [1, 2, 3]
    if c:
        spec["constraints"] = c
    return spec


@st.composite
def schemas_and_rows(draw: st.DrawFn) -> tuple[CompiledSchema, list[dict[str, Any]]]:
    names = [f"f{i}" for i in range(draw(st.integers(1, 5)))]
    table_schema: dict[str, Any] = {"fields": [draw(field_specs(n)) for n in names]}
    if draw(st.booleans()):
        table_schema["missingValues"] = draw(st.lists(st.sampled_from(["", "None", "NA", "0", " "]), max_size=3))
    schema = CompiledSchema(table_schema, lenient=draw(st.integers(0, 4)) > 0)
    row = st.dictionaries(st.sampled_from(names), cells, max_size=len(names))
    rows = draw(st.lists(row, min_size=0, max_size=30))
    if rows and draw(st.booleans()):
        rows = rows + [dict(rows[0])] * 3  # repeated values: the per-column memo
    return schema, rows


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas_and_rows())
def test_columnar_equals_per_record_on_generated_schemas_and_records(case: tuple[CompiledSchema, list[dict]]) -> None:
    schema, rows = case
    same(schema, rows)


# --- real records ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["public_toilets", "parks_gardens"])
def test_columnar_equals_per_record_on_the_bundled_samples(dataset: str) -> None:
    schema = NORMALISER._schemas[dataset]
    rows = [dict(schema.matcher.map(e.attributes).values) for e in sample_events(dataset, 1000)]
    same(schema, rows)


def _example_cases() -> list[tuple[Path, Path]]:
    out = []
    for p in sorted(EXAMPLES.glob("**/*.csv")):
        here = sorted(p.parent.glob("schema*.json")) or sorted(p.parent.parent.glob("schema*.json"))
        if here:
            out.append((p, here[0]))
    return out


@pytest.mark.parametrize("lenient", [True, False])
def test_columnar_equals_per_record_on_the_official_example_files(lenient: bool) -> None:
    """Every example file of the schema repositories (the frictionless conformance fixtures), both modes."""
    cases = _example_cases()
    assert len(cases) >= 20
    for csv_path, schema_path in cases:
        schema = CompiledSchema(json.loads(schema_path.read_text(encoding="utf-8")), lenient=lenient)
        try:
            records = [r.attributes for r in read_csv(csv_path.read_bytes())]
        except UnreadableFile:
            continue
        rows = [dict(schema.matcher.map(r).values) for r in records]
        same(schema, rows)


# --- messages are built only for the values that need the cell check ---------------------------------------


class CountingSchema(CompiledSchema):
    calls: list[tuple[str, Any]]

    def check_cell(self, f: CompiledField, raw: Any) -> tuple[Canonical, FieldError | None]:
        self.calls.append((f.name, raw))
        return super().check_cell(f, raw)


def test_plain_values_skip_the_cell_check_and_each_other_value_is_checked_once() -> None:
    schema = CountingSchema(
        {
            "fields": [
                {"name": "code", "type": "string", "constraints": {"required": True, "pattern": "^[0-9]{5}$"}},
                {"name": "ok", "type": "boolean", "trueValues": ["oui"], "falseValues": ["non"]},
                {"name": "n", "type": "integer", "constraints": {"minimum": 0}},
                {"name": "s", "type": "number"},
            ]
        }
    )
    schema.calls = []
    plain = [{"code": "69123", "ok": "oui", "n": i, "s": 1.5} for i in range(200)]
    results = ColumnarSchema(schema).validate_rows(plain)
    assert schema.calls == []  # nothing to cast, nothing wrong: no cell check, no message built
    assert all(r.errors == () for r in results)
    assert results[7].values == {"code": "69123", "ok": True, "n": 7, "s": 1.5}

    bad = [{"code": "6912", "ok": "peut-être", "n": -1, "s": "1,5"}] * 50
    results = ColumnarSchema(schema).validate_rows(plain[:10] + bad)
    assert sorted(schema.calls) == [("code", "6912"), ("n", -1), ("ok", "peut-être"), ("s", "1,5")]  # once each
    assert [e.rule for e in results[-1].errors] == ["pattern", "type", "minimum"]
    assert results[-1].errors[0].message_en.startswith("code: does not have the expected form")
    assert results[-1].values == {"s": 1.5}  # decimal comma cast; the three bad values left out
    assert results[:10] == ColumnarSchema(schema).validate_rows(plain[:10])


# --- the normaliser over a batch -----------------------------------------------------------------------

TOILETS = sample_events("public_toilets", 40)
PARKS = sample_events("parks_gardens", 20)
NOW = datetime(2026, 11, 2, tzinfo=UTC)  # the day after the samples' occurred_at: none in the future
toilet_fields = sorted({k for e in TOILETS for k in e.attributes})


@st.composite
def batches(draw: st.DrawFn) -> list[ChangeEvent]:
    events = draw(st.lists(st.sampled_from(TOILETS + PARKS), min_size=0, max_size=25))
    out = []
    for ev in events:
        attrs = dict(ev.attributes)
        for name in draw(
            st.lists(st.sampled_from([*toilet_fields, "codinsee", "nom", "gid", "surf_tot_m2"]), max_size=3)
        ):
            attrs[name] = draw(cells)
        changed = replace(ev, attributes=attrs)
        kind = draw(st.integers(0, 9))
        if kind == 0:
            changed = replace(changed, operation=Operation.DELETE)
        elif kind == 1:
            changed = replace(changed, dataset="no_such_dataset")
        elif kind == 2:
            changed = replace(changed, commune="6912")
        out.append(changed)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_normalise_batch_equals_normalise_per_event(events: list[ChangeEvent]) -> None:
    assert NORMALISER.normalise_batch(events, NOW) == [NORMALISER.normalise(e, NOW) for e in events]


def test_normalise_batch_on_real_batches_of_two_datasets() -> None:
    events = sample_events("public_toilets", 300) + sample_events("parks_gardens", 100)
    events = events[::2] + events[1::2]  # interleaved
    got = NORMALISER.normalise_batch(events, NOW)
    assert got == [NORMALISER.normalise(e, NOW) for e in events]
    assert sum(isinstance(r, Candidate) for r in got) == len(events)  # the samples are valid records
