"""Live checks behind every service's ``/readyz``: is the broker reachable, does the database answer?

Each check is bounded in time (a hung dependency reads as down, never as a hung probe) and its result is
kept for ``max_age`` seconds, so a load balancer polling ``/readyz`` often costs one check per interval."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` -> [(host, port)]; IPv6 as ``[::1]:9092``."""
    out = []
    for part in (p.strip() for p in bootstrap.split(",")):
        if not part:
            continue
        host, _, port = part.rpartition(":")
        out.append((host.strip("[]") or "127.0.0.1", int(port)))
    return out


async def broker_reachable(bootstrap: str, timeout: float) -> bool:
    """True when a TCP connection to one of the bootstrap brokers opens within ``timeout`` seconds. It checks
    that the broker listens, not that every partition has a leader; the producers' own deadlines cover that."""
    for host, port in bootstrap_addresses(bootstrap):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def database_answers(engine: AsyncEngine, timeout: float) -> bool:
    """True when ``SELECT 1`` returns within ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure to answer is "not ready"; the probe never raises
        return False
    return True


class CachedCheck:
    """A check whose answer is reused for ``max_age`` seconds (monotonic clock)."""

    def __init__(self, check: Callable[[], Awaitable[bool]], max_age: float = 1.0) -> None:
        self._check = check
        self._max_age = max_age
        self._at = -1e18
        self._value = False
        self._lock = asyncio.Lock()

    async def __call__(self) -> bool:
        async with self._lock:
            now = time.monotonic()
            if now - self._at >= self._max_age:
                self._value = await self._check()
                self._at = time.monotonic()
            return self._value
