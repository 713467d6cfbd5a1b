"""Rejections keep a bounded prefix of the original with the hash and size of the whole; the retention cutoff."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.contract.codecs import Codecs
from services.contract.messages import Rejection, SourcePosition
from services.normalise.domain.rejection_retention import bounded_original, retention_cutoff


@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=2000))
def test_the_prefix_is_bounded_and_the_hash_and_size_describe_the_whole(original: bytes, limit: int) -> None:
    b = bounded_original(original, limit)
    assert len(b.prefix) == min(limit, len(original)) and original.startswith(b.prefix)
    assert b.size == len(original) and b.sha256 == hashlib.sha256(original).hexdigest()
    assert b.whole == (len(original) <= limit)


def test_a_3_mb_junk_message_keeps_16_kib() -> None:
    junk = b"\xff" * 3_000_000
    b = bounded_original(junk, 16 * 1024)
    assert len(b.prefix) == 16 * 1024 and b.size == 3_000_000 and not b.whole


def test_retention_cutoff() -> None:
    now = datetime(2026, 12, 4, 12, tzinfo=UTC)
    assert retention_cutoff(now, 30) == now - timedelta(days=30)
    with pytest.raises(ValueError):
        retention_cutoff(now, 0)


def test_a_rejection_with_a_prefix_round_trips_with_its_hash_and_size_and_v1_readers_stay_readable() -> None:
    codecs = Codecs()
    r = Rejection(
        "r1", datetime(2026, 12, 4, tzinfo=UTC), "normalise", "undecodable", "junk",
        SourcePosition("odc.change-events", 0, 7), b"\xff" * 10, original_sha256="ab" * 32, original_size=3_000_000,
    )  # fmt: skip
    assert codecs.decode_rejection(codecs.encode_rejection(r)) == r
    v1 = codecs.catalogue.encode(
        "rejection",
        {
            "rejection_id": "r0", "rejected_at": r.rejected_at, "stage": "normalise", "reason": "undecodable",
            "message": "junk", "event_id": None, "dataset": None, "commune": None, "feature_id": None, "errors": [],
            "source_topic": "t", "source_partition": 0, "source_offset": 1, "original": b"whole",
        },
        version=1,
    )  # fmt: skip
    old = codecs.decode_rejection(v1)
    assert old.original == b"whole" and old.original_sha256 is None and old.original_size is None
