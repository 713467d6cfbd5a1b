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


# Dedup memory (issue #16.2: a dedup claim that rides on the change row). An event id is "processed" when a
# change row carries it (feature_change_outbox.event_id) or, for an event that changed nothing, when it is in
# processed_event. The service layer looks ids up only after the batch's features are locked (an event always
# locks the same feature, so a second worker with the same event waits for the first to commit and then sees
# its rows), and records in processed_event only the events that wrote no change row.


def split_duplicates(candidates: list[Candidate], processed: set[str]) -> tuple[list[Candidate], list[Candidate]]:
    """(the candidates to decide, the duplicates), in arrival order: a candidate whose event id was processed
    before, or that repeats an id met earlier in the batch, is a duplicate."""
    seen: set[str] = set()
    to_decide: list[Candidate] = []
    duplicates: list[Candidate] = []
    for c in candidates:
        event_id = c.event.event_id
        if event_id in processed or event_id in seen:
            duplicates.append(c)
        else:
            seen.add(event_id)
            to_decide.append(c)
    return to_decide, duplicates


def events_without_change_rows(decided: list[Candidate], saved: list[Decision]) -> list[str]:
    """The decided events whose id no saved change carries (stale, unchanged, a delete of nothing, a new record
    that joined another's feature...): only these need a ``processed_event`` row; an applied change's row is
    its own dedup record. A saved decision may carry the id of another candidate's event (the same-place path
    writes the changes that dissolve a previous group under the id of the event that reached it, at other
    keys): that event counts as having its rows, even when itself was stale."""
    carried = {d.candidate.event.event_id for d in saved if d.change_kind is not None}
    return list(dict.fromkeys(c.event.event_id for c in decided if c.event.event_id not in carried))
