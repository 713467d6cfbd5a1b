"""Bearer tokens of odc's HTTP APIs (the ingest push API; the publish API's subscription management):
their text form, the hash that is stored, and who may do what. Pure (the random bytes are given by the
caller). Shared by both services; the PostgreSQL store is services/infrastructure/api_tokens.py.

A token reads ``odc_<token id>_<secret>``. Only SHA-256 of the secret is stored: the secret has 256 bits
of entropy, so a slow password hash would add nothing, and a database leak reveals no usable token.
The id lets the service find the row; the hashes are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

PREFIX = "odc"
_TOKEN = re.compile(r"^odc_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for: one commune, or the Métropole (admin, every commune)."""

    token_id: str
    commune: str | None

    @property
    def is_admin(self) -> bool:
        return self.commune is None

    def may_write(self, commune: str) -> bool:
        return self.is_admin or self.commune == commune

    @property
    def may_operate(self) -> bool:
        """Operator actions (webhook subscriptions on the publish API) need an admin token."""
        return self.is_admin

    @property
    def bucket(self) -> str:
        """Rate-limit key: a commune's tokens share one budget; each admin token has its own."""
        return self.commune or f"admin:{self.token_id}"


@dataclass(frozen=True)
class StoredToken:
    token_id: str
    commune: str | None
    secret_sha256: str
    revoked: bool


def format_token(token_id: str, secret: str) -> str:
    return f"{PREFIX}_{token_id}_{secret}"


def parse_token(text: str) -> tuple[str, str] | None:
    m = _TOKEN.match(text.strip())
    return (m.group(1), m.group(2)) if m else None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def authenticate(text: str, stored: StoredToken | None) -> Principal | None:
    """The principal of a presented token, or None (unknown, malformed, revoked or wrong secret)."""
    parsed = parse_token(text)
    if parsed is None or stored is None or stored.token_id != parsed[0] or stored.revoked:
        return None
    if not hmac.compare_digest(hash_secret(parsed[1]), stored.secret_sha256):
        return None
    return Principal(stored.token_id, stored.commune)
