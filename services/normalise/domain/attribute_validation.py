"""Validate and cast attributes against a dataset's Table Schema.

Each schema is compiled once into a list of per-field check functions (no generic validator called per
row). Values arrive as communes really send them: numbers as strings, decimal commas, booleans spelt
1/oui/Oui/True, codes stored as integers (leading zeros restored when the field's pattern needs them),
French or ISO dates, header names that differ from the schema's only in case or accents.
frictionless (the library behind Validata) is the reference: tests/conformance checks that both give the
same verdict on every official example file; the deliberate differences are listed in docs/validation.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from services.contract.datasets.field_names import FieldMatcher
from services.contract.messages import FieldError
from services.normalise.domain.pattern_words import pattern_in_words

Canonical = None | bool | int | float | str

DEFAULT_TRUE = ("true", "True", "TRUE", "1")
DEFAULT_FALSE = ("false", "False", "FALSE", "0")
_FR_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_INTEGER = re.compile(r"[+-]?\d{1,18}")
_INTEGER_ZERO_FRACTION = re.compile(r"[+-]?\d{1,18}[.,]0+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_DIGITS = re.compile(r"\d{1,17}")
_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?")
_YEARMONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_FORMATS: dict[str, tuple[re.Pattern[str], str, str]] = {
    "email": (
        re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+"),
        "not an e-mail address",
        "ce n'est pas une adresse électronique",
    ),
    "uri": (
        re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s]+"),
        "not a URI (a scheme such as https: is required)",
        "ce n'est pas une URI (un schéma tel que https: est requis)",
    ),
    "uuid": (
        re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"),
        "not a UUID",
        "ce n'est pas un UUID",
    ),
}
MAX_TEXT = 100_000
MAX_ZEROS_RESTORED = 2  # INSEE codes and postcodes stored as integers lose one or two leading zeros


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


def _number_text(v: Any) -> str:
    """A sent number as text: ints as digits, integral floats without '.0'."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return str(int(v))
    return str(v) if isinstance(v, int) else repr(v)


def _string_caster(spec: Mapping[str, Any], lenient: bool) -> Callable[[Any], Canonical]:
    constraints = spec.get("constraints", {})
    pattern = re.compile(constraints["pattern"]) if "pattern" in constraints else None
    fmt = _FORMATS.get(spec.get("format", "default"))

    def restore_zeros(s: str) -> str:
        # A code stored as a number lost its leading zeros (1053 -> 01053): restore them when that is
        # what makes the value match the field's pattern.
        if not lenient or pattern is None or not _DIGITS.fullmatch(s) or pattern.fullmatch(s):
            return s
        for n in range(1, MAX_ZEROS_RESTORED + 1):
            if pattern.fullmatch("0" * n + s):
                return "0" * n + s
        return s

    def cast_string(v: Any) -> Canonical:
        if isinstance(v, bool):
            raise _Invalid("type", "expected text, got a boolean", "texte attendu, booléen reçu")
        if isinstance(v, int | float):
            if isinstance(v, float) and not math.isfinite(v):
                raise _Invalid("type", "expected text, got a non-finite number", "texte attendu, nombre non fini reçu")
            s = restore_zeros(_number_text(v))
        elif isinstance(v, str):
            if "\x00" in v:
                raise _Invalid("control_character", "contains a NUL character", "contient un caractère NUL")
            if len(v) > MAX_TEXT:
                raise _Invalid(
                    "maxLength", f"text longer than {MAX_TEXT} characters", f"texte de plus de {MAX_TEXT} caractères"
                )
            s = v.strip() if lenient else v  # text keeps its digits: "6926" is a truncated code, not a number
        else:
            raise _Invalid("type", "expected text", "texte attendu")
        if fmt is not None and not fmt[0].fullmatch(s):
            raise _Invalid("format", fmt[1], fmt[2])
        return s

    return cast_string


