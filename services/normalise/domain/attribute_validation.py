"""Validate and cast attributes against a dataset's Table Schema.

Each schema is compiled once into a list of per-field check functions (no generic validator called per
row). Values arrive as communes really send them: numbers as strings, decimal commas, booleans spelt
1/oui/Oui/True, codes stored as integers (leading zeros restored when the field's pattern wants a fixed
number of digits), French or ISO dates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from services.contract.messages import FieldError

Canonical = None | bool | int | float | str

DEFAULT_TRUE = ("true", "True", "TRUE", "1")
DEFAULT_FALSE = ("false", "False", "FALSE", "0")
_FIXED_DIGITS = re.compile(r"^\^\(?(?:\[0-9\]|\\d)\{(\d+)\}\)?\$$")
_PREFIXED_DIGITS = re.compile(r"^\^\(?([0-9]+)(?:\[0-9\]|\\d)\{(\d+)\}\)?\$$")
_FR_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
MAX_TEXT = 100_000


class _Invalid(Exception):
    def __init__(self, rule: str, en: str, fr: str) -> None:
        self.rule, self.en, self.fr = rule, en, fr


@dataclass(frozen=True)
class AttributeResult:
    values: dict[str, Canonical]
    errors: tuple[FieldError, ...]
    ignored_fields: tuple[str, ...]  # sent but not in the schema
    field_mapping: tuple[tuple[str, str], ...]  # (sent name, schema name) where they differ


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "…"


def _fixed_width(pattern: str | None) -> int | None:
    if not pattern:
        return None
    m = _FIXED_DIGITS.match(pattern)
    if m:
        return int(m.group(1))
    m = _PREFIXED_DIGITS.match(pattern)
    if m:
        return len(m.group(1)) + int(m.group(2))
    return None


def _caster(spec: Mapping[str, Any]) -> Callable[[Any], Canonical]:
    ftype = spec.get("type", "string")
    constraints = spec.get("constraints", {})
    if ftype == "string":
        width = _fixed_width(constraints.get("pattern"))

        def cast_string(v: Any) -> Canonical:
            if isinstance(v, bool):
                raise _Invalid("type", "expected text, got a boolean", "texte attendu, booléen reçu")
            if isinstance(v, int):
                s = str(v)
                return s.zfill(width) if width and len(s) < width else s
            if isinstance(v, float):
                if not math.isfinite(v):
                    raise _Invalid(
                        "type", "expected text, got a non-finite number", "texte attendu, nombre non fini reçu"
                    )
                if v.is_integer():
                    s = str(int(v))
                    return s.zfill(width) if width and len(s) < width else s
                return repr(v)
            if isinstance(v, str):
                if len(v) > MAX_TEXT:
                    raise _Invalid(
                        "maxLength",
                        f"text longer than {MAX_TEXT} characters",
                        f"texte de plus de {MAX_TEXT} caractères",
                    )
                return v.strip()
            raise _Invalid("type", "expected text", "texte attendu")

        return cast_string
    if ftype == "integer":

        def cast_integer(v: Any) -> Canonical:
            if isinstance(v, bool):
                raise _Invalid("type", "expected an integer, got a boolean", "entier attendu, booléen reçu")
            if isinstance(v, int):
                return v
            if isinstance(v, float) and math.isfinite(v) and v.is_integer():
                return int(v)
            if isinstance(v, str):
                s = v.strip().replace("\u00a0", "").replace(" ", "")
                if re.fullmatch(r"[+-]?\d{1,18}", s):
                    return int(s)
                if re.fullmatch(r"[+-]?\d{1,18}[.,]0+", s):
                    return int(s.replace(",", ".").split(".")[0])
            raise _Invalid("type", "expected an integer", "entier attendu")

        return cast_integer
    if ftype == "number":

        def cast_number(v: Any) -> Canonical:
            if isinstance(v, bool):
                raise _Invalid("type", "expected a number, got a boolean", "nombre attendu, booléen reçu")
            if isinstance(v, int | float):
                f = float(v)
            elif isinstance(v, str):
                s = v.strip().replace("\u00a0", "").replace(" ", "")
                if s.count(",") == 1 and "." not in s:
                    s = s.replace(",", ".")
                if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", s):
                    raise _Invalid("type", "expected a number", "nombre attendu")
                f = float(s)
            else:
                raise _Invalid("type", "expected a number", "nombre attendu")
            if not math.isfinite(f):
                raise _Invalid("type", "number is not finite", "nombre non fini")
            return f

        return cast_number
    if ftype == "boolean":
        trues = set(spec.get("trueValues", DEFAULT_TRUE))
        falses = set(spec.get("falseValues", DEFAULT_FALSE))

        def cast_boolean(v: Any) -> Canonical:
            if isinstance(v, bool):
                return v
            key = str(v).strip() if isinstance(v, int | str) else None
            if key in trues:
                return True
            if key in falses:
                return False
            raise _Invalid(
                "type",
                f"expected a boolean ({', '.join(sorted(trues | falses))})",
                f"booléen attendu ({', '.join(sorted(trues | falses))})",
            )

        return cast_boolean
    if ftype == "date":

        def cast_date(v: Any) -> Canonical:
            if isinstance(v, str):
                s = v.strip()
                try:
                    return (
                        date.fromisoformat(s[:10]).isoformat() if len(s) in (10,) else date.fromisoformat(s).isoformat()
                    )
                except ValueError:
                    m = _FR_DATE.match(s)
                    if m:
                        try:
                            return date(int(m[3]), int(m[2]), int(m[1])).isoformat()
                        except ValueError:
                            pass
            raise _Invalid(
                "type", "expected a date (YYYY-MM-DD or DD/MM/YYYY)", "date attendue (AAAA-MM-JJ ou JJ/MM/AAAA)"
            )

        return cast_date
    if ftype == "datetime":

        def cast_datetime(v: Any) -> Canonical:
            if isinstance(v, str):
                try:
                    return datetime.fromisoformat(v.strip().replace("Z", "+00:00")).isoformat()
                except ValueError:
                    pass
            raise _Invalid("type", "expected an ISO 8601 date-time", "date-heure ISO 8601 attendue")

        return cast_datetime
    if ftype == "year":

        def cast_year(v: Any) -> Canonical:
            value = _caster({"type": "integer"})(v)
            assert isinstance(value, int)
            return value

        return cast_year

    def cast_any(v: Any) -> Canonical:
        if isinstance(v, float) and not math.isfinite(v):
            raise _Invalid("type", "number is not finite", "nombre non fini")
        return v  # type: ignore[no-any-return]

    return cast_any


def _constraint_checks(spec: Mapping[str, Any]) -> list[Callable[[Canonical], None]]:
    c = spec.get("constraints", {})
    checks: list[Callable[[Canonical], None]] = []
    if "enum" in c:
        allowed = list(c["enum"])

        def check_enum(v: Canonical) -> None:
            if v not in allowed:
                shown = ", ".join(map(str, allowed[:12]))
                raise _Invalid(
                    "enum", f"value not in the allowed list ({shown})", f"valeur hors de la liste autorisée ({shown})"
                )

        checks.append(check_enum)
    if "pattern" in c:
        rx = re.compile(c["pattern"])

        def check_pattern(v: Canonical) -> None:
            if isinstance(v, str) and not rx.fullmatch(v):
                raise _Invalid(
                    "pattern", f"does not match the pattern {c['pattern']}", f"ne respecte pas le motif {c['pattern']}"
                )

        checks.append(check_pattern)
    for key, op, en, fr in (
        ("minimum", lambda v, b: v < b, "below the minimum", "inférieur au minimum"),
        ("maximum", lambda v, b: v > b, "above the maximum", "supérieur au maximum"),
    ):
        if key in c:
            bound = c[key]

            def check_bound(
                v: Canonical, bound: Any = bound, op: Any = op, key: str = key, en: str = en, fr: str = fr
            ) -> None:
                if isinstance(v, int | float) and not isinstance(v, bool) and op(v, bound):
                    raise _Invalid(key, f"{en} {bound}", f"{fr} {bound}")
                if isinstance(v, str) and isinstance(bound, str) and op(v, bound):
                    raise _Invalid(key, f"{en} {bound}", f"{fr} {bound}")

            checks.append(check_bound)
    if "minLength" in c:
        lo = int(c["minLength"])

        def check_min_length(v: Canonical) -> None:
            if isinstance(v, str) and len(v) < lo:
                raise _Invalid("minLength", f"shorter than {lo} characters", f"moins de {lo} caractères")

        checks.append(check_min_length)
    if "maxLength" in c:
        hi = int(c["maxLength"])

        def check_max_length(v: Canonical) -> None:
            if isinstance(v, str) and len(v) > hi:
                raise _Invalid("maxLength", f"longer than {hi} characters", f"plus de {hi} caractères")

        checks.append(check_max_length)
    return checks


def _fold(name: str) -> str:
    """Header names that differ only in case, accents, spaces or punctuation map to the same key."""
    import unicodedata

    s = unicodedata.normalize("NFKD", name)
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    return re.sub(r"[^a-z0-9]", "", s.lower())


@dataclass(frozen=True)
class _CompiledField:
    name: str
    required: bool
    cast: Callable[[Any], Canonical]
    checks: tuple[Callable[[Canonical], None], ...]


class CompiledSchema:
    """A Table Schema compiled once; ``validate`` is called per record in the stream."""

    def __init__(self, table_schema: Mapping[str, Any]) -> None:
        self.missing = frozenset(table_schema.get("missingValues", [""]))
        self.fields = tuple(
            _CompiledField(
                name=f["name"],
                required=bool(f.get("constraints", {}).get("required", False)),
                cast=_caster(f),
                checks=tuple(_constraint_checks(f)),
            )
            for f in table_schema["fields"]
        )
        self._by_name = {f.name: f for f in self.fields}
        self._by_folded = {_fold(f.name): f.name for f in self.fields}

    def _map_names(self, attrs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], list[tuple[str, str]]]:
        mapped: dict[str, Any] = {}
        ignored: list[str] = []
        renamed: list[tuple[str, str]] = []
        for key, value in attrs.items():
            if key in self._by_name:
                mapped[key] = value
                continue
            target = self._by_folded.get(_fold(key))
            if target is not None and target not in attrs and target not in mapped:
                mapped[target] = value
                renamed.append((key, target))
            else:
                ignored.append(key)
        return mapped, ignored, renamed

    def validate(self, attrs: Mapping[str, Any]) -> AttributeResult:
        mapped, ignored, renamed = self._map_names(attrs)
        values: dict[str, Canonical] = {}
        errors: list[FieldError] = []
        for f in self.fields:
            raw = mapped.get(f.name)
            if raw is None or (isinstance(raw, str) and raw.strip() in self.missing):
                values[f.name] = None
                if f.required:
                    errors.append(
                        FieldError(
                            rule="required",
                            field=f.name,
                            value=None,
                            message_en=f"{f.name}: a value is required",
                            message_fr=f"{f.name} : une valeur est obligatoire",
                        )
                    )
                continue
            try:
                v = f.cast(raw)
                for check in f.checks:
                    check(v)
            except _Invalid as bad:
                errors.append(
                    FieldError(
                        rule=bad.rule,
                        field=f.name,
                        value=_short(raw),
                        message_en=f"{f.name}: {bad.en}",
                        message_fr=f"{f.name} : {bad.fr}",
                    )
                )
                continue
            values[f.name] = v
        return AttributeResult(values, tuple(errors), tuple(sorted(ignored)), tuple(renamed))
