"""Retry transient failures with capped exponential backoff and jitter, forever or to a deadline.

Used where giving up would lose a message: the workers commit a batch's offsets only after its
transaction, and a batch whose transaction fails transiently is retried here until the database is back
(the consumer does not poll further meanwhile)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("odc.retry")


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    is_transient: Callable[[BaseException], bool],
    what: str,
    on_retry: Callable[[BaseException, int], None] | None = None,
    on_recovered: Callable[[], None] | None = None,
    first_delay: float = 0.2,
    max_delay: float = 10.0,
    max_attempts: int | None = None,
) -> T:
    attempt = 0
    while True:
        try:
            result = await operation()
        except Exception as error:
            if not is_transient(error):
                raise
            attempt += 1
            if max_attempts is not None and attempt >= max_attempts:
                raise
            delay = min(max_delay, first_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            log.warning(
                "transient failure in %s (attempt %d), retrying in %.2fs: %s",
                what,
                attempt,
                delay,
                str(error).splitlines()[0] if str(error) else type(error).__name__,
            )
            if on_retry is not None:
                on_retry(error, attempt)
            await asyncio.sleep(delay)
            continue
        if attempt and on_recovered is not None:
            on_recovered()
        return result