def _cast_integer_strict(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and _INTEGER.fullmatch(v):
        return int(v)
    raise _Invalid("type", "expected an integer", "entier attendu")


def _cast_number_strict(v: Any) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    if isinstance(v, str) and _NUMBER.fullmatch(v):
        return float(v)
    raise _Invalid("type", "expected a number", "nombre attendu")


def _cast_date_strict(v: Any) -> str:
    if isinstance(v, str) and len(v) == 10:
        try:
            return date.fromisoformat(v).isoformat()
        except ValueError:
            pass
    raise _Invalid("type", "expected a date (YYYY-MM-DD)", "date attendue (AAAA-MM-JJ)")


def _cast_integer(v: Any) -> int:
    if isinstance(v, bool):
        raise _Invalid("type", "expected an integer, got a boolean", "entier attendu, booléen reçu")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        s = v.strip().replace("\u00a0", "").replace(" ", "")
        if _INTEGER.fullmatch(s):
            return int(s)
        if _INTEGER_ZERO_FRACTION.fullmatch(s):
            return int(s.replace(",", ".").split(".")[0])
    raise _Invalid("type", "expected an integer", "entier attendu")


def _cast_number(v: Any) -> float:
    if isinstance(v, bool):
        raise _Invalid("type", "expected a number, got a boolean", "nombre attendu, booléen reçu")
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str):
        s = v.strip().replace("\u00a0", "").replace(" ", "")
        if s.count(",") == 1 and "." not in s:
            s = s.replace(",", ".")  # French decimal comma
        if not _NUMBER.fullmatch(s):
            raise _Invalid("type", "expected a number", "nombre attendu")
        f = float(s)
    else:
        raise _Invalid("type", "expected a number", "nombre attendu")
    if not math.isfinite(f):
        raise _Invalid("type", "number is not finite", "nombre non fini")
    return f


def _cast_date(v: Any) -> str:
    if isinstance(v, str):
        s = v.strip()
        if len(s) == 10:
            try:
                return date.fromisoformat(s).isoformat()
            except ValueError:
                pass
        m = _FR_DATE.match(s)
        if m:
            try:
                return date(int(m[3]), int(m[2]), int(m[1])).isoformat()
            except ValueError:
                pass
    raise _Invalid("type", "expected a date (YYYY-MM-DD or DD/MM/YYYY)", "date attendue (AAAA-MM-JJ ou JJ/MM/AAAA)")


def _cast_datetime(v: Any) -> str:
    if isinstance(v, str):
        s = v.strip()
        if len(s) >= 19 and s[10] in "T " and s[16] == ":":
            try:
                return datetime.fromisoformat(s.replace("Z", "+00:00")).isoformat()
            except ValueError:
                pass
    raise _Invalid("type", "expected an ISO 8601 date-time", "date-heure ISO 8601 attendue")


def _cast_geopoint(fmt: str) -> Callable[[Any], Canonical]:
    """Table Schema geopoint: "lon, lat" (default), [lon, lat] (array) or {"lon":…, "lat":…} (object)."""

    def cast(v: Any) -> Canonical:
        try:
            if fmt == "array":
                pair = json.loads(v) if isinstance(v, str) else v
                lon, lat = (float(pair[0]), float(pair[1])) if len(pair) == 2 else (math.nan, math.nan)
            elif fmt == "object":
                obj = json.loads(v) if isinstance(v, str) else v
                lon, lat = float(obj["lon"]), float(obj["lat"])
            else:
                lon_s, lat_s = str(v).split(",")
                lon, lat = float(lon_s), float(lat_s)
        except (ValueError, TypeError, KeyError, IndexError):
            raise _Invalid("type", "expected a geopoint 'lon, lat'", "point attendu « lon, lat »") from None
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise _Invalid("type", "geopoint out of range", "point hors des bornes")
        return f"{lon}, {lat}"

    return cast


def _cast_json(kind: type, en: str, fr: str) -> Callable[[Any], Canonical]:
    def cast(v: Any) -> Canonical:
        try:
            obj = json.loads(v) if isinstance(v, str) else v
        except ValueError:
            obj = None
        if not isinstance(obj, kind):
            raise _Invalid("type", en, fr)
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

    return cast


def _cast_regex(rx: re.Pattern[str], en: str, fr: str) -> Callable[[Any], Canonical]:
    def cast(v: Any) -> Canonical:
        if isinstance(v, str) and rx.fullmatch(v.strip()):
            return v.strip()
        raise _Invalid("type", en, fr)

    return cast


def _cast_any(v: Any) -> Canonical:
    if isinstance(v, float) and not math.isfinite(v):
        raise _Invalid("type", "number is not finite", "nombre non fini")
    return v  # type: ignore[no-any-return]


