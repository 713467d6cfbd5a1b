"""The operations routes every worker serves (/metrics, /healthz, /readyz) and the uvicorn server that runs an
app inside the worker's event loop. Part of the worker runtime (worker_runtime.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.infrastructure.worker_runtime import Supervisor


@dataclass
class Operations:
    """What /metrics, /healthz and /readyz show: the registry, the loops' health flags, live checks."""

    service: str
    registry: CollectorRegistry
    health: Mapping[str, bool]
    live_checks: Mapping[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    before_scrape: Callable[[], Awaitable[None]] | None = None

    async def readiness(self) -> dict[str, bool]:
        state = dict(self.health)
        for name, check in self.live_checks.items():  # the broker and the database, asked now
            state[name] = state.get(name, True) and await check()
        return state


def operations_router(ops: Operations) -> APIRouter:
    r = APIRouter()

    @r.get("/metrics", include_in_schema=False)
    async def metrics_page() -> Response:
        if ops.before_scrape is not None:
            with contextlib.suppress(Exception):  # metrics must answer while the database is down
                await ops.before_scrape()
        return Response(generate_latest(ops.registry), media_type=CONTENT_TYPE_LATEST.split(";")[0])

    @r.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": ops.service}

    @r.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        state = await ops.readiness()
        ok = all(state.values())
        return JSONResponse({"ready": ok, **state}, status_code=200 if ok else 503)

    return r


def operations_app(ops: Operations) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(operations_router(ops))
    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the worker's event loop: the worker owns the signals and the shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(app: Any, host: str, port: int, supervisor: Supervisor) -> None:
    """Serve ``app`` until the supervisor stops; a server that cannot bind, or stops by itself, is a crash."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = _EmbeddedServer(config)

    async def stop_when_asked() -> None:
        await supervisor.stopping.wait()
        server.should_exit = True

    stopper = asyncio.create_task(stop_when_asked())
    try:
        await server.serve()
    except SystemExit as error:  # uvicorn exits when it cannot bind
        supervisor.crash(f"the HTTP server could not start on {host}:{port}", error)
    finally:
        server.should_exit = True
        stopper.cancel()
    if not supervisor.should_stop:
        supervisor.crash(f"the HTTP server on port {port} stopped by itself")
