"""A field's pattern said in words with an example of a valid value: users never see a regular expression.
Pure.

The example is the schema's own ``example`` for the field when it matches the pattern; otherwise one is
built from the pattern (the shortest value it accepts, digits as 0, first alternatives) and kept only if the
pattern accepts it.
"""

from __future__ import annotations

import re
from re import _parser as sre_parse  # type: ignore[attr-defined]  # the re module's own parser (3.11+)
from typing import Any

# Patterns the national schemas share, said in words (English, French).
_KNOWN: dict[str, tuple[str, str]] = {
    r"^([013-9]\d|2[AB1-9])\d{3}$": (
        "5 characters: département then 3 digits",
        "5 caractères : département puis 3 chiffres",
    ),
    r"^\d[AB\d]\d{3}$": ("5 characters: département then 3 digits", "5 caractères : département puis 3 chiffres"),
    r"^69[0-9]{3}$": ("a 5-digit code of the Rhône (69...)", "un code à 5 chiffres du Rhône (69...)"),
    r"^(69[0-9]{3})$": ("a 5-digit code of the Rhône (69...)", "un code à 5 chiffres du Rhône (69...)"),
    r"^\d{5}$": ("5 digits", "5 chiffres"),
    r"^\d{9}$": ("a 9-digit SIREN number", "un numéro SIREN de 9 chiffres"),
    r"^\d{14}$": ("a 14-digit SIRET number", "un numéro SIRET de 14 chiffres"),
}
_DIGIT_CATEGORIES = {"CATEGORY_DIGIT"}
MAX_EXAMPLE = 80


def _build(parsed: Any) -> str | None:
    out: list[str] = []
    for op, arg in parsed:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "IN":
            piece = _first_of_set(arg)
            if piece is None:
                return None
            out.append(piece)
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, sub = arg
            inner = _build(sub)
            if inner is None:
                return None
            out.append(inner * max(int(low), 0))
        elif name == "SUBPATTERN":
            inner = _build(arg[-1])
            if inner is None:
                return None
            out.append(inner)
        elif name == "BRANCH":
            inner = _build(arg[1][0])
            if inner is None:
                return None
            out.append(inner)
        elif name == "AT":
            continue
        elif name == "ANY":
            out.append("a")
        elif name == "CATEGORY":
            out.append("0" if str(arg) in _DIGIT_CATEGORIES else "a")
        else:
            return None
    return "".join(out)


def _first_of_set(items: Any) -> str | None:
    for op, arg in items:
        name = str(op)
        if name == "NEGATE":
            return None
        if name == "LITERAL":
            return chr(arg)
        if name == "RANGE":
            return chr(arg[0])
        if name == "CATEGORY":
            return "0" if str(arg) in _DIGIT_CATEGORIES else "a"
    return None


def example_for(pattern: str, declared: Any = None) -> str | None:
    """A value the pattern accepts: the schema's example if it does, else one built from the pattern."""
    try:
        rx = re.compile(pattern)
    except re.error:
        return None
    if isinstance(declared, str | int) and rx.fullmatch(str(declared)):
        return str(declared)
    try:
        built = _build(sre_parse.parse(pattern))
    except (re.error, RecursionError, TypeError, ValueError):
        return None
    if built is None or len(built) > MAX_EXAMPLE or not rx.fullmatch(built):
        return None
    return built


def pattern_in_words(pattern: str, declared_example: Any = None) -> tuple[str, str]:
    """(English, French) for "the value does not have the form the field expects", with an example."""
    known = _KNOWN.get(pattern)
    en = "does not have the expected form" + (f" ({known[0]})" if known else "")
    fr = "n'a pas la forme attendue" + (f" ({known[1]})" if known else "")
    example = example_for(pattern, declared_example)
    if example is None:
        return en, fr
    return f"{en}; a valid value: {example}", f"{fr} ; exemple de valeur valide : {example}"
