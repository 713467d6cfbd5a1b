"""Push API tokens (format, hash, constant-time check) and the per-commune token bucket."""

from __future__ import annotations

import pytest

from services.contract.api_tokens import (
    Principal,
    StoredToken,
    authenticate,
    format_token,
    hash_secret,
    parse_token,
)
from services.ingest.domain.rate_limit import TokenBuckets

SECRET = "A" * 43
TOKEN = format_token("0123456789ab", SECRET)
STORED = StoredToken("0123456789ab", "69266", hash_secret(SECRET), False)


@pytest.mark.parametrize(
    ("text", "stored", "expected"),
    [
        (TOKEN, STORED, Principal("0123456789ab", "69266")),
        (f"  {TOKEN} ", STORED, Principal("0123456789ab", "69266")),
        (TOKEN, StoredToken("0123456789ab", None, hash_secret(SECRET), False), Principal("0123456789ab", None)),
        (TOKEN, StoredToken("0123456789ab", "69266", hash_secret(SECRET), True), None),  # revoked
        (format_token("0123456789ab", "B" * 43), STORED, None),  # wrong secret
        (TOKEN, None, None),  # unknown id
        (TOKEN, StoredToken("ba9876543210", "69266", hash_secret(SECRET), False), None),  # another row
        ("odc_0123456789ab", STORED, None),
        ("Bearer " + TOKEN, STORED, None),
        ("", STORED, None),
    ],
)
def test_authenticate(text: str, stored: StoredToken | None, expected: Principal | None) -> None:
    assert authenticate(text, stored) == expected


def test_only_a_hash_of_the_secret_is_kept_and_tokens_parse_back() -> None:
    assert SECRET not in STORED.secret_sha256 and len(STORED.secret_sha256) == 64
    assert parse_token(TOKEN) == ("0123456789ab", SECRET)


def test_principals_write_their_own_commune_admin_writes_all() -> None:
    commune, admin = Principal("t1", "69266"), Principal("t2", None)
    assert commune.may_write("69266") and not commune.may_write("69123")
    assert admin.may_write("69123") and admin.is_admin
    assert commune.bucket == "69266" and admin.bucket == "admin:t2"


def test_a_bucket_allows_the_burst_then_says_when_to_come_back() -> None:
    b = TokenBuckets(rate_per_second=10, burst=100)
    assert b.take("69266", 100, now=0).allowed
    v = b.take("69266", 50, now=0)
    assert not v.allowed and v.retry_after_seconds == pytest.approx(5.0)
    assert b.take("69123", 100, now=0).allowed  # another commune has its own bucket
    assert not b.take("69266", 50, now=4.0).allowed
    assert b.take("69266", 50, now=5.0).allowed


def test_a_request_larger_than_the_burst_is_charged_a_full_bucket_so_it_can_pass() -> None:
    b = TokenBuckets(rate_per_second=1, burst=10)
    assert b.take("k", 1000, now=0).allowed
    assert not b.take("k", 1, now=0).allowed
