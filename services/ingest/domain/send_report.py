"""What became of the records a sender sent, told so they can act on it: counts per conformance level, the
most frequent problems with the rows and columns they are in, and the command for the details. Pure.

Built the same way from the pipeline's answer (``odc send`` waits for it) and from the local validation of
``odc send --dry-run``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from services.contract.conformance_levels import CONFORMING, INCOMPLETE, REFUSED, TOLERATED_RULES

PENDING = "pending"  # no answer yet when the wait ended
TOP = 5
ROWS_SHOWN = 8


class SentRecord(Protocol):
    """What is known of a sent record (a ChangeEvent is one)."""

    @property
    def event_id(self) -> str: ...
    @property
    def commune(self) -> str: ...
    @property
    def feature_id(self) -> str: ...
    @property
    def source_row(self) -> int | None: ...


@dataclass(frozen=True)
class Sent:
    event_id: str
    commune: str
    feature_id: str
    source_row: int | None = None


@dataclass(frozen=True)
class Problem:
    rule: str
    message: str  # in words, with an example of a valid value where there is one
    field: str | None = None
    column: str | None = None  # as the sender's file names it


@dataclass(frozen=True)
class RecordOutcome:
    level: str  # conforming / incomplete / refused / pending
    row: int | None = None  # CSV line (header = 1) or feature index
    feature_id: str = ""
    problems: tuple[Problem, ...] = ()  # refusal reasons, or what an incomplete record lacks / left out


@dataclass(frozen=True)
class TopProblem:
    level: str
    rule: str
    where: str  # column (field) the problem is in
    message: str
    count: int
    rows: tuple[int, ...]


@dataclass(frozen=True)
class SendReport:
    counts: dict[str, int]
    top: tuple[TopProblem, ...] = ()
    missing: dict[str, int] = field(default_factory=dict)  # required field -> incomplete records lacking it

    @property
    def received(self) -> int:
        return sum(self.counts.values())

    @property
    def got_in(self) -> int:
        return self.counts.get(CONFORMING, 0) + self.counts.get(INCOMPLETE, 0)

    def exit_code(self) -> int:
        """0 when something got in; 1 when every record was refused; 3 when nothing is known to have got in
        yet and some records had no answer within the wait."""
        if self.got_in or self.received == 0:
            return 0
        return 3 if self.counts.get(PENDING, 0) else 1

    def lines(self, details_command: str | None) -> list[str]:
        c = self.counts
        out = [
            f"{c.get(CONFORMING, 0)} conforming, {c.get(INCOMPLETE, 0)} incomplete, {c.get(REFUSED, 0)} refused"
            + (f", {c[PENDING]} without an answer yet" if c.get(PENDING) else "")
        ]
        if self.missing:
            listed = ", ".join(f"{name} ({n})" for name, n in sorted(self.missing.items(), key=lambda x: -x[1]))
            out.append(f"incomplete records lack fields the national schema requires: {listed}")
        if self.top:
            out.append("most frequent problems:")
            for t in self.top:
                rows = ", ".join(map(str, t.rows[:ROWS_SHOWN])) + (" …" if len(t.rows) > ROWS_SHOWN else "")
                where = f"{t.where}: " if t.where else ""
                out.append(f"  {t.count} {t.level} — {where}{t.message}" + (f" (rows {rows})" if rows else ""))
        if details_command and (c.get(REFUSED) or c.get(INCOMPLETE) or c.get(PENDING)):
            out.append(f"details: {details_command}")
        return out


def _where(p: Problem) -> str:
    if p.column and p.field and p.column != p.field:
        return f"column {p.column} ({p.field})"
    if p.column:
        return f"column {p.column}"
    return p.field or ""


@dataclass
class _Group:
    message: str
    count: int = 0
    rows: list[int] = field(default_factory=list)


def summarise(outcomes: Iterable[RecordOutcome]) -> SendReport:
    counts: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    groups: dict[tuple[str, str, str], _Group] = {}
    for o in outcomes:
        counts[o.level] += 1
        for p in o.problems:
            if o.level == INCOMPLETE and p.rule == "required" and p.field:
                missing[p.field] += 1
                continue
            message = p.message.removeprefix(f"{p.field}: ") if p.field else p.message
            g = groups.setdefault((o.level, p.rule, _where(p)), _Group(message))
            g.count += 1
            if o.row is not None:
                g.rows.append(o.row)
    # refusals first, and among them what refuses a record (identity, commune, geometry) before the problems
    # that alone would only have left a value out
    ranked = sorted(groups.items(), key=lambda kv: (kv[0][0] != REFUSED, kv[0][1] in TOLERATED_RULES, -kv[1].count))
    top = tuple(
        TopProblem(level, rule, where, g.message, g.count, tuple(g.rows)) for (level, rule, where), g in ranked[:TOP]
    )
    return SendReport(dict(counts), top, dict(missing))