def _boolean_caster(spec: Mapping[str, Any]) -> Callable[[Any], Canonical]:
    trues = frozenset(spec.get("trueValues", DEFAULT_TRUE))
    falses = frozenset(spec.get("falseValues", DEFAULT_FALSE))
    listed = ", ".join(sorted(trues | falses))

    def cast_boolean(v: Any) -> Canonical:
        if isinstance(v, bool):
            return v
        key = str(v).strip() if isinstance(v, int | str) else None
        if key in trues:
            return True
        if key in falses:
            return False
        raise _Invalid("type", f"expected a boolean ({listed})", f"booléen attendu ({listed})")

    return cast_boolean


def _caster(spec: Mapping[str, Any], lenient: bool = True) -> Callable[[Any], Canonical]:
    ftype = spec.get("type", "string")
    if ftype == "string":
        return _string_caster(spec, lenient)
    if ftype == "boolean":
        return _boolean_caster(spec)
    if ftype == "geopoint":
        return _cast_geopoint(spec.get("format", "default"))
    simple: dict[str, Callable[[Any], Canonical]] = {
        "integer": _cast_integer if lenient else _cast_integer_strict,
        "year": _cast_integer if lenient else _cast_integer_strict,
        "number": _cast_number if lenient else _cast_number_strict,
        "date": _cast_date if lenient else _cast_date_strict,
        "datetime": _cast_datetime,
        "time": _cast_regex(_TIME, "expected a time (HH:MM[:SS])", "heure attendue (HH:MM[:SS])"),
        "yearmonth": _cast_regex(_YEARMONTH, "expected a year and month (YYYY-MM)", "année-mois attendu (AAAA-MM)"),
        "array": _cast_json(list, "expected a JSON array", "tableau JSON attendu"),
        "object": _cast_json(dict, "expected a JSON object", "objet JSON attendu"),
        "geojson": _cast_json(dict, "expected a GeoJSON object", "objet GeoJSON attendu"),
    }
    return simple.get(ftype, _cast_any)


def _bound(spec: Mapping[str, Any], value: Any) -> Any:
    """Schemas sometimes write bounds as strings ("-90"): read them in the field's type."""
    if isinstance(value, str) and spec.get("type") in ("number", "integer", "year"):
        return float(value) if spec.get("type") == "number" else int(value)
    if isinstance(value, str) and spec.get("type") == "date":
        return _cast_date(value)
    return value


def _constraint_checks(
    spec: Mapping[str, Any], pattern_words: tuple[str, str] | None = None
) -> list[Callable[[Canonical], None]]:
    """``pattern_words``: how a valid value is written (en, fr), shown instead of the pattern."""
    c = spec.get("constraints", {})
    checks: list[Callable[[Canonical], None]] = []
    if "enum" in c:
        cast = _caster({k: v for k, v in spec.items() if k != "constraints"})
        allowed = []
        for item in c["enum"]:
            try:
                allowed.append(cast(item))
            except _Invalid:
                allowed.append(item)
        shown = ", ".join(map(str, allowed[:12]))

        def check_enum(v: Canonical) -> None:
            if v not in allowed:
                raise _Invalid(
                    "enum", f"value not in the allowed list ({shown})", f"valeur hors de la liste autorisée ({shown})"
                )

        checks.append(check_enum)
    if "pattern" in c:
        rx = re.compile(c["pattern"])
        words_en, words_fr = pattern_in_words(c["pattern"], spec.get("example"))  # never the expression itself

        def check_pattern(v: Canonical) -> None:
            if isinstance(v, str) and not rx.fullmatch(v) and pattern_words is not None:
                raise _Invalid("pattern", f"expected {pattern_words[0]}", f"attendu : {pattern_words[1]}")
            if isinstance(v, str) and not rx.fullmatch(v):
                raise _Invalid("pattern", words_en, words_fr)

        checks.append(check_pattern)
    if "minimum" in c:
        lo = _bound(spec, c["minimum"])

        def check_minimum(v: Canonical) -> None:
            comparable = type(v) is type(lo) or (isinstance(v, int | float) and isinstance(lo, int | float))
            if comparable and v < lo:
                raise _Invalid("minimum", f"below the minimum {lo}", f"inférieur au minimum {lo}")

        checks.append(check_minimum)
    if "maximum" in c:
        hi = _bound(spec, c["maximum"])

        def check_maximum(v: Canonical) -> None:
            comparable = type(v) is type(hi) or (isinstance(v, int | float) and isinstance(hi, int | float))
            if comparable and v > hi:
                raise _Invalid("maximum", f"above the maximum {hi}", f"supérieur au maximum {hi}")

        checks.append(check_maximum)
    if "minLength" in c:
        min_len = int(c["minLength"])

        def check_min_length(v: Canonical) -> None:
            if isinstance(v, str) and len(v) < min_len:
                raise _Invalid("minLength", f"shorter than {min_len} characters", f"moins de {min_len} caractères")

        checks.append(check_min_length)
    if "maxLength" in c:
        max_len = int(c["maxLength"])

        def check_max_length(v: Canonical) -> None:
            if isinstance(v, str) and len(v) > max_len:
                raise _Invalid("maxLength", f"longer than {max_len} characters", f"plus de {max_len} caractères")

        checks.append(check_max_length)
    return checks


