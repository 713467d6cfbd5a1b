"""``odc report --commune INSEE [--dataset D] [--json]``: why a commune's records were refused, Validata-like."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict

from rich.console import Console
from rich.table import Table

from services.normalise.adapters.rejection_report import incomplete_records, outstanding_rejections
from services.normalise.domain.rejection_summary import summarise


def print_report(database_url: str, commune: str, dataset: str | None, as_json: bool, console: Console) -> int:
    records = outstanding_rejections(database_url, commune, dataset)
    incomplete = incomplete_records(database_url, commune, dataset)
    summary = summarise(records)
    lacking = Counter(name for _, _, missing, _ in incomplete for name in missing)
    if as_json:
        doc = {
            "commune": commune,
            "dataset": dataset,
            "rejected_records": len(records),
            "summary": [asdict(s) for s in summary],
            "records": [asdict(r) for r in records],
            "incomplete_records": len(incomplete),
            "incomplete_lacking": dict(lacking),
            "incomplete": [
                {"dataset": d, "feature_id": fid, "missing": missing, "dropped": dropped}
                for d, fid, missing, dropped in incomplete
            ],
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return len(records)
    if incomplete:
        listed = ", ".join(f"{name} ({n})" for name, n in lacking.most_common())
        console.print(
            f"commune {commune}: {len(incomplete)} record(s) published incomplete, left out of the national-layout "
            f"CSV until they have: {listed}"
        )
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
