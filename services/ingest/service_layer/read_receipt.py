"""``GET /v1/receipts/{id}``: the outcome of each record of one push request, readable at any time. Records
refused at the door keep their refusal; accepted ones are conforming, incomplete, refused by the pipeline, or
still pending."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from services.contract.api_tokens import Principal
from services.contract.conformance_levels import REFUSED
from services.ingest.domain.send_report import PENDING, Problem, RecordOutcome, Sent, summarise
from services.ingest.service_layer.ports import OutcomeReader, ReceiptStore
from services.ingest.service_layer.push_changes import PushResponse, error


def _door_refusal(r: dict[str, Any]) -> RecordOutcome:
    problems = tuple(
        Problem(str(e.get("rule")), str(e.get("message_en") or ""), e.get("field"), e.get("field"))
        for e in r.get("errors") or []
    )
    return RecordOutcome(REFUSED, int(r["index"]) + 1, r.get("feature_id") or "", problems)


async def read_receipt(
    receipt_id: str, principal: Principal, receipts: ReceiptStore, outcomes: OutcomeReader
) -> PushResponse:
    stored = await receipts.get(receipt_id)
    # another commune's receipt is answered like an unknown one: ids are not a way to learn of others' sends
    if stored is None or not (principal.is_admin or stored.commune == principal.commune):
        return error(404, "unknown_receipt", f"no receipt {receipt_id[:100]!r} for this token")
    accepted = stored.body.get("accepted") or []
    sent = [Sent(a["event_id"], a["commune"], a["feature_id"], int(a["index"]) + 1) for a in accepted]
    read = await outcomes.read(stored.dataset, sent)
    by_index: list[tuple[int, RecordOutcome]] = [(int(a["index"]), o) for a, o in zip(accepted, read, strict=True)]
    by_index += [(int(r["index"]), _door_refusal(r)) for r in stored.body.get("refused") or []]
    by_index.sort(key=lambda x: x[0])
    report = summarise(o for _, o in by_index)
    counts = {level: report.counts.get(level, 0) for level in ("conforming", "incomplete", REFUSED, PENDING)}
    return PushResponse(
        200,
        {
            "receipt_id": receipt_id,
            "dataset": stored.dataset,
            "commune": stored.commune,
            "received": len(by_index),
            "complete": counts[PENDING] == 0,
            "counts": counts,
            "records": [
                {
                    "index": index,
                    "feature_id": o.feature_id or None,
                    "level": o.level,
                    "problems": [asdict(p) for p in o.problems],
                }
                for index, o in by_index
            ],
        },
    )
