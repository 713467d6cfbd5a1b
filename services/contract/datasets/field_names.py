"""Match the field names a source sends to a schema's field names.

Exact name first, then the definition's declared aliases, then a folded form (case, accents, spaces and
punctuation ignored), so ``Code INSEE``, ``code_insee`` and ``CODE_INSEE`` all find ``code_insee``. Shared by
the ingest (to read the identity and commune of a record) and the normaliser (to validate), so both sides
agree on what a column means. Pure.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_NOT_ALNUM = re.compile(r"[^a-z0-9]")
_MAX_REMEMBERED = 4096  # sent names whose field a matcher remembers


def fold(name: str) -> str:
    """Header names that differ only in case, accents, spaces or punctuation fold to the same key."""
    s = unicodedata.normalize("NFKD", name)
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    return _NOT_ALNUM.sub("", s.lower())


@dataclass(frozen=True)
class NameMapping:
    values: dict[str, Any]  # schema field name -> value as sent
    ignored: tuple[str, ...]  # sent names that match no field
    renamed: tuple[tuple[str, str], ...]  # (sent name, schema field) where they differ


class FieldMatcher:
    """Built once per schema; ``map`` is called per record."""

    def __init__(
        self,
        field_names: Iterable[str],
        aliases: Mapping[str, Iterable[str]] | None = None,
        *,
        fold_names: bool = True,
    ) -> None:
        self.names = tuple(field_names)
        self._exact = frozenset(self.names)
        self._alias: dict[str, str] = {}
        self._folded: dict[str, str] = {}
        # sent name -> field (or None), remembered: folding a name (NFKD, regex) is most of a record's mapping
        self._targets: dict[str, str | None] = {}
        for target, alts in (aliases or {}).items():
            for alt in alts:
                self._alias[alt] = target
        if fold_names:
            for name in self.names:
                self._folded.setdefault(fold(name), name)
            for alt, target in self._alias.items():
                self._folded.setdefault(fold(alt), target)

    def target(self, sent: str) -> str | None:
        if sent in self._exact:
            return sent
        try:
            return self._targets[sent]
        except KeyError:
            pass
        found = self._alias.get(sent) or self._folded.get(fold(sent))
        if len(self._targets) < _MAX_REMEMBERED:  # bounded: a sender may invent a new name per record
            self._targets[sent] = found
        return found

    def map(self, attrs: Mapping[str, Any]) -> NameMapping:
        values: dict[str, Any] = {}
        ignored: list[str] = []
        renamed: list[tuple[str, str]] = []
        # exact names win over aliases and folded names
        for key, value in attrs.items():
            if key in self._exact:
                values[key] = value
        for key, value in attrs.items():
            if key in self._exact:
                continue
            target = self.target(key)
            if target is None or target in values:
                ignored.append(key)
                continue
            values[target] = value
            renamed.append((key, target))
        return NameMapping(values, tuple(sorted(ignored)), tuple(renamed))

    def value(self, attrs: Mapping[str, Any], field: str) -> Any:
        """The value a record carries for ``field``, under whichever name it was sent."""
        if field in attrs:
            return attrs[field]
        for key, value in attrs.items():
            if self.target(key) == field:
                return value
        return None


# Columns where files name a record's commune when it is not under the schema's commune field (CEREMA, SCDL,
# the départements' and INSEE's own exports), folded (``fold``).
COMMUNE_COLUMNS = (
    "codeinsee",
    "insee",
    "codinsee",
    "codecommuneinsee",
    "collinsee",
    "cominsee",
    "codecommune",
    "codecom",
    "inseecom",
    "depcom",
    "codgeo",
    "codeinseecommune",
)


def stated_commune(attrs: Mapping[str, Any], skip: Iterable[str] = ()) -> tuple[str, Any] | None:
    """(column, value) of the first commune-like column a record carries with a value, outside ``skip``."""
    excluded = frozenset(skip)
    by_fold = {fold(k): k for k in attrs if k not in excluded}
    for candidate in COMMUNE_COLUMNS:
        key = by_fold.get(candidate)
        if key is not None and attrs[key] not in (None, ""):
            return key, attrs[key]
    return None
