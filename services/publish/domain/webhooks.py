"""Webhook rules, pure: signing and verifying deliveries, the retry schedule, what an attempt's result means,
and which target URLs are refused.

Signatures follow Standard Webhooks (https://www.standardwebhooks.com, the scheme of Svix; documented in
docs/api.md): ``webhook-id`` (the version's CloudEvent id), ``webhook-timestamp`` (unix seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``, one signature per secret in
force (space-separated, several during a rotation's overlap). Secrets are issued as ``whsec_<base64>``; the
key is the base64-decoded part. Subscriptions registered before Standard Webhooks (``legacy``) keep getting
the old header ``X-Odc-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`` as well, for
one release."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Odc-Signature"  # legacy (subscriptions registered before Standard Webhooks), one release
DEFAULT_TOLERANCE_SECONDS = 300
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
SECRET_MIN_BYTES, SECRET_MAX_BYTES = 24, 64  # the Standard Webhooks recommendation
GONE = 410  # Standard Webhooks: a receiver answering 410 Gone is disabled, not retried


class BadSecret(ValueError):
    pass


def standard_secret(random_bytes: bytes) -> str:
    """A signing secret as Standard Webhooks issues them: ``whsec_`` and the base64 of random bytes."""
    return SECRET_PREFIX + base64.b64encode(random_bytes).decode("ascii")


def check_standard_secret(secret: str) -> None:
    """Refuse a secret a subscriber chose unless it is ``whsec_<base64 of 24..64 bytes>``."""
    if not secret.startswith(SECRET_PREFIX):
        raise BadSecret(f"the secret must be {SECRET_PREFIX}<base64> (Standard Webhooks), or omitted to get one")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadSecret(f"the part after {SECRET_PREFIX} is not base64") from exc
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise BadSecret(f"the secret must hold {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes (base64-encoded)")


def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret: the base64-decoded part of a ``whsec_`` secret; a legacy secret (any text,
    registered before Standard Webhooks) is its UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret[len(SECRET_PREFIX) :])
    return secret.encode("utf-8")


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256(key, "<msg_id>.<timestamp>.<body>")>``."""
    mac = hmac.new(signing_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def delivery_signature_headers(
    msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str], *, legacy: bool
) -> dict[str, str]:
    """The signing headers of one delivery: Standard Webhooks, one signature per secret in force (the
    current one first); plus the old ``X-Odc-Signature`` for a legacy subscription."""
    headers = {
        WEBHOOK_ID_HEADER: msg_id,
        WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
        WEBHOOK_SIGNATURE_HEADER: " ".join(standard_signature(s, msg_id, timestamp, body) for s in secrets),
    }
    if legacy:
        signatures = ",".join(f"v1={signature(s, timestamp, body)}" for s in secrets)
        headers[SIGNATURE_HEADER] = f"t={timestamp},{signatures}"
    return headers


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
    disable_subscription: bool = False  # the receiver answered 410 Gone


def decide(
    result: AttemptResult, attempts_before: int, policy: RetryPolicy, now: datetime, jitter: float
) -> DeliveryDecision:
    """After one attempt: delivered on 2xx; otherwise retried later, or dead-lettered once the attempts
    are used up. Every non-2xx answer but 410 is retried: a receiver's 4xx is as often a deploy in progress
    as a permanent refusal, and the dead letter (replayable) bounds the cost. 410 Gone is the receiver saying
    it wants no more (Standard Webhooks): the subscription is disabled and the delivery stays pending, kept
    for a re-enabled subscription, never lost."""
    attempts = attempts_before + 1
    if result.succeeded:
        return DeliveryDecision(DeliveryState.DELIVERED, attempts, None)
    if result.status == GONE:
        return DeliveryDecision(DeliveryState.PENDING, attempts, None, disable_subscription=True)
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
