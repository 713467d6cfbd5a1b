"""The cutter's schedule is should_cut solved for time: due exactly when should_cut first says yes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.contract.datasets.catalogue import VersioningPolicy
from services.publish.domain.cut_schedule import earliest_cut_at, next_cut_at
from services.publish.domain.versioning import PendingSummary, should_cut

T0 = datetime(2026, 12, 5, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("count", "oldest", "newest", "quiet", "max_changes", "max_delay", "due"),
    [
        (3, 0.0, 1.0, 2.0, 100, 10.0, 3.0),  # quiet period after the newest change
        (3, 0.0, 9.5, 2.0, 100, 10.0, 10.0),  # a steady stream: max delay after the oldest
        (100, 0.0, 1.0, 2.0, 100, 10.0, 0.0),  # enough changes: due at once
        (5, 0.0, 0.2, 2.0, 100, 0.25, 0.25),  # the benchmark's max delay
    ],
)
def test_next_cut_at_cases(
    count: int, oldest: float, newest: float, quiet: float, max_changes: int, max_delay: float, due: float
) -> None:
    policy = VersioningPolicy(quiet_period_seconds=quiet, max_changes=max_changes)
    assert next_cut_at(policy, PendingSummary(count, at(oldest), at(newest)), max_delay) == at(due)


def test_nothing_pending_is_never_due() -> None:
    assert next_cut_at(VersioningPolicy(), None, 10.0) is None
    assert next_cut_at(VersioningPolicy(), PendingSummary(0, T0, T0), 10.0) is None
    assert earliest_cut_at({}, {}, 10.0) is None


def test_earliest_over_datasets_uses_each_policy_and_the_default_for_unknown_ones() -> None:
    pending = {"a": PendingSummary(1, at(0), at(0)), "b": PendingSummary(1, at(0), at(0))}
    policies = {"a": VersioningPolicy(quiet_period_seconds=5.0)}  # b: default quiet period 2 s
    assert earliest_cut_at(policies, pending, 10.0) == at(VersioningPolicy().quiet_period_seconds)


@given(
    count=st.integers(1, 50),
    oldest=st.integers(0, 100_000),  # milliseconds, as received_at is stored to the microsecond
    spread=st.integers(0, 100_000),
    quiet=st.integers(0, 30_000),
    max_changes=st.integers(1, 60),
    max_delay=st.integers(0, 30_000),
    probe=st.integers(-10_000, 300_000),
)
def test_due_exactly_when_should_cut_says_so(
    count: int, oldest: int, spread: int, quiet: int, max_changes: int, max_delay: int, probe: int
) -> None:
    policy = VersioningPolicy(quiet_period_seconds=quiet / 1000, max_changes=max_changes)
    pending = PendingSummary(count, at(oldest / 1000), at((oldest + spread) / 1000))
    due = next_cut_at(policy, pending, max_delay / 1000)
    assert due is not None
    now = at(probe / 1000)
    if count < max_changes:  # below the count rule, due is the exact boundary of should_cut
        assert should_cut(policy, pending, now, max_delay / 1000) == (now >= due)
    else:
        assert should_cut(policy, pending, now, max_delay)
        assert due <= now or due == pending.oldest_received_at
