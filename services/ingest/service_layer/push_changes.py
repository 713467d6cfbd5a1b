"""Handle one push request of the HTTP API once its token is known: parse, authorise every record,
apply the idempotency key and the rate limit, publish the accepted records, answer.

Status codes: 202 accepted (with per-record refusals, ``record_too_large`` among them), 400 malformed body,
403 a record of another commune (nothing is published), 404 unknown dataset, 409 same key still in
progress, 413 too many records, 422 idempotency key reused with another body, 429 rate limited, 503 broker
unavailable (with Retry-After; the records were not acknowledged and are never sent after the answer).

The guarantee on 202 vs 503 (docs/ingest.md, "Outages"): 202 only once the broker acknowledged every
accepted record (acks=all). 503 when it did not within the publish deadline; the producer's buffer is then
discarded. A produce request already on the wire at that moment may still be appended by the broker: with an
Idempotency-Key the event ids are derived from the key, so the retry that the 503 asks for is applied once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from services.contract.api_tokens import Principal
from services.contract.datasets.catalogue import DatasetCatalogue
from services.ingest.domain.push_records import (
    MalformedBody,
    RecordRefusal,
    idempotent_event_ids,
    parse_batch,
    records_of,
    refuse_too_large,
)
from services.ingest.domain.rate_limit import TokenBuckets
from services.ingest.domain.source_profiles import SourceProfile
from services.ingest.service_layer.ports import (
    Clock,
    EventSink,
    IdempotencyStore,
    PublishFailed,
    ReceiptStore,
    RecordsTooLarge,
    StoreUnavailable,
)

SOURCE = "odc-http-api"


@dataclass(frozen=True)
class PushLimits:
    max_records: int = 10_000
    retry_after_seconds: int = 5  # the Retry-After of a 503


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
    profile: SourceProfile | None = None,
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
        profile=profile,
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
    if idempotency_key is not None:
        parsed = idempotent_event_ids(parsed, scope, idempotency_key, request_sha)
    try:
        try:
            await sink.publish([a.event for a in parsed.accepted])
        except RecordsTooLarge as large:  # nothing was sent: refuse those records, send the others
            parsed = refuse_too_large(parsed, large.sizes, large.limit)
            await sink.publish([a.event for a in parsed.accepted])
    except PublishFailed as failed:
        if idempotency_key is not None:
            await idempotency.release(scope, idempotency_key)
        retry_after = str(limits.retry_after_seconds)
        resp = error(
            503,
            "broker_unavailable",
            f"the broker did not acknowledge the records; they are not sent after this answer (see docs/ingest.md, "
            f"Outages); retry in {retry_after} s, with the same Idempotency-Key if you sent one: {failed}",
            retry_after=limits.retry_after_seconds,
        )
        return PushResponse(503, resp.body, {"Retry-After": retry_after})
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
        try:
            await idempotency.complete(scope, idempotency_key, 202, response_body)
        except StoreUnavailable:
            # The broker has the records: the true answer is 202. The key stays claimed without an answer, so
            # a replay gets 409 until the key expires; it never publishes the records twice.
            return PushResponse(202, response_body, {"Idempotency-Stored": "false"})
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
