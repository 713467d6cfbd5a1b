"""Per-commune rate limiting of the push API: a token bucket per key, counted in records. Pure: the
caller passes the time. State lives in the process (one bucket set per ingest process, so N processes
allow N times the rate; documented in docs/ingest.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_seconds: float = 0.0


class TokenBuckets:
    def __init__(self, rate_per_second: float, burst: float) -> None:
        if rate_per_second <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate_per_second
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, cost: float, now: float) -> Verdict:
        """Spend ``cost`` from ``key``'s bucket if it holds that much; else say when it will.
        A cost above the burst can never pass: it is charged as a full bucket."""
        cost = min(max(cost, 1.0), self.burst)
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + max(0.0, now - b.at) * self.rate)
        b.at = now
        if b.tokens >= cost:
            b.tokens -= cost
            return Verdict(True)
        return Verdict(False, (cost - b.tokens) / self.rate)