@dataclass(frozen=True)
class CompiledField:
    name: str
    required: bool
    cast: Callable[[Any], Canonical]
    checks: tuple[Callable[[Canonical], None], ...]


class CompiledSchema:
    """A Table Schema compiled once; ``validate`` is called per record in the stream.

    ``lenient`` (the stream's mode) accepts what communes really send and turns it into the canonical form:
    French dates, decimal commas, spaces in numbers, "12.0" for an integer, leading zeros lost by a
    spreadsheet, surrounding spaces, and header names that differ in case, accents or by a declared alias.
    ``lenient=False`` reads values exactly as frictionless does; the conformance test uses it to prove that
    the two modes differ by these normalisations only.
    """

    def __init__(
        self,
        table_schema: Mapping[str, Any],
        aliases: Mapping[str, tuple[str, ...]] | None = None,
        *,
        lenient: bool = True,
        pattern_words: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.lenient = lenient
        words = pattern_words or {}
        self.missing = frozenset(table_schema.get("missingValues", [""]))
        pk = table_schema.get("primaryKey") or []
        self.primary_key = frozenset([pk] if isinstance(pk, str) else pk)
        self.fields = tuple(
            CompiledField(
                name=f["name"],
                # Table Schema: primary key fields are implicitly required
                required=bool(f.get("constraints", {}).get("required", False)) or f["name"] in self.primary_key,
                cast=_caster(f, lenient),
                checks=tuple(_constraint_checks(f, words.get(f["name"]))),
            )
            for f in table_schema["fields"]
        )
        self.field_specs: tuple[Mapping[str, Any], ...] = tuple(table_schema["fields"])  # aligned with ``fields``
        self.required_fields = frozenset(f.name for f in self.fields if f.required)
        self.matcher = FieldMatcher((f.name for f in self.fields), aliases, fold_names=lenient)

    def is_missing(self, raw: Any) -> bool:
        return raw is None or (isinstance(raw, str) and (raw.strip() if self.lenient else raw) in self.missing)

    def validate(self, attrs: Mapping[str, Any]) -> AttributeResult:
        named = self.matcher.map(attrs)
        return self.validate_mapped(named.values, named.ignored, named.renamed)

    def validate_mapped(
        self,
        mapped: Mapping[str, Any],
        ignored: tuple[str, ...] = (),
        renamed: tuple[tuple[str, str], ...] = (),
    ) -> AttributeResult:
        """Validate values already keyed by schema field name."""
        values: dict[str, Canonical] = {}
        errors: list[FieldError] = []
        for f in self.fields:
            value, error = self.check_cell(f, mapped.get(f.name))
            if error is not None:
                errors.append(error)
                if error.rule != "required":
                    continue  # a value that breaks its rule is left out of ``values``
            values[f.name] = value
        return AttributeResult(values, tuple(errors), ignored, renamed)

    def check_cell(self, f: CompiledField, raw: Any) -> tuple[Canonical, FieldError | None]:
        """One field's value: its canonical form and the problem with it (``None`` when there is none).
        A missing value is ``None``, with a ``required`` error when the field requires one. The one place
        that words a field's problems: the per-record and the columnar validators (attribute_columns.py)
        both call it."""
        if self.is_missing(raw):
            if f.required:
                return None, FieldError(
                    rule="required",
                    field=f.name,
                    value=None,
                    message_en=f"{f.name}: a value is required",
                    message_fr=f"{f.name} : une valeur est obligatoire",
                )
            return None, None
        try:
            v = f.cast(raw)
            for check in f.checks:
                check(v)
        except _Invalid as bad:
            return None, FieldError(
                rule=bad.rule,
                field=f.name,
                value=_short(raw),
                message_en=f"{f.name}: {bad.en}",
                message_fr=f"{f.name} : {bad.fr}",
            )
        return v, None
