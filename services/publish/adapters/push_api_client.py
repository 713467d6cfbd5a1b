"""The PushApi port (service_layer/ports.py) over HTTP: the ingest service's push API and receipts, called
with the caller's own bearer token (the publisher holds no write credential of its own)."""

from __future__ import annotations

from typing import Any

import httpx

from services.publish.service_layer.ports import PushAnswer, PushApiUnavailable


class HttpPushApi:
    def __init__(self, base_url: str, timeout_seconds: float = 10.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_seconds)

    async def push(self, token: str, dataset: str, record: dict[str, Any], idempotency_key: str) -> PushAnswer:
        return await self._call(
            "POST",
            f"/v1/datasets/{dataset}/changes",
            token,
            json={"records": [record]},
            headers={"Idempotency-Key": idempotency_key},
        )

    async def receipt(self, token: str, receipt_path: str) -> PushAnswer:
        return await self._call("GET", receipt_path, token)

    async def _call(self, method: str, path: str, token: str, **kw: Any) -> PushAnswer:
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        try:
            r = await self._client.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as exc:  # refused, reset, timed out: nothing was answered
            raise PushApiUnavailable(type(exc).__name__) from exc
        try:
            body: object = r.json()
        except ValueError:
            body = {"message": r.text[:500]}
        return PushAnswer(r.status_code, body, r.headers.get("retry-after"))

    async def close(self) -> None:
        await self._client.aclose()
