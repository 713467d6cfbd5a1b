"""OGC API – Features Part 4 on ``/ogc``: a commune creates (POST), replaces (PUT), updates (PATCH,
``application/merge-patch+json``) and deletes (DELETE) its own features with its push token; OPTIONS tells
which methods a resource allows. Each write goes to the push API as one record (service_layer/edit_features.py)
and is answered with the stream's decision, or a 202 and the receipt to follow (``Link: <...>; rel="monitor"``).
Optimistic locking: ``If-Match`` with the ETag of the item's GET; a stale one is a 412."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from services.contract.api_tokens import Principal, authenticate, parse_token
from services.contract.size_limits import MAX_BODY_BYTES
from services.publish.domain import ogc_edits, ogc_features
from services.publish.domain.ogc_edits import BadEdit, EditAnswer
from services.publish.entrypoints.api_ports import GEOJSON, ApiPorts
from services.publish.entrypoints.ogc_routes import EXCEPTION, TAGS, ogc_error
from services.publish.service_layer.edit_features import EditContext, EditRequest, EditResult, edit_feature

WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    code: EXCEPTION for code in (400, 401, 403, 404, 409, 412, 413, 415, 422, 429, 503)
}
FEATURE_BODY = {"content": {GEOJSON: {"schema": {"type": "object"}}, "application/json": {}}, "required": True}
PATCH_BODY = {"content": {ogc_edits.MERGE_PATCH: {"schema": {"type": "object"}}}, "required": True}


def router(ports: ApiPorts) -> APIRouter:
    r = APIRouter(tags=TAGS)
    ogc, catalogue = ports.ogc, ports.catalogue

    def context() -> EditContext:
        assert ports.push_api is not None
        return EditContext(
            push_api=ports.push_api,
            features=ports.read_model,
            sleep=asyncio.sleep,
            monotonic=time.monotonic,
            new_id=lambda: str(uuid.uuid4()),
            wait_seconds=ports.edit_wait_seconds,
        )

    async def principal_of(request: Request) -> tuple[Principal, str] | Response:
        header = request.headers.get("authorization") or ""
        unauthorised = {"WWW-Authenticate": 'Bearer realm="odc"'}
        if not header.lower().startswith("bearer "):
            doc = ogc_features.exception_body(
                "Unauthorized", "an Authorization: Bearer <push token> header is required"
            )
            return JSONResponse(doc, status_code=401, headers=unauthorised)
        token = header[7:].strip()
        parsed = parse_token(token)
        principal = None if parsed is None else authenticate(token, await ports.tokens.get(parsed[0]))
        if principal is None:
            doc = ogc_features.exception_body("Unauthorized", "unknown, malformed or revoked token")
            return JSONResponse(doc, status_code=401, headers=unauthorised)
        return principal, token

    async def body_of(request: Request, accepted: tuple[str, ...]) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise BadEdit(413, "PayloadTooLarge", f"the body exceeds {MAX_BODY_BYTES} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BadEdit(413, "PayloadTooLarge", f"the body exceeds {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        return ogc_edits.parse_json_body(b"".join(chunks), request.headers.get("content-type"), accepted)

    def answer(collection_id: str, result: EditResult, created: bool) -> Response:
        a: EditAnswer = result.answer
        headers: dict[str, str] = {}
        follow = f"{ports.ingest_public_url}{a.follow}" if a.follow else None
        if follow:
            headers["Link"] = f'<{follow}>; rel="monitor"'
        if result.retry_after:
            headers["Retry-After"] = result.retry_after
        location = None
        if result.commune is not None and result.feature_id is not None:
            ogc_id = ogc_features.ogc_feature_id(result.commune, result.feature_id)
            location = f"{ogc}/collections/{collection_id}/items/{ogc_id}"
            if created and a.status in (201, 202):
                headers["Location"] = location
        if a.code is not None:
            doc: dict[str, Any] = ogc_features.exception_body(a.code, a.description or "")
            if a.details:
                doc["details"] = list(a.details)
            if follow:
                doc["receipt"] = follow
            return JSONResponse(doc, status_code=a.status, headers=headers)
        if a.status == 204:
            return Response(status_code=204, headers=headers)
        doc = {"id": None if location is None else location.rsplit("/", 1)[1], "href": location, "receipt": follow}
        if a.status == 202:
            doc["description"] = a.description
        return JSONResponse(doc, status_code=a.status, headers=headers)

    async def run(
        request: Request, operation: str, collection_id: str, feature_id: str | None, accepted: tuple[str, ...]
    ) -> Response:
        d = catalogue.get(collection_id)
        if d is None:
            return ogc_error(404, "NotFound", f"no collection {collection_id[:100]!r}")
        commune = fid = None
        if feature_id is not None:
            try:
                commune, fid = ogc_features.parse_ogc_feature_id(feature_id)
            except ogc_features.BadFeatureId as bad:
                return ogc_error(404, "NotFound", str(bad))
        who = await principal_of(request)
        if isinstance(who, Response):
            return who
        if ports.push_api is None:
            doc = ogc_features.exception_body("ServiceUnavailable", "edits are not enabled on this deployment")
            return JSONResponse(doc, status_code=503, headers={"Retry-After": "60"})
        try:
            body = None if operation == "delete" else await body_of(request, accepted)
        except BadEdit as bad:
            return ogc_error(bad.status, bad.code, str(bad))
        req = EditRequest(
            operation=operation,
            definition=d,
            principal=who[0],
            token=who[1],
            commune=commune,
            feature_id=fid,
            body=body,
            if_match=request.headers.get("if-match"),
            idempotency_key=request.headers.get("idempotency-key"),
        )
        return answer(collection_id, await edit_feature(req, context()), created=operation == "create")

    @r.post(
        "/ogc/collections/{collection_id}/items",
        summary="Create a feature (Part 4), as the commune of the push token: sent to the stream as a change event",
        description=(
            "201 with Location once the stream accepted it, 202 with Location and the receipt (Link rel=monitor) "
            "while it is still being processed, 422 with the reasons when the stream refused it."
        ),
        status_code=201,
        openapi_extra={"requestBody": FEATURE_BODY},
        responses={202: {"description": "sent, still being processed"}, **WRITE_ERRORS},
    )
    async def create(request: Request, collection_id: str) -> Response:
        return await run(request, "create", collection_id, None, ogc_edits.FEATURE_TYPES)

    @r.put(
        "/ogc/collections/{collection_id}/items/{feature_id:path}",
        summary="Replace one of the commune's features (Part 4); If-Match with its ETag for optimistic locking",
        openapi_extra={"requestBody": FEATURE_BODY},
        responses={202: {"description": "sent, still being processed"}, **WRITE_ERRORS},
    )
    async def replace(request: Request, collection_id: str, feature_id: str) -> Response:
        return await run(request, "replace", collection_id, feature_id, ogc_edits.FEATURE_TYPES)

    @r.patch(
        "/ogc/collections/{collection_id}/items/{feature_id:path}",
        summary="Update one of the commune's features with a JSON merge patch (RFC 7396, Part 4)",
        openapi_extra={"requestBody": PATCH_BODY},
        responses={202: {"description": "sent, still being processed"}, **WRITE_ERRORS},
    )
    async def update(request: Request, collection_id: str, feature_id: str) -> Response:
        return await run(request, "update", collection_id, feature_id, (ogc_edits.MERGE_PATCH, "application/json"))

    @r.delete(
        "/ogc/collections/{collection_id}/items/{feature_id:path}",
        summary="Delete one of the commune's features (Part 4)",
        status_code=204,
        responses={202: {"description": "sent, still being processed"}, **WRITE_ERRORS},
    )
    async def delete(request: Request, collection_id: str, feature_id: str) -> Response:
        return await run(request, "delete", collection_id, feature_id, ())

    def allow(methods: str) -> Response:
        return Response(status_code=204, headers={"Allow": methods, "Accept-Patch": ogc_edits.MERGE_PATCH})

    @r.options("/ogc/collections/{collection_id}/items", summary="The methods the items allow (Part 4)")
    async def items_options(collection_id: str) -> Response:
        if catalogue.get(collection_id) is None:
            return ogc_error(404, "NotFound", f"no collection {collection_id[:100]!r}")
        return allow(ogc_edits.ALLOW_ITEMS)

    @r.options("/ogc/collections/{collection_id}/items/{feature_id:path}", summary="The methods an item allows")
    async def item_options(collection_id: str, feature_id: str) -> Response:
        if catalogue.get(collection_id) is None:
            return ogc_error(404, "NotFound", f"no collection {collection_id[:100]!r}")
        return allow(ogc_edits.ALLOW_ITEM)

    return r
