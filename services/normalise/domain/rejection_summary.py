"""Group a commune's outstanding rejections the way Validata reports a file: one line per (dataset, field,
rule), with how many records broke it, an example value and the message in French and English. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RejectedRecord:
    dataset: str
    commune: str
    feature_id: str
    rejected_at: str  # ISO 8601
    reason: str
    errors: Sequence[Mapping[str, Any]]  # field, rule, value, message_fr, message_en, column
    source_row: int | None = None  # CSV line or feature index in the sent file


@dataclass(frozen=True)
class SummaryLine:
    dataset: str
    field: str
    rule: str
    count: int
    example_value: str | None
    example_feature_id: str
    message_fr: str
    message_en: str


def summarise(records: Iterable[RejectedRecord]) -> list[SummaryLine]:
    lines: dict[tuple[str, str, str], SummaryLine] = {}
    for r in records:
        for e in r.errors:
            key = (r.dataset, str(e.get("field") or ""), str(e.get("rule") or ""))
            known = lines.get(key)
            if known is None:
                lines[key] = SummaryLine(
                    r.dataset,
                    key[1],
                    key[2],
                    1,
                    None if e.get("value") is None else str(e["value"]),
                    r.feature_id,
                    str(e.get("message_fr") or ""),
                    str(e.get("message_en") or ""),
                )
            else:
                lines[key] = SummaryLine(**{**known.__dict__, "count": known.count + 1})
    return sorted(lines.values(), key=lambda s: (s.dataset, -s.count, s.field, s.rule))
