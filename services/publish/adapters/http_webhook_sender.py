"""Webhook deliveries over HTTP (httpx), and DNS resolution of target hosts."""

from __future__ import annotations

import asyncio
import socket

import httpx

from services.publish.domain.webhooks import AttemptResult


class HttpxWebhookSender:
    """POSTs one delivery; never raises for a network failure (it is an attempt result). Redirects are not
    followed: a receiver that moved must be re-registered, so a redirect cannot point deliveries elsewhere."""

    def __init__(self, timeout_seconds: float) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds), follow_redirects=False, trust_env=False
        )

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            return AttemptResult(None, f"{type(error).__name__}: {error}"[:500] or type(error).__name__)
        error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        return AttemptResult(response.status_code, error)

    async def close(self) -> None:
        await self._client.aclose()


class SystemResolver:
    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return sorted({str(info[4][0]) for info in infos})
