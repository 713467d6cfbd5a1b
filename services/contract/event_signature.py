"""Per-commune signatures on change events, so the Kafka path obeys the rule the HTTP API enforces: a
commune can only change its own features. Pure (hmac, hashlib): the producer signs, the normaliser checks.

A signature is HMAC-SHA256 over the exact message value (the Avro single-object bytes, which carry the
``commune`` field), sent in two Kafka headers: ``odc-key-id`` (which key) and ``odc-signature`` (hex
digest). A commune's key may sign events of that commune only; a Métropole (admin) key, ``commune`` None,
may sign for any commune. Why HMAC rather than SASL + ACLs: see docs/ingest.md ("The Kafka path").
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.contract.messages import FieldError

HEADER_KEY_ID = "odc-key-id"
HEADER_SIGNATURE = "odc-signature"
UNAUTHENTICATED = "unauthenticated"
FORBIDDEN_COMMUNE = "forbidden_commune"

Headers = Iterable[tuple[str, bytes]]


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    secret: bytes = b""
    commune: str | None = None  # None: the Métropole's admin key, valid for every commune
    revoked: bool = False

    def __repr__(self) -> str:  # never print the secret
        return f"SigningKey(key_id={self.key_id!r}, commune={self.commune!r}, revoked={self.revoked})"


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str
    errors: tuple[FieldError, ...]


def signature(value: bytes, secret: bytes) -> str:
    return hmac.new(secret, value, hashlib.sha256).hexdigest()


def sign(value: bytes, key: SigningKey) -> list[tuple[str, bytes]]:
    """The Kafka headers to send with ``value``."""
    return [(HEADER_KEY_ID, key.key_id.encode()), (HEADER_SIGNATURE, signature(value, key.secret).encode())]


def _header(headers: Headers, name: str) -> str | None:
    """The first header called ``name`` (Kafka allows several; the first is read), as ASCII text; None when it
    is absent, null, empty or not ASCII (refused as missing: an empty value is no signature to compare)."""
    for k, v in headers:
        if k == name:
            try:
                return bytes(v).decode("ascii") or None
            except (UnicodeDecodeError, TypeError):
                return None
    return None


def _refuse(reason: str, rule: str, en: str, fr: str, field: str | None = None, value: str | None = None) -> Refusal:
    return Refusal(reason, en, (FieldError(rule, en, fr, field, value),))


class EventAuthenticator:
    """Checks one message's signature against a snapshot of the signing keys (refreshed by the caller)."""

    def __init__(self, keys: Mapping[str, SigningKey], *, require_signed: bool = True) -> None:
        self._keys = dict(keys)
        self.require_signed = require_signed

    def check(self, value: bytes, headers: Headers, commune: str) -> Refusal | None:
        """None when the event may be applied; otherwise why not."""
        headers = list(headers)
        key_id = _header(headers, HEADER_KEY_ID)
        given = _header(headers, HEADER_SIGNATURE)
        if key_id is None and given is None:
            if not self.require_signed:
                return None
            return _refuse(
                UNAUTHENTICATED,
                "signature_missing",
                f"unsigned event: the {HEADER_KEY_ID} and {HEADER_SIGNATURE} headers are required",
                f"événement non signé : les en-têtes {HEADER_KEY_ID} et {HEADER_SIGNATURE} sont obligatoires",
            )
        if key_id is None or given is None:
            return _refuse(
                UNAUTHENTICATED,
                "signature_missing",
                f"both {HEADER_KEY_ID} and {HEADER_SIGNATURE} headers are required",
                f"les en-têtes {HEADER_KEY_ID} et {HEADER_SIGNATURE} sont tous deux obligatoires",
            )
        key = self._keys.get(key_id)
        if key is None or key.revoked:
            state = "revoked" if key is not None else "unknown"
            state_fr = "révoquée" if key is not None else "inconnue"
            return _refuse(
                UNAUTHENTICATED,
                f"key_{state}",
                f"signing key {key_id[:64]!r} is {state}",
                f"clé de signature {key_id[:64]!r} {state_fr}",
                HEADER_KEY_ID,
                key_id[:64],
            )
        if not hmac.compare_digest(signature(value, key.secret), given.lower()):
            return _refuse(
                UNAUTHENTICATED,
                "signature_mismatch",
                f"the signature does not match the message for key {key_id!r}",
                f"la signature ne correspond pas au message pour la clé {key_id!r}",
                HEADER_SIGNATURE,
            )
        if key.commune is not None and key.commune != commune:
            return _refuse(
                FORBIDDEN_COMMUNE,
                "forbidden_commune",
                f"key {key_id!r} belongs to commune {key.commune}; it cannot change commune {commune[:10]}'s features",
                f"la clé {key_id!r} appartient à la commune {key.commune} ; elle ne peut pas modifier "
                f"les objets de la commune {commune[:10]}",
                "commune",
                commune[:10],
            )
        return None
