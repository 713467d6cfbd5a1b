"""Cutting versions: net diffs, counts, policy, and the incremental content hash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contract.datasets.catalogue import VersioningPolicy
from services.contract.messages import ChangeKind, FeatureState
from services.publish.domain.notifications import version_message
from services.publish.domain.versioning import (
    EMPTY_HASH,
    DatasetState,
    DiffKind,
    PendingSummary,
    ReceivedChange,
    build_version,
    collapse,
    content_hash_of,
    should_cut,
)

T = datetime(2026, 1, 1, tzinfo=UTC)


def st_(h: str) -> FeatureState:
    return FeatureState(None, "{}", h)


def ch(i: int, fid: str, before: str | None, after: str | None) -> ReceivedChange:
    kind = ChangeKind.CREATED if before is None else ChangeKind.DELETED if after is None else ChangeKind.UPDATED
    return ReceivedChange(i, "ds", "69266", fid, kind, st_(before) if before else None, st_(after) if after else None)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ([ch(1, "a", None, "h1")], [("a", DiffKind.ADDED)]),
        ([ch(1, "a", "h0", "h1")], [("a", DiffKind.UPDATED)]),
        ([ch(1, "a", "h0", None)], [("a", DiffKind.REMOVED)]),
        ([ch(1, "a", None, "h1"), ch(2, "a", "h1", None)], []),  # created then deleted: nothing
        ([ch(1, "a", "h0", "h1"), ch(2, "a", "h1", "h0")], []),  # changed and changed back: nothing
        ([ch(1, "a", "h0", None), ch(2, "a", None, "h2")], [("a", DiffKind.UPDATED)]),  # deleted then re-created
        ([ch(1, "b", None, "x"), ch(2, "a", None, "y")], [("a", DiffKind.ADDED), ("b", DiffKind.ADDED)]),
    ],
)
def test_collapse_gives_the_net_effect(changes: list[ReceivedChange], expected: list[tuple[str, DiffKind]]) -> None:
    assert [(e.feature_id, e.kind) for e in collapse(changes)] == expected


def test_build_version_counts_and_numbers() -> None:
    state = DatasetState("ds", 4, 10, content_hash_of([("69266", "a", "h0"), ("69266", "c", "h9")]))
    draft = build_version(state, [ch(7, "a", "h0", "h1"), ch(8, "b", None, "h2"), ch(9, "c", "h9", None)], T)
    assert draft is not None
    assert (draft.version, draft.added, draft.updated, draft.removed, draft.feature_count) == (5, 1, 1, 1, 10)
    assert (draft.first_change_id, draft.last_change_id) == (7, 9)
    assert draft.content_hash == content_hash_of([("69266", "a", "h1"), ("69266", "b", "h2")])


def test_no_version_when_changes_cancel_out() -> None:
    assert (
        build_version(DatasetState("ds", 1, 0, EMPTY_HASH), [ch(1, "a", None, "h"), ch(2, "a", "h", None)], T) is None
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from([None, "h1", "h2", "h3"])), min_size=1, max_size=60),
    st.integers(1, 6),
)
def test_incremental_hash_equals_full_recomputation(ops: list[tuple[str, str | None]], versions: int) -> None:
    """Apply random histories through successive versions; the hash always matches a full recount."""
    live: dict[str, str] = {}
    state = DatasetState("ds", 0, 0, EMPTY_HASH)
    changes: list[ReceivedChange] = []
    chunk = max(1, len(ops) // versions)
    for i, (fid, new) in enumerate(ops, start=1):
        old = live.get(fid)
        if old is None and new is None:
            continue
        changes.append(ch(i, fid, old, new))
        if new is None:
            live.pop(fid)
        else:
            live[fid] = new
        if len(changes) >= chunk:
            draft = build_version(state, changes, T)
            if draft is not None:
                state = DatasetState("ds", draft.version, draft.feature_count, draft.content_hash)
            changes = []
    draft = build_version(state, changes, T)
    if draft is not None:
        state = DatasetState("ds", draft.version, draft.feature_count, draft.content_hash)
    assert state.content_hash == content_hash_of([("69266", f, h) for f, h in live.items()])
    assert state.feature_count == len(live)


@pytest.mark.parametrize(
    ("count", "oldest", "newest", "cut"),
    [
        (0, 0, 0, False),
        (5, 10, 1, False),  # not quiet yet, not too old
        (5, 10, 3, True),  # quiet for the quiet period (2 s)
        (100, 1, 0, True),  # max_changes reached
        (5, 31, 0, True),  # oldest waited longer than the max delay
    ],
)
def test_version_policy(count: int, oldest: int, newest: int, cut: bool) -> None:
    policy = VersioningPolicy(quiet_period_seconds=2, max_changes=100)
    now = T + timedelta(seconds=100)
    summary = PendingSummary(count, now - timedelta(seconds=oldest), now - timedelta(seconds=newest)) if count else None
    assert should_cut(policy, summary, now, max_delay_seconds=30) is cut


def test_version_notification_is_a_cloudevent_with_a_stable_id() -> None:
    draft = build_version(DatasetState("public_toilets", 2, 0, EMPTY_HASH), [ch(1, "a", None, "h")], T)
    assert draft is not None
    attrs, data = version_message(draft, "urn:odc:publish")
    headers = dict(attrs.kafka_headers())
    assert headers["ce_specversion"] == b"1.0" and headers["ce_id"] == b"public_toilets:v3"
    assert headers["ce_type"] == b"fr.grandlyon.odc.dataset.version.published"
    assert headers["ce_subject"] == b"public_toilets" and headers["content-type"] == b"application/avro"
    assert headers["ce_time"] == b"2026-01-01T00:00:00Z"
    assert (data.version, data.added, data.feature_count) == (3, 1, 1)
