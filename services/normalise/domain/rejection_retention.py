"""How much of a rejected message is kept, and for how long (pure: no clock, no I/O).

A rejection keeps the first bytes of the original message with the SHA-256 and size of the whole, so a
flood of large junk costs a bounded amount per row; rows older than the retention are pruned."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class BoundedOriginal:
    prefix: bytes  # the first ``limit`` bytes (the whole message when it is not longer)
    sha256: str  # hex digest of the whole message
    size: int  # length of the whole message

    @property
    def whole(self) -> bool:
        return len(self.prefix) == self.size


def bounded_original(original: bytes, limit: int) -> BoundedOriginal:
    if limit < 0:
        raise ValueError("the prefix limit cannot be negative")
    return BoundedOriginal(original[:limit], hashlib.sha256(original).hexdigest(), len(original))


def retention_cutoff(now: datetime, retention_days: float) -> datetime:
    """Rows recorded before this instant are past the retention (rejections, relayed change rows)."""
    if retention_days <= 0:
        raise ValueError("the retention must be positive")
    return now - timedelta(days=retention_days)
