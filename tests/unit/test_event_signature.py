"""Per-commune event signatures: who may sign what (pure), and the normaliser's handler refusing the rest."""

from __future__ import annotations

import pytest

from services.contract.event_signature import (
    FORBIDDEN_COMMUNE,
    HEADER_KEY_ID,
    HEADER_SIGNATURE,
    UNAUTHENTICATED,
    EventAuthenticator,
    SigningKey,
    sign,
)

VALUE = b"\xc3\x01 some avro bytes for commune 69266"
LYON = SigningKey("k-69123", b"lyon-secret-32-bytes-long-enough!", "69123")
VILLEURBANNE = SigningKey("k-69266", b"villeurbanne-secret-32-bytes-xx!", "69266")
ADMIN = SigningKey("k-admin", b"metropole-admin-secret-32-bytes!!", None)
REVOKED = SigningKey("k-old", b"an-old-secret-that-was-revoked!!!", "69266", revoked=True)
KEYS = {k.key_id: k for k in (LYON, VILLEURBANNE, ADMIN, REVOKED)}


def tampered(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [(k, (b"0" * 64) if k == HEADER_SIGNATURE else v) for k, v in headers]


@pytest.mark.parametrize(
    ("headers", "commune", "expected", "rule"),
    [
        (sign(VALUE, VILLEURBANNE), "69266", None, None),
        (sign(VALUE, ADMIN), "69266", None, None),
        (sign(VALUE, ADMIN), "69123", None, None),
        (sign(VALUE, LYON), "69266", FORBIDDEN_COMMUNE, "forbidden_commune"),
        (sign(VALUE, REVOKED), "69266", UNAUTHENTICATED, "key_revoked"),
        (sign(VALUE, SigningKey("k-nobody", b"x" * 32, "69266")), "69266", UNAUTHENTICATED, "key_unknown"),
        (tampered(sign(VALUE, VILLEURBANNE)), "69266", UNAUTHENTICATED, "signature_mismatch"),
        ([], "69266", UNAUTHENTICATED, "signature_missing"),
        (sign(VALUE, VILLEURBANNE)[:1], "69266", UNAUTHENTICATED, "signature_missing"),
        ([(HEADER_KEY_ID, b"\xff\xfe"), (HEADER_SIGNATURE, b"abc")], "69266", UNAUTHENTICATED, "signature_missing"),
        ([*sign(VALUE, VILLEURBANNE)[:1], (HEADER_SIGNATURE, b"")], "69266", UNAUTHENTICATED, "signature_missing"),
        ([*sign(VALUE, VILLEURBANNE)[:1], (HEADER_SIGNATURE, None)], "69266", UNAUTHENTICATED, "signature_missing"),
        ([*sign(VALUE, VILLEURBANNE), *tampered(sign(VALUE, VILLEURBANNE))], "69266", None, None),
        (
            [*tampered(sign(VALUE, VILLEURBANNE)), *sign(VALUE, VILLEURBANNE)],
            "69266",
            UNAUTHENTICATED,
            "signature_mismatch",
        ),
    ],
    ids=[
        "own-commune",
        "admin-for-69266",
        "admin-for-69123",
        "other-commune",
        "revoked",
        "unknown-key",
        "tampered",
        "unsigned",
        "key-id-only",
        "non-ascii-header",
        "empty-signature",
        "null-signature",
        "first-of-two-headers-good",
        "first-of-two-headers-bad",
    ],
)
def test_who_may_sign_what(
    headers: list[tuple[str, bytes]], commune: str, expected: str | None, rule: str | None
) -> None:
    refusal = EventAuthenticator(KEYS).check(VALUE, headers, commune)
    if expected is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal.reason == expected
        assert refusal.errors[0].rule == rule and refusal.errors[0].message_fr


def test_a_signature_covers_the_whole_value_so_the_commune_field_cannot_be_changed() -> None:
    headers = sign(VALUE, VILLEURBANNE)
    other_value = VALUE.replace(b"69266", b"69123")
    refusal = EventAuthenticator(KEYS).check(other_value, headers, "69123")
    assert refusal is not None and refusal.errors[0].rule == "signature_mismatch"


def test_unsigned_events_pass_only_when_signatures_are_not_required() -> None:
    assert EventAuthenticator(KEYS, require_signed=False).check(VALUE, [], "69266") is None
    # a present but wrong signature is refused either way
    bad = EventAuthenticator(KEYS, require_signed=False).check(VALUE, tampered(sign(VALUE, ADMIN)), "69266")
    assert bad is not None and bad.reason == UNAUTHENTICATED


def test_the_secret_is_never_in_the_repr() -> None:
    assert b"villeurbanne".decode() not in repr(VILLEURBANNE)
