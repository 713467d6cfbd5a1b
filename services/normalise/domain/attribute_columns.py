"""A batch of records validated column by column against a compiled Table Schema. Pure.

``ColumnarSchema(compiled).validate_rows(rows)`` gives, record for record, exactly what
``CompiledSchema.validate_mapped`` gives (values, errors and their wording); a Hypothesis test holds the two
to the same results (tests/unit/test_attribute_columns.py).

How: each field's rule is compiled once into a *plain-value test* for the values that need no casting and
break no constraint (text already trimmed, of an allowed length, matching its pattern, in its list; a boolean
written as one of its listed spellings; an integer or a finite float within its bounds). That test runs over
the whole column at once and the values that pass it are taken as they are. Every other value (missing,
to be cast, or invalid) goes through the per-record validator's own cell check
(``CompiledSchema.check_cell``), once per distinct value of the column, so each message is built only for
the values that fail, and worded by the one function that words them.

The plain-value test is written in Python over the column's list: pyarrow and polars were measured for it
and cost more than they save on the stream's batches (benchmarks/validation_columns.py,
docs/performance.md): turning a column of Python objects into an Arrow array walks it in Python-object
land anyway, and a batch has only hundreds of rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.contract.messages import FieldError
from services.normalise.domain.attribute_validation import (
    _FORMATS,
    DEFAULT_FALSE,
    DEFAULT_TRUE,
    MAX_TEXT,
    AttributeResult,
    Canonical,
    CompiledField,
    CompiledSchema,
    _bound,
)

_LEFT_OUT = object()  # a cell whose value breaks its rule: left out of the record's values
_MAX_EXACT_INT = 2**53  # an int this large as a float loses digits (or overflows): the cell check decides
_STRING_RULES = frozenset({"required", "enum", "pattern", "minLength", "maxLength"})
_BOOLEAN_RULES = frozenset({"required"})
_NUMBER_RULES = frozenset({"required", "minimum", "maximum"})

# A plain-value test: the column in, the canonical value of each plain cell out, ``_NOT_PLAIN`` elsewhere.
_NOT_PLAIN = object()
ColumnTest = Callable[[list[Any]], list[Any]]


def _string_test(spec: Mapping[str, Any], missing: frozenset[str], empty: Any) -> ColumnTest | None:
    c = spec.get("constraints", {})
    fmt = _FORMATS.get(spec.get("format", "default"))
    rx = re.compile(c["pattern"]) if "pattern" in c else None
    fmt_rx = fmt[0] if fmt is not None else None
    enum = frozenset(e.strip() for e in c["enum"] if isinstance(e, str)) if "enum" in c else None
    if enum is not None and any(not isinstance(e, str) for e in c["enum"]):
        return None  # a list of numbers for a text field: the cell check casts each item
    lo = int(c.get("minLength", 0))
    hi = min(int(c.get("maxLength", MAX_TEXT)), MAX_TEXT)

    def test(column: list[Any]) -> list[Any]:
        out: list[Any] = []
        append = out.append
        memo: dict[str, bool] = {}  # pattern, format and list checks once per distinct value
        for v in column:
            if v is None:
                append(empty)
                continue
            if type(v) is not str or not (lo <= len(v) <= hi) or v in missing or "\x00" in v or v != v.strip():
                append(_NOT_PLAIN)
                continue
            ok = memo.get(v)
            if ok is None:
                ok = memo[v] = (
                    (enum is None or v in enum)
                    and (rx is None or rx.fullmatch(v) is not None)
                    and (fmt_rx is None or fmt_rx.fullmatch(v) is not None)
                )
            append(v if ok else _NOT_PLAIN)
        return out

    return test


def _boolean_test(spec: Mapping[str, Any], missing: frozenset[str], empty: Any) -> ColumnTest:
    spelt = {t: True for t in spec.get("trueValues", DEFAULT_TRUE)}
    spelt.update({f: False for f in spec.get("falseValues", DEFAULT_FALSE) if f not in spelt})
    plain = {k: v for k, v in spelt.items() if isinstance(k, str) and k not in missing and k == k.strip()}

    def test(column: list[Any]) -> list[Any]:
        return [
            plain.get(v, _NOT_PLAIN) if type(v) is str else empty if v is None else v if type(v) is bool else _NOT_PLAIN
            for v in column
        ]

    return test


def _numeric_test(spec: Mapping[str, Any], as_float: bool, empty: Any) -> ColumnTest | None:
    c = spec.get("constraints", {})
    lo = _bound(spec, c["minimum"]) if "minimum" in c else None
    hi = _bound(spec, c["maximum"]) if "maximum" in c else None
    for b in (lo, hi):
        if b is not None and (type(b) not in (int, float) or not math.isfinite(b)):
            return None
    low = -math.inf if lo is None else lo
    high = math.inf if hi is None else hi

    def test_integer(column: list[Any]) -> list[Any]:
        return [
            v
            if type(v) is int and -_MAX_EXACT_INT < v < _MAX_EXACT_INT and low <= v <= high
            else empty
            if v is None
            else _NOT_PLAIN
            for v in column
        ]

    def test_number(column: list[Any]) -> list[Any]:
        out: list[Any] = []
        append = out.append
        for v in column:
            t = type(v)
            if t is float:
                append(v if low <= v <= high and math.isfinite(v) else _NOT_PLAIN)
            elif t is int and -_MAX_EXACT_INT < v < _MAX_EXACT_INT and low <= v <= high:
                append(float(v))
            elif v is None:
                append(empty)
            else:
                append(_NOT_PLAIN)
        return out

    return test_number if as_float else test_integer


def plain_value_test(spec: Mapping[str, Any], missing: frozenset[str], required: bool) -> ColumnTest | None:
    """The column test of one field (stream mode), or ``None`` when every cell goes to the cell check.
    A ``None`` cell of a field that is not required is plain too: its value is ``None``."""
    ftype = spec.get("type", "string")
    rules = set(spec.get("constraints", {}))
    empty = _NOT_PLAIN if required else None
    if ftype == "string" and rules <= _STRING_RULES:
        return _string_test(spec, missing, empty)
    if ftype == "boolean" and rules <= _BOOLEAN_RULES:
        return _boolean_test(spec, missing, empty)
    if ftype in ("integer", "year") and rules <= _NUMBER_RULES:
        return _numeric_test(spec, False, empty)
    if ftype == "number" and rules <= _NUMBER_RULES:
        return _numeric_test(spec, True, empty)
    return None


@dataclass(frozen=True)
class _Column:
    field: CompiledField
    test: ColumnTest | None


class ColumnarSchema:
    """A compiled schema's fields as column checks; built once per dataset, like the schema."""

    def __init__(self, schema: CompiledSchema) -> None:
        self.schema = schema
        self.columns = tuple(
            _Column(f, plain_value_test(spec, schema.missing, f.required) if schema.lenient else None)
            for f, spec in zip(schema.fields, schema.field_specs, strict=True)
        )
        self.names = tuple(f.name for f in schema.fields)

    def validate_rows(
        self,
        rows: Sequence[Mapping[str, Any]],
        ignored: Sequence[tuple[str, ...]] | None = None,
        renamed: Sequence[tuple[tuple[str, str], ...]] | None = None,
    ) -> list[AttributeResult]:
        """``rows`` keyed by schema field name (as ``validate_mapped`` takes them); one result per row."""
        n = len(rows)
        columns: list[list[Any]] = []
        errors: dict[int, list[FieldError]] = {}
        check_cell = self.schema.check_cell
        for col in self.columns:
            name = col.field.name
            raw = [r.get(name) for r in rows]
            values = col.test(raw) if col.test is not None else [_NOT_PLAIN] * n
            memo: dict[tuple[type, Any], tuple[Canonical, FieldError | None]] = {}
            for i in [i for i, v in enumerate(values) if v is _NOT_PLAIN]:
                cell = raw[i]
                key = (type(cell), cell) if type(cell) in (str, int, bool) or cell is None else None
                outcome = memo.get(key) if key is not None else None
                if outcome is None:
                    outcome = check_cell(col.field, cell)
                    if key is not None:
                        memo[key] = outcome
                value, error = outcome
                if error is None:
                    values[i] = value
                else:
                    errors.setdefault(i, []).append(error)
                    values[i] = None if error.rule == "required" else _LEFT_OUT
            columns.append(values)

        names = self.names
        no_ignored: tuple[str, ...] = ()
        no_renamed: tuple[tuple[str, str], ...] = ()
        results: list[AttributeResult] = []
        for i, row in enumerate(zip(*columns, strict=True) if columns else [() for _ in range(n)]):
            row_errors = errors.get(i)
            if row_errors is None:
                values_of_row = dict(zip(names, row, strict=True))
            else:
                values_of_row = {k: v for k, v in zip(names, row, strict=True) if v is not _LEFT_OUT}
            results.append(
                AttributeResult(
                    values_of_row,
                    tuple(row_errors) if row_errors else (),
                    ignored[i] if ignored is not None else no_ignored,
                    renamed[i] if renamed is not None else no_renamed,
                )
            )
        return results
