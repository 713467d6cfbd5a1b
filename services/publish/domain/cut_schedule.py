"""When the next version of a dataset falls due, so the cutter can sleep until then instead of polling.

Pure: the same rule as ``versioning.should_cut``, solved for time. ``should_cut(policy, pending, t, d)`` is
true exactly when ``t >= next_cut_at(policy, pending, d)`` (tests/unit/test_cut_schedule.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta

from services.contract.datasets.catalogue import VersioningPolicy
from services.publish.domain.versioning import PendingSummary


def next_cut_at(policy: VersioningPolicy, pending: PendingSummary | None, max_delay_seconds: float) -> datetime | None:
    """The first time the dataset's pending changes are due for a version; None when nothing is pending."""
    if pending is None or pending.count == 0:
        return None
    if pending.count >= policy.max_changes:
        return pending.oldest_received_at  # due already
    quiet = pending.newest_received_at + _at_least(policy.quiet_period_seconds)
    late = pending.oldest_received_at + _at_least(max_delay_seconds)
    return min(quiet, late)


def earliest_cut_at(
    policies: Mapping[str, VersioningPolicy], pending: Mapping[str, PendingSummary], max_delay_seconds: float
) -> datetime | None:
    """The first time any dataset is due (a dataset without a policy gets the default one)."""
    times = [next_cut_at(policies.get(d, VersioningPolicy()), s, max_delay_seconds) for d, s in pending.items()]
    return min((t for t in times if t is not None), default=None)


def _at_least(seconds: float) -> timedelta:
    """``seconds`` rounded up to the microsecond, so a cutter waking at the due time never finds it not due."""
    return timedelta(microseconds=math.ceil(seconds * 1_000_000))
