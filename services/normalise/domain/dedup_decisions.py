"""Decide what an event does to the stored feature: the heart of exactly-once *effect*.

Ordering is by (sequence, occurred_at) per feature. Deletes leave tombstones carrying their position,
so a late, older upsert cannot bring a deleted feature back. An upsert identical in content changes
nothing but still advances the stored position (or a late older event could win afterwards).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum

from services.contract.messages import ChangeKind
from services.normalise.domain.canonical_feature import Candidate, CanonicalFeature, FeatureKey


class Outcome(str, Enum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    UNCHANGED = "unchanged"  # identical content, or delete of an absent/deleted feature
    STALE = "stale"  # older than what is stored
    DUPLICATE = "duplicate"  # this event id was already applied
    LINKED = "linked"  # a new record joined an existing canonical feature of another commune (feature_links.py)


@dataclass(frozen=True)
class StoredFeature:
    sequence: int
    occurred_at: datetime
    deleted: bool
    feature: CanonicalFeature | None  # None when deleted (tombstone)


@dataclass(frozen=True)
class Decision:
    candidate: Candidate
    outcome: Outcome
    before: StoredFeature | None
    after: StoredFeature | None  # what the store must hold afterwards (None: leave as is)

    @property
    def change_kind(self) -> ChangeKind | None:
        return {
            Outcome.CREATED: ChangeKind.CREATED,
            Outcome.UPDATED: ChangeKind.UPDATED,
            Outcome.DELETED: ChangeKind.DELETED,
        }.get(self.outcome)


def decide(stored: StoredFeature | None, c: Candidate) -> Decision:
    ev = c.event
    position = (ev.sequence, ev.occurred_at)
    if stored is not None and position <= (stored.sequence, stored.occurred_at):
        return Decision(c, Outcome.STALE, stored, None)
    if c.feature is None:  # delete
        tomb = StoredFeature(ev.sequence, ev.occurred_at, True, None)
        if stored is None or stored.deleted:
            return Decision(c, Outcome.UNCHANGED, stored, tomb)
        return Decision(c, Outcome.DELETED, stored, tomb)
    live = StoredFeature(ev.sequence, ev.occurred_at, False, c.feature)
    if stored is None or stored.deleted:
        return Decision(c, Outcome.CREATED, stored, live)
    assert stored.feature is not None
    if stored.feature.content_hash == c.feature.content_hash:
        return Decision(c, Outcome.UNCHANGED, stored, replace(stored, sequence=ev.sequence, occurred_at=ev.occurred_at))
    return Decision(c, Outcome.UPDATED, stored, live)


def decide_batch(stored: dict[FeatureKey, StoredFeature], candidates: list[Candidate]) -> list[Decision]:
    """Decide a batch in arrival order; later events for a key see the effect of earlier ones."""
    current = dict(stored)
    decisions: list[Decision] = []
    for c in candidates:
        d = decide(current.get(c.key), c)
        if d.after is not None:
            current[c.key] = d.after
        decisions.append(d)
    return decisions


def final_states(decisions: list[Decision]) -> dict[FeatureKey, tuple[StoredFeature, Decision]]:
    """The last state per key, with the decision that set it: what one batch writes to the store."""
    out: dict[FeatureKey, tuple[StoredFeature, Decision]] = {}
    for d in decisions:
        if d.after is not None:
            out[d.candidate.key] = (d.after, d)
    return out
