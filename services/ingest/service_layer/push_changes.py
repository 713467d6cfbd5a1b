"""Handle one push request of the HTTP API once its token is known: parse, authorise every record,
apply the idempotency key and the rate limit, publish the accepted records, answer.

Status codes: 202 accepted (with per-record refusals), 400 malformed body, 403 a record of another
commune (nothing is published), 404 unknown dataset, 409 same key still in progress, 413 too many
records, 422 idempotency key reused with another body, 429 rate limited, 503 broker unavailable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from services.contract.api_tokens import Principal
from services.contract.datasets.catalogue import DatasetCatalogue
from services.ingest.domain.push_records import MalformedBody, RecordRefusal, parse_batch, records_of
from services.ingest.domain.rate_limit import TokenBuckets
from services.ingest.service_layer.ports import Clock, EventSink, IdempotencyStore, PublishFailed, ReceiptStore

SOURCE = "odc-http-api"


@dataclass(frozen=True)
class PushLimits:
    max_records: int = 10_000


@dataclass(frozen=True)
class PushResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str, message: str, **extra: Any) -> PushResponse:
    return PushResponse(status, {"error": code, "message": message, **extra})


def refusal_doc(r: RecordRefusal) -> dict[str, Any]:
    return {
        "index": r.index,
        "reason": r.reason,
        "message": r.message,
        "feature_id": r.feature_id,
        "errors": [asdict(e) for e in r.errors],
    }


def decode_json(body: bytes) -> Any:
    """The decoded body, or MalformedBody with a message a person can act on."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"the body is not UTF-8 text (byte {exc.start})") from exc
    if not text.strip():
        raise MalformedBody("the body is empty; expected a JSON object")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise MalformedBody("the JSON is nested too deeply") from exc


async def push_changes(
    *,
    principal: Principal,
    dataset: str,
    body: bytes,
    idempotency_key: str | None,
    catalogue: DatasetCatalogue,
    sink: EventSink,
    idempotency: IdempotencyStore,
    buckets: TokenBuckets,
    clock: Clock,
    new_id: Callable[[], str],
    limits: PushLimits,
    receipts: ReceiptStore | None = None,
) -> PushResponse:
    definition = catalogue.get(dataset)
    if definition is None:
        return error(404, "unknown_dataset", f"unknown dataset {dataset[:100]!r}", known=catalogue.ids())
    try:
        doc = decode_json(body)
        count = len(records_of(doc))
    except MalformedBody as bad:
        return error(400, "malformed_body", str(bad))
    if count > limits.max_records:
        return error(413, "too_many_records", f"{count} records; at most {limits.max_records} per request")

    scope = principal.bucket
    request_sha = hashlib.sha256(f"{dataset}\x00".encode() + body).hexdigest()
    if idempotency_key is not None:
        previous = await idempotency.get(scope, idempotency_key)
        if previous is not None:
            return _replay(previous, request_sha)

    now = clock.now()
    parsed = parse_batch(
        doc,
        definition,
        commune=principal.commune,
        source=SOURCE,
        sequence=int(now.timestamp() * 1_000_000),
        occurred_at=now,
        new_id=new_id,
    )
    if parsed.forbidden:
        return PushResponse(
            403,
            {
                "error": "forbidden_commune",
                "message": f"this token writes for commune {principal.commune} only; nothing was published",
                "refused": [refusal_doc(r) for r in parsed.forbidden],
            },
        )
    verdict = buckets.take(scope, max(1, count), clock.monotonic())
    if not verdict.allowed:
        retry = max(1, int(verdict.retry_after_seconds + 0.999))
        resp = error(429, "rate_limited", f"too many records for {scope}; retry in {retry}s", retry_after=retry)
        return PushResponse(resp.status, resp.body, {"Retry-After": str(retry)})
    if idempotency_key is not None and not await idempotency.claim(scope, idempotency_key, request_sha):
        previous = await idempotency.get(scope, idempotency_key)
        if previous is not None:
            return _replay(previous, request_sha)
    events = [a.event for a in parsed.accepted]
    try:
        await sink.publish(events)
    except PublishFailed as failed:
        if idempotency_key is not None:
            await idempotency.release(scope, idempotency_key)
        resp = error(503, "broker_unavailable", f"the records could not be queued, retry later: {failed}")
        return PushResponse(503, resp.body, {"Retry-After": "5"})
    response_body = {
        "dataset": dataset,
        "commune": principal.commune,
        "received": count,
        "accepted": [
            {
                "index": a.index,
                "event_id": a.event.event_id,
                "feature_id": a.event.feature_id,
                "commune": a.event.commune,
                "operation": a.event.operation.value.lower(),
            }
            for a in parsed.accepted
        ],
        "refused": [refusal_doc(r) for r in parsed.refused],
        "status_url": f"/v1/communes/{principal.commune}/status" if principal.commune else None,
    }
    if receipts is not None:  # each record's outcome in the pipeline, readable later (read_receipt.py)
        receipt_id = new_id()
        response_body["receipt_id"] = receipt_id
        response_body["receipt_url"] = f"/v1/receipts/{receipt_id}"
        await receipts.save(receipt_id, principal.commune, dataset, response_body)
    if idempotency_key is not None:
        await idempotency.complete(scope, idempotency_key, 202, response_body)
    return PushResponse(202, response_body)


def _replay(previous: Any, request_sha: str) -> PushResponse:
    if previous.request_sha256 != request_sha:
        return error(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body; use a new key for a new request",
        )
    if previous.status is None:
        return error(409, "request_in_progress", "a request with this Idempotency-Key is still being handled")
    return PushResponse(previous.status, previous.body or {}, {"Idempotent-Replayed": "true"})
