"""Standard Webhooks signing (issue #15.4), checked with the official `standardwebhooks` library: every
delivery's headers verify, any tampering is refused, both secrets sign during a rotation, a legacy
subscription also gets the old header, and a 410 Gone disables instead of retrying."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.publish.domain.webhooks import (
    SIGNATURE_HEADER,
    AttemptResult,
    BadSecret,
    DeliveryState,
    RetryPolicy,
    check_standard_secret,
    decide,
    delivery_signature_headers,
    standard_secret,
    verify_signature,
)

T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


def new_secret() -> str:
    return standard_secret(os.urandom(32))


@settings(max_examples=50)
@given(st.binary(max_size=2000), st.text(min_size=1, max_size=60).filter(lambda s: " " not in s and "\n" not in s))
def test_every_delivery_verifies_with_the_official_library_and_tampering_does_not(body: bytes, msg_id: str) -> None:
    secret, now = new_secret(), int(time.time())
    headers = delivery_signature_headers(msg_id, now, body, (secret,), legacy=False)
    Webhook(secret).verify(body, headers, json_parse=False)
    for forged in (
        (body + b" ", headers),
        (body, {**headers, "webhook-id": msg_id + "x"}),
        (body, {**headers, "webhook-timestamp": str(now + 1)}),
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(forged[0], forged[1], json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers, json_parse=False)
    assert SIGNATURE_HEADER not in headers


def test_a_delivery_without_the_headers_or_too_old_is_refused_by_the_library() -> None:
    secret, body = new_secret(), b'{"id":"d:v1"}'
    with pytest.raises(WebhookVerificationError, match="Missing required headers"):
        Webhook(secret).verify(body, {"X-Odc-Signature": "t=1,v1=00"})
    old = delivery_signature_headers("d:v1", int(time.time()) - 3600, body, (secret,), legacy=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, old)


def test_during_a_rotation_both_secrets_sign_and_each_verifies() -> None:
    new, previous, body, now = new_secret(), new_secret(), b'{"id":"d:v2"}', int(time.time())
    headers = delivery_signature_headers("d:v2", now, body, (new, previous), legacy=False)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert Webhook(new).verify(body, headers) == {"id": "d:v2"}
    assert Webhook(previous).verify(body, headers) == {"id": "d:v2"}
    after = delivery_signature_headers("d:v2", now, body, (new,), legacy=False)  # the overlap is over
    with pytest.raises(WebhookVerificationError):
        Webhook(previous).verify(body, after)


def test_a_legacy_subscription_gets_the_old_header_as_well() -> None:
    raw, body, now = "a-secret-from-before-0123456789", b'{"id":"d:v3"}', int(time.time())
    headers = delivery_signature_headers("d:v3", now, body, (raw,), legacy=True)
    assert verify_signature(raw, headers[SIGNATURE_HEADER], body, now)
    assert not verify_signature(raw + "x", headers[SIGNATURE_HEADER], body, now)
    Webhook(raw.encode()).verify(body, headers)  # a legacy secret's key is its UTF-8 bytes


def test_issued_secrets_are_whsec_base64_of_random_bytes() -> None:
    secret = standard_secret(bytes(range(32)))
    assert secret == "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    check_standard_secret(secret)
    Webhook(secret)  # the library accepts it


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("0123456789abcdef-old-style", "whsec_"),
        ("whsec_c2hvcnQ=", "24 to 64 bytes"),
        ("whsec_" + "QUFB" * 30, "24 to 64 bytes"),
        ("whsec_not base64!", "not base64"),
    ],
)
def test_chosen_secrets_must_be_standard(secret: str, message: str) -> None:
    with pytest.raises(BadSecret, match=message):
        check_standard_secret(secret)


def test_410_gone_disables_the_subscription_and_keeps_the_delivery() -> None:
    d = decide(AttemptResult(410, "HTTP 410"), 0, RetryPolicy(5, 1.0, 60.0), T0, 0.0)
    assert d.disable_subscription and d.state is DeliveryState.PENDING and d.next_attempt_at is None
    for status in (404, 500, None):
        other = decide(AttemptResult(status, "x"), 0, RetryPolicy(5, 1.0, 60.0), T0, 0.0)
        assert not other.disable_subscription and other.next_attempt_at is not None
