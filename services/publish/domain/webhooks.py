"""Webhook rules, pure: signing and verifying deliveries, the retry schedule, what an attempt's result means,
and which target URLs are refused.

Signature (documented in docs/api.md): header ``X-Odc-Signature: t=<unix seconds>,v1=<hex>`` where
``hex = HMAC-SHA256(secret, "<t>.<body>")``. A receiver recomputes it over the raw body, compares in
constant time, refuses a ``t`` outside its tolerance window (replay), and dedupes on the event id."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Odc-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, now: int, tolerance: int = DEFAULT_TOLERANCE_SECONDS
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its timestamp is within ``tolerance`` of now."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


# -- retries --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    initial_delay_seconds: float = 1.0
    max_delay_seconds: float = 600.0


def backoff_delay(policy: RetryPolicy, attempts_made: int, jitter: float) -> float:
    """Delay before the next attempt after ``attempts_made`` failed ones: exponential, capped, with full
    jitter in [50 %, 100 %] (``jitter`` is a number in [0, 1) from an injected source)."""
    base = min(policy.max_delay_seconds, policy.initial_delay_seconds * 2.0 ** max(0, attempts_made - 1))
    return base * (0.5 + 0.5 * jitter)


class DeliveryState(str, Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class AttemptResult:
    """What happened on the wire: an HTTP status, or an error before any status (refused, timeout...)."""

    status: int | None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class DeliveryDecision:
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None


def decide(
    result: AttemptResult, attempts_before: int, policy: RetryPolicy, now: datetime, jitter: float
) -> DeliveryDecision:
    """After one attempt: delivered on 2xx; otherwise retried later, or dead-lettered once the attempts
    are used up. Every non-2xx answer is retried: a receiver's 4xx is as often a deploy in progress as a
    permanent refusal, and the dead letter (replayable) bounds the cost."""
    attempts = attempts_before + 1
    if result.succeeded:
        return DeliveryDecision(DeliveryState.DELIVERED, attempts, None)
    if attempts >= policy.max_attempts:
        return DeliveryDecision(DeliveryState.DEAD, attempts, None)
    delay = backoff_delay(policy, attempts, jitter)
    return DeliveryDecision(DeliveryState.PENDING, attempts, now + timedelta(seconds=delay))


# -- targets --------------------------------------------------------------------------------------------


class TargetRefused(ValueError):
    pass


def check_url_shape(url: str) -> tuple[str, int]:
    """The host and port of an acceptable webhook URL (http or https, a host, no credentials)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("the URL must be http:// or https://")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.username or parts.password:
        raise TargetRefused("credentials in the URL are not accepted; sign with the secret instead")
    if len(url) > 2000:
        raise TargetRefused("the URL is longer than 2000 characters")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise TargetRefused("the URL's port is not a number") from exc
    return parts.hostname, port


def refused_address(address: str) -> str | None:
    """Why an address may not be a webhook target (loopback, private, link-local...), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for attr, label in (
        ("is_loopback", "loopback"),
        ("is_private", "private"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_unspecified", "unspecified"),
    ):
        if getattr(ip, attr):
            return f"{address} is a {label} address"
    return None


def check_target_addresses(addresses: Iterable[str], allow_private: bool) -> None:
    """Refuse a target that resolves to nothing, or (unless allowed) to any non-public address: a
    subscriber must not make this service call into its own network."""
    addresses = list(addresses)
    if not addresses:
        raise TargetRefused("the host does not resolve")
    if allow_private:
        return
    for a in addresses:
        reason = refused_address(a)
        if reason is not None:
            raise TargetRefused(f"{reason}; webhook targets must be public (see webhook_allow_private_targets)")


def dataset_matches(filter_: tuple[str, ...] | None, dataset: str) -> bool:
    return filter_ is None or dataset in filter_


JitterSource = Callable[[], float]
