"""OGC API – Features Part 4 writes by a commune: create (POST), replace (PUT), update (PATCH, RFC 7396 merge
patch) and delete (DELETE) of one feature. Each becomes one record sent to the push API with the caller's own
token, so it is signed and published on the input topic like any other change event, and the stream decides;
this waits a short while for that decision (the push API's receipt) and answers with it, or with a 202 and the
receipt to follow when the stream has not decided yet. Nothing is written to the database here."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.contract.api_tokens import Principal
from services.contract.datasets.catalogue import DatasetDefinition
from services.publish.domain import ogc_edits
from services.publish.domain.ogc_edits import BadEdit, EditAnswer
from services.publish.service_layer.ports import FeatureReader, PushApi, PushApiUnavailable


@dataclass(frozen=True)
class EditContext:
    push_api: PushApi
    features: FeatureReader
    sleep: Callable[[float], Awaitable[None]]
    monotonic: Callable[[], float]
    new_id: Callable[[], str]
    wait_seconds: float = 5.0
    poll_seconds: float = 0.2


@dataclass(frozen=True)
class EditRequest:
    operation: str  # create | replace | update | delete
    definition: DatasetDefinition
    principal: Principal
    token: str
    commune: str | None = None  # the feature's commune (from its id); None for a create
    feature_id: str | None = None  # None for a create
    body: Any = None  # the parsed JSON body (Feature, or merge patch)
    if_match: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class EditResult:
    answer: EditAnswer
    commune: str | None = None  # the feature written (for Location)
    feature_id: str | None = None
    retry_after: str | None = None


def _current_doc(geometry_geojson: str | None, attributes_json: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": None if geometry_geojson is None else json.loads(geometry_geojson),
        "properties": json.loads(attributes_json),
    }


async def edit_feature(req: EditRequest, ctx: EditContext) -> EditResult:
    try:
        return await _edit(req, ctx)
    except BadEdit as bad:
        return EditResult(EditAnswer(bad.status, bad.code, str(bad)), req.commune, req.feature_id)
    except PushApiUnavailable as down:
        return EditResult(
            EditAnswer(503, "ServiceUnavailable", f"the push API is unavailable ({down}); nothing was sent"),
            req.commune,
            req.feature_id,
            retry_after="5",
        )


async def _edit(req: EditRequest, ctx: EditContext) -> EditResult:
    d, who = req.definition, req.principal
    if req.commune is not None and not who.may_write(req.commune):
        raise BadEdit(403, "Forbidden", f"this token writes for commune {who.commune}, not for {req.commune}")
    if req.operation == "create":
        feature = ogc_edits.feature_of(req.body)
        fid = ogc_edits.new_feature_id(d, feature, ctx.new_id())
        commune = who.commune
        if fid is not None and commune is not None and await ctx.features.item(d.id, commune, fid) is not None:
            raise BadEdit(409, "Conflict", f"feature {fid!r} of commune {commune} exists: replace it with PUT")
        record = ogc_edits.upsert_record(feature, d, commune, fid)
    else:
        assert req.commune is not None and req.feature_id is not None
        current = await ctx.features.item(d.id, req.commune, req.feature_id)
        tag = None if current is None else ogc_edits.feature_etag(current.geometry_geojson, current.attributes_json)
        if not ogc_edits.if_match_holds(req.if_match, tag):
            raise BadEdit(
                412,
                "PreconditionFailed",
                "If-Match does not match the feature's current ETag: it changed since it was read; read it again",
            )
        if current is None:
            raise BadEdit(404, "NotFound", f"no feature {req.feature_id!r} of commune {req.commune} in {d.id}")
        if req.operation == "delete":
            record = ogc_edits.delete_record(req.commune, req.feature_id)
        else:
            now = _current_doc(current.geometry_geojson, current.attributes_json)
            if req.operation == "update":
                if not isinstance(req.body, dict):
                    raise BadEdit(400, "InvalidBody", "a merge patch (RFC 7396) must be a JSON object")
                feature = ogc_edits.feature_of({**ogc_edits.merge_patch(now, req.body), "type": "Feature"})
            else:
                feature = ogc_edits.feature_of(req.body)
            ogc_edits.identity_kept(d, now["properties"], feature.get("properties") or {})
            record = ogc_edits.upsert_record(feature, d, req.commune, req.feature_id)
    pushed = await ctx.push_api.push(req.token, d.id, record, req.idempotency_key or ctx.new_id())
    body = pushed.body if isinstance(pushed.body, dict) else {}
    accepted = body.get("accepted") or [] if pushed.status == 202 else []
    if not accepted:
        result = ogc_edits.refusal_of_push(pushed.status, pushed.body)
        return EditResult(result, req.commune, req.feature_id, pushed.retry_after)
    commune, fid = str(accepted[0]["commune"]), str(accepted[0]["feature_id"])
    receipt = body.get("receipt_url")
    level, problems = await _wait_for_outcome(req.token, receipt, ctx)
    return EditResult(ogc_edits.answer_of_outcome(req.operation, level, receipt, problems), commune, fid)


async def _wait_for_outcome(token: str, receipt: Any, ctx: EditContext) -> tuple[str | None, Any]:
    """The record's level in the receipt once the stream decided, or (None, ()) when the wait ends first."""
    if not isinstance(receipt, str):
        return None, ()
    deadline = ctx.monotonic() + ctx.wait_seconds
    while True:
        try:
            got = await ctx.push_api.receipt(token, receipt)
        except PushApiUnavailable:
            got = None
        if got is not None and got.status == 200 and isinstance(got.body, dict):
            records = got.body.get("records") or []
            if records and records[0].get("level") != "pending":
                return str(records[0].get("level")), records[0].get("problems") or ()
        if ctx.monotonic() + ctx.poll_seconds > deadline:
            return None, ()
        await ctx.sleep(ctx.poll_seconds)
