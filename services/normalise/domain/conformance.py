"""Conformance levels: which of a record's problems refuse it and which let it in as *incomplete*. Pure.

A record whose identity, commune and geometry are valid is taken in even when fields the national schema
requires are missing; it is published in the Métropole's own outputs marked ``odc:conformance`` =
``incomplete`` with ``odc:missing`` (the required fields it lacks), and left out of the national-layout CSV.
A value that breaks its field's rule is never published as it was sent: in the identity or commune field it
refuses the record; elsewhere the value is left out (``odc:dropped``), with a warning for the sender, and if
the field is required the record is incomplete. The table of cases is in docs/validation.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.contract.conformance_levels import CONFORMING, INCOMPLETE, REFUSED, TOLERATED_RULES
from services.contract.messages import FieldError


@dataclass(frozen=True)
class ConformanceVerdict:
    refusing: tuple[FieldError, ...]  # the problems that refuse the record (empty: the record gets in)
    missing: tuple[str, ...]  # required fields without a usable value
    dropped: tuple[str, ...]  # fields whose value was left out
    warnings: tuple[FieldError, ...]  # the tolerated problems, each as the sender will read it

    @property
    def refused(self) -> bool:
        return bool(self.refusing)

    @property
    def level(self) -> str:
        return REFUSED if self.refusing else INCOMPLETE if self.missing else CONFORMING


def judge_conformance(
    schema_errors: Iterable[FieldError],
    other_errors: Iterable[FieldError],
    *,
    protected: frozenset[str],
    required: frozenset[str],
) -> ConformanceVerdict:
    """``schema_errors`` are the Table Schema's verdicts on the record's fields; ``other_errors`` the
    envelope, geometry and commune problems (each refuses). ``protected`` are the identity and commune
    fields (and the primary key): any problem there refuses. ``required`` are the schema's required fields."""
    refusing = list(other_errors)
    missing: list[str] = []
    dropped: list[str] = []
    warnings: list[FieldError] = []
    for e in schema_errors:
        if e.field is None or e.field in protected or e.rule not in TOLERATED_RULES:
            refusing.append(e)
            continue
        warnings.append(e)
        if e.rule != "required":
            dropped.append(e.field)
        if e.field in required and e.field not in missing:
            missing.append(e.field)
    return ConformanceVerdict(tuple(refusing), tuple(missing), tuple(dropped), tuple(warnings))
