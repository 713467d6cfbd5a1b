"""The change feed ``changes?since=N``: every feature change of versions after N, in (version, commune,
feature_id) order, paged with an opaque keyset cursor so that each change appears exactly once across pages
(versions are immutable, so the order never moves under a reader)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass


class BadCursor(ValueError):
    pass


@dataclass(frozen=True, order=True)
class FeedPosition:
    """The last change a page returned; the next page starts strictly after it."""

    version: int
    commune: str
    feature_id: str


def encode_cursor(p: FeedPosition) -> str:
    raw = json.dumps([p.version, p.commune, p.feature_id], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> FeedPosition:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, commune, feature_id = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise BadCursor("cursor is not one this API issued") from exc
    if not isinstance(version, int) or version < 0 or not isinstance(commune, str) or not isinstance(feature_id, str):
        raise BadCursor("cursor is not one this API issued")
    return FeedPosition(version, commune, feature_id)


@dataclass(frozen=True)
class FeedPage:
    """What a page tells the reader: where to continue now (``cursor``, None at the end) and, at the end,
    which ``since`` to ask with next time (every version up to it has been fully returned)."""

    cursor: str | None
    next_since: int | None


def page_outcome(keys: list[FeedPosition], limit: int, resumed_from_version: int) -> FeedPage:
    """``keys``: the positions of the rows read with ``LIMIT limit + 1`` after the start (``since`` or the
    cursor, whose version is ``resumed_from_version``)."""
    if len(keys) > limit:
        return FeedPage(encode_cursor(keys[limit - 1]), None)
    last_version = max((k.version for k in keys), default=resumed_from_version)
    return FeedPage(None, last_version)
