"""Server-sent events: one ``version`` event per published version, resumable with Last-Event-ID. One
poll of the latest versions per interval is shared by every open stream (``VersionWatcher``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from sse_starlette import EventSourceResponse

from services.publish.adapters.read_model import PostgresReadModel
from services.publish.entrypoints.api_ports import ApiPorts, problem


class VersionWatcher:
    """One poll of every dataset's latest version per interval, shared by all open SSE streams."""

    def __init__(self, read_model: PostgresReadModel, interval: float) -> None:
        self._read_model = read_model
        self._interval = interval
        self._latest: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._listeners = 0

    async def _run(self) -> None:
        while self._listeners > 0:
            try:
                latest = await self._read_model.latest_versions()
            except Exception:  # noqa: BLE001 - the database may be restarting; streams just wait
                latest = self._latest
            if latest != self._latest:
                self._latest = latest
                async with self._changed:
                    self._changed.notify_all()
            await asyncio.sleep(self._interval)
        self._task = None

    async def wait_beyond(self, dataset: str, version: int, timeout: float) -> None:
        """Return when ``dataset`` has a version after ``version``, or after ``timeout`` seconds."""
        self._listeners += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._latest.get(dataset, 0) > version), timeout)
        except TimeoutError:
            pass
        finally:
            self._listeners -= 1


def router(ports: ApiPorts) -> APIRouter:
    r = APIRouter()
    read_model, metrics = ports.read_model, ports.metrics
    keepalive = ports.sse_keepalive_seconds
    watcher = VersionWatcher(read_model, ports.sse_poll_seconds)

    @r.get(
        "/datasets/{dataset}/events",
        summary="Server-sent events: one `version` event per published version (event id = version number)",
        description=(
            "Resume with the `Last-Event-ID` header (or `since`): every version after it is sent first, in order. "
            "Without either, the stream starts after the current version. Each event's data is the version's "
            "CloudEvent (JSON)."
        ),
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "event stream"}},
    )
    async def events(
        dataset: str,
        since: Annotated[int | None, Query(ge=0)] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> EventSourceResponse:
        ports.definition(dataset)
        if last_event_id is not None and last_event_id.strip():
            try:
                position = int(last_event_id)
            except ValueError as bad:
                raise problem(400, "Last-Event-ID must be a version number") from bad
        elif since is not None:
            position = since
        else:
            state = (await read_model.datasets()).get(dataset)
            position = int(state.last_version) if state else 0

        async def stream() -> AsyncIterator[dict[str, str]]:
            nonlocal position
            metrics.sse_clients.inc()
            try:
                while True:
                    batch = await read_model.events_after(dataset, position)
                    for version, body in batch:
                        yield {"id": str(version), "event": "version", "data": body.decode("utf-8")}
                        position = version
                    if not batch:
                        await watcher.wait_beyond(dataset, position, keepalive)
            finally:
                metrics.sse_clients.dec()

        return EventSourceResponse(stream(), ping=int(max(1, keepalive)))

    return r
