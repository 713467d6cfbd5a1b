"""Read a connector's source: a local path (or file:// URL) or an http(s) URL, with a size limit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from services.ingest.service_layer.ports import SnapshotUnavailable


class SnapshotFetcherAdapter:
    def __init__(self, *, timeout: float = 60.0, max_bytes: int = 200 * 1024 * 1024) -> None:
        self._timeout = timeout
        self._max = max_bytes

    async def fetch(self, source: str) -> bytes:
        scheme = urlsplit(source).scheme.lower()
        if scheme in ("http", "https"):
            return await self._http(source)
        path = Path(urlsplit(source).path if scheme == "file" else source)
        try:
            size = path.stat().st_size
            if size > self._max:
                raise SnapshotUnavailable(f"{path}: {size} bytes, more than the {self._max} allowed")
            return await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise SnapshotUnavailable(f"cannot read {path}: {exc.strerror or exc}") from exc

    async def _http(self, url: str) -> bytes:
        try:
            async with (
                httpx.AsyncClient(timeout=self._timeout, follow_redirects=True) as client,
                client.stream("GET", url) as resp,
            ):
                if resp.status_code != 200:
                    raise SnapshotUnavailable(f"GET {url}: HTTP {resp.status_code}")
                chunks, size = [], 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > self._max:
                        raise SnapshotUnavailable(f"GET {url}: more than {self._max} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise SnapshotUnavailable(f"GET {url}: {exc}") from exc
