"""The stream's validator agrees with frictionless (the library behind Validata) on every official example
file of the schema repositories, row by row.

Each example is read the way ``odc send`` reads it (services/ingest/domain/source_records.read_csv) and
validated with the compiled schema the normaliser uses; frictionless validates the same bytes against the
same schema.json. Columns are matched by name on both sides (frictionless ``schema_sync``), because a
streamed record has no column order. A file-level refusal (the reader cannot tell which of two same-named
columns holds the value) must be a file-level refusal on both sides.

Two checks: the validator read strictly (``lenient=False``) agrees exactly with frictionless; the stream's
lenient reading refuses a subset of that, and every cell it accepts where frictionless refuses is explained
by one of the deliberate normalisations listed in docs/validation.md (TOLERANCES below).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from frictionless import Detector, Resource, Schema

from services.ingest.domain.source_records import SourceRecord, UnreadableFile, read_csv
from services.normalise.domain.attribute_validation import CompiledSchema

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "schema-repo-examples"


def _schema_for(csv_path: Path) -> Path:
    here = sorted(csv_path.parent.glob("schema*.json"))
    if here:
        return here[0]
    up = sorted(csv_path.parent.parent.glob("schema*.json"))
    assert up, f"no schema for {csv_path}"
    return up[0]


DEFINITIONS = Path(__file__).resolve().parents[2] / "services" / "contract" / "datasets" / "definitions"
# The catalogue's datasets whose national schema the examples of a repository were written for: each such
# example is also validated against the schema the stream actually uses (which may be another version).
CATALOGUE_SCHEMAS = {
    "betagouv--SCDL-Subvention-DataSubvention": "subsidies",
    "etalab--schema-lieux-covoiturage": "carpool_places",
    "etalab--schema-stationnement": "parking",
    "openmaraude--schema-stationstaxi": "taxi_ranks",
    "datagouv--schema-fontaine-eau": "drinking_fountains",
}
CASES = [(p, _schema_for(p)) for p in sorted(EXAMPLES.glob("**/*.csv"))] + [
    (p, DEFINITIONS / dataset / "schema.json")
    for folder, dataset in CATALOGUE_SCHEMAS.items()
    for p in sorted((EXAMPLES / folder).glob("**/*.csv"))
]


def _case_id(case: tuple[Path, Path]) -> str:
    csv_path, schema_path = case
    against = schema_path.parent.name if schema_path.is_relative_to(DEFINITIONS) else "own schema"
    return f"{csv_path.relative_to(EXAMPLES)} vs {against}"


@dataclass(frozen=True)
class Verdict:
    file_refused: bool
    invalid_cells: frozenset[tuple[int, str]]  # (1-based data row position, field)
    rows: int

    @property
    def invalid_rows(self) -> frozenset[int]:
        return frozenset(r for r, _ in self.invalid_cells)


def frictionless_verdict(csv_path: Path, schema_path: Path) -> Verdict:
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    resource = Resource(
        path=csv_path.name,
        basepath=str(csv_path.parent),
        schema=Schema.from_descriptor(schema),
        detector=Detector(schema_sync=True),
    )
    task = resource.validate(limit_errors=100_000).tasks[0]
    if any(
        e.type in ("error", "resource-error", "scheme-error", "format-error", "encoding-error") for e in task.errors
    ):
        return Verdict(True, frozenset(), 0)
    rows = int(task.stats.get("rows") or 0)
    pk = schema.get("primaryKey") or []
    pk = [pk] if isinstance(pk, str) else pk
    # an empty primary key is a row error without a field name for frictionless; the stream names the field
    invalid = {
        (e.row_number - 1, e.field_name or (pk[0] if e.type == "primary-key" and len(pk) == 1 else ""))
        for e in task.errors
        if getattr(e, "row_number", None)
    }
    # Table Schema: primary key fields are required
    required = {f["name"] for f in schema["fields"] if f.get("constraints", {}).get("required")} | set(pk)
    # A required column absent from the header is one file-level error for frictionless: every row of the
    # file lacks a required value. The stream has no file, so it refuses each record; compare like for like.
    for e in task.errors:
        if e.type == "missing-label" and e.field_name in required:
            invalid |= {(row, e.field_name) for row in range(1, rows + 1)}
    return Verdict(False, frozenset(invalid), rows)


def _records(csv_path: Path) -> list[SourceRecord] | None:
    try:
        return list(read_csv(csv_path.read_bytes()))
    except UnreadableFile:
        return None


def project_verdict(
    csv_path: Path, schema_path: Path, *, lenient: bool = False
) -> tuple[Verdict, dict[int, list[str]]]:
    compiled = CompiledSchema(json.loads(schema_path.read_text(encoding="utf-8")), lenient=lenient)
    records = _records(csv_path)
    if records is None:
        return Verdict(True, frozenset(), 0), {}
    invalid: set[tuple[int, str]] = set()
    why: dict[int, list[str]] = {}
    for i, record in enumerate(records, start=1):
        result = compiled.validate(record.attributes)
        invalid |= {(i, e.field or "") for e in result.errors}
        if result.errors:
            why[i] = [f"{e.field}:{e.rule}" for e in result.errors]
    return Verdict(False, frozenset(invalid), len(records)), why


@pytest.mark.parametrize(("csv_path", "schema_path"), CASES, ids=[_case_id(c) for c in CASES])
def test_row_verdicts_agree_with_frictionless(csv_path: Path, schema_path: Path) -> None:
    reference = frictionless_verdict(csv_path, schema_path)
    ours, why = project_verdict(csv_path, schema_path)
    assert ours.file_refused == reference.file_refused
    assert ours.rows == reference.rows
    assert ours.invalid_rows == reference.invalid_rows, {
        "only we refuse": {r: why[r] for r in sorted(ours.invalid_rows - reference.invalid_rows)},
        "only frictionless refuses": sorted(reference.invalid_rows - ours.invalid_rows),
    }
    # and for the same reasons: the same (row, field) pairs are refused
    assert ours.invalid_cells == reference.invalid_cells


_FR_DATE = re.compile(r"\d{1,2}/\d{1,2}/\d{4}")
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")


def tolerance(record: SourceRecord, field: str) -> str | None:
    """Which deliberate normalisation of the stream accepts this cell that frictionless refuses."""
    if field not in record.attributes:
        return "header name differing in case or accents, mapped to the schema's field"
    raw = str(record.attributes[field])
    if _FR_DATE.fullmatch(raw.strip()):
        return "French date DD/MM/YYYY"
    if _DECIMAL_COMMA.fullmatch(raw.strip()):
        return "decimal comma"
    if raw != raw.strip():
        return "surrounding spaces"
    return None


TOLERANCES = {
    "header name differing in case or accents, mapped to the schema's field",
    "French date DD/MM/YYYY",
    "decimal comma",
    "surrounding spaces",
}


@pytest.mark.parametrize(("csv_path", "schema_path"), CASES, ids=[_case_id(c) for c in CASES])
def test_the_stream_differs_from_frictionless_only_by_documented_normalisations(
    csv_path: Path, schema_path: Path
) -> None:
    strict, _ = project_verdict(csv_path, schema_path)
    lenient, why = project_verdict(csv_path, schema_path, lenient=True)
    assert lenient.file_refused == strict.file_refused
    assert lenient.invalid_cells <= strict.invalid_cells, why
    records = _records(csv_path) or []
    for row, field in strict.invalid_cells - lenient.invalid_cells:
        assert tolerance(records[row - 1], field) in TOLERANCES, (row, field, records[row - 1].attributes.get(field))


def test_the_documented_normalisations_do_show_on_the_examples() -> None:
    seen = set()
    for csv_path, schema_path in CASES:
        strict, _ = project_verdict(csv_path, schema_path)
        lenient, _ = project_verdict(csv_path, schema_path, lenient=True)
        records = _records(csv_path) or []
        seen |= {tolerance(records[r - 1], f) for r, f in strict.invalid_cells - lenient.invalid_cells}
    assert seen == TOLERANCES - {"surrounding spaces"}


def test_the_examples_exercise_both_verdicts() -> None:
    """The agreement above must not be vacuous: some rows are refused, most are accepted."""
    refused = accepted = files_refused = 0
    for csv_path, schema_path in CASES:
        v = frictionless_verdict(csv_path, schema_path)
        files_refused += v.file_refused
        refused += len(v.invalid_rows)
        accepted += v.rows - len(v.invalid_rows)
    assert len(CASES) >= 30
    assert refused >= 10 and accepted >= 50 and files_refused >= 1
