"""The change feed (every feature change after a version, paged with a cursor) and one feature's history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from services.publish.domain import api_documents
from services.publish.domain.change_feed import BadCursor, decode_cursor, page_outcome
from services.publish.domain.feature_documents import BadFeatureId, parse_public_feature_id
from services.publish.entrypoints.api_ports import ApiPorts, problem


def router(ports: ApiPorts) -> APIRouter:
    r = APIRouter()
    base, read_model = ports.base, ports.read_model

    @r.get(
        "/datasets/{dataset}/changes",
        summary="Every feature change after version `since`, in version order, paged with a cursor",
        description=(
            "Follow `next` until it is null; each change appears exactly once across the pages. The last page "
            "gives `next_since`: ask with `since=<next_since>` next time to get only what changed after."
        ),
    )
    async def changes(
        response: Response,
        dataset: str,
        since: Annotated[int, Query(ge=0, description="Last version the client already has")] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
        cursor: Annotated[str | None, Query(description="The `next` page's cursor")] = None,
    ) -> dict[str, Any]:
        ports.definition(dataset)
        start = None
        if cursor:
            try:
                start = decode_cursor(cursor)
            except BadCursor as bad:
                raise problem(400, str(bad)) from bad
        rows = await read_model.changes(dataset, start, since, limit + 1)
        page = page_outcome([row.position for row in rows], limit, start.version if start else since)
        next_url = None
        if page.cursor is not None:
            next_url = api_documents.change_page_url(base, dataset, since, limit, page.cursor)
            response.headers["Link"] = f'<{next_url}>; rel="next"'
        return api_documents.change_page(dataset, since, rows[:limit], next_url, page.next_since)

    @r.get(
        "/datasets/{dataset}/features/{feature_id:path}/history",
        summary="Every published change of one feature (id `<commune>:<feature_id>`), oldest first",
    )
    async def feature_history(dataset: str, feature_id: Annotated[str, Path(max_length=300)]) -> dict[str, Any]:
        ports.definition(dataset)
        try:
            commune, fid = parse_public_feature_id(feature_id)
        except BadFeatureId as bad:
            raise problem(400, str(bad)) from bad
        rows = await read_model.feature_history(dataset, commune, fid)
        if not rows:
            raise problem(404, f"{dataset} has never published feature {feature_id[:100]!r}")
        pending = await read_model.pending_change_count(dataset, commune, fid)
        return api_documents.feature_history(dataset, feature_id, rows, pending)

    return r
