"""``odc report --commune INSEE [--dataset D] [--json]``: why a commune's records were refused, Validata-like."""

from __future__ import annotations

import json
from dataclasses import asdict

from rich.console import Console
from rich.table import Table

from services.normalise.adapters.rejection_report import outstanding_rejections
from services.normalise.domain.rejection_summary import summarise


def print_report(database_url: str, commune: str, dataset: str | None, as_json: bool, console: Console) -> int:
    records = outstanding_rejections(database_url, commune, dataset)
    summary = summarise(records)
    if as_json:
        doc = {
            "commune": commune,
            "dataset": dataset,
            "rejected_records": len(records),
            "summary": [asdict(s) for s in summary],
            "records": [asdict(r) for r in records],
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return len(records)
    if not records:
        console.print(f"commune {commune}: no outstanding rejection" + (f" in {dataset}" if dataset else ""))
        return 0
    console.print(f"commune {commune}: {len(records)} record(s) refused" + (f" in {dataset}" if dataset else ""))
    table = Table("dataset", "field", "rule", "count", "value (example)", "message", show_lines=True)
    for s in summary:
        table.add_row(
            s.dataset,
            s.field,
            s.rule,
            str(s.count),
            "" if s.example_value is None else s.example_value[:60],
            f"{s.message_fr}\n[dim]{s.message_en}[/dim]",
        )
    console.print(table)
    detail = Table("dataset", "row", "feature id", "refused at", "errors (column: rule)")
    for r in records[:50]:
        detail.add_row(
            r.dataset,
            "—" if r.source_row is None else str(r.source_row),
            r.feature_id or "—",
            r.rejected_at[:19],
            "; ".join(f"{e.get('column') or e.get('field')}: {e.get('rule')}" for e in r.errors),
        )
    console.print(detail)
    if len(records) > 50:
        console.print(f"… and {len(records) - 50} more (use --json for all)")
    return len(records)
