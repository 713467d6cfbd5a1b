"""Same place, two records, applied to a batch: which canonical feature each event changes, and how. Pure.

A *source record* is what one commune (the sender of record: its own services, or a connector acting for it)
calls one feature: the key (dataset, commune, feature_id). Most canonical features have one source record,
their own key, and follow the plain dedup rules (``dedup_decisions``). When a new record of a dataset that
links records (its ``same_place`` policy) is the same real thing as a live canonical feature of another
commune (``same_place.same_place``), it becomes a *member* of that feature instead of a new feature. The
canonical feature keeps its key (the first record's: public ids stay stable) and every member's provenance.

Semantics (docs/validation.md):
- staleness is judged per member, against that member's own (sequence, occurred_at): sequences of two
  communes are not comparable;
- the canonical content is the live member with the latest event time (last writer by event time; ties by
  sequence then key), with the live members listed under ``odc:provenance``;
- deleting a member removes only its provenance: the feature stays, with the remaining members' latest
  content, while one remains; the last delete deletes the canonical feature;
- a link is an *update* of the existing canonical feature (its provenance grows), never a new feature;
- each change written to a linked canonical feature advances its stored sequence by one, so the store's
  ordering guard and subscribers see one ordered history per canonical feature.
Records of one commune are never linked to each other; links are made when a record is created (or comes
back after a delete), not re-evaluated later.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import cast

from shapely.geometry import Point
from shapely.ops import nearest_points

from services.contract.datasets.catalogue import SamePlacePolicy
from services.normalise.domain.canonical_feature import Candidate, CanonicalFeature, FeatureKey, content_hash
from services.normalise.domain.dedup_decisions import Decision, Outcome, StoredFeature, decide
from services.normalise.domain.same_place import Link, PlacedRecord, attributes_allow, distance_m, same_place

PROVENANCE = "odc:provenance"  # the attribute that lists a linked feature's members (not a schema field)
_M_PER_DEG = 111_195.0


@dataclass(frozen=True)
class Member:
    """One source record of a linked canonical feature, with its own position and content."""

    key: FeatureKey
    canonical: FeatureKey
    source: str  # the channel of its last event (ev.source), for the provenance shown to subscribers
    sequence: int
    occurred_at: datetime
    removed: bool
    feature: CanonicalFeature | None  # None when removed
    distance_m: float  # from the canonical feature when it was linked (0 for the first record)
    linked_at: datetime


@dataclass(frozen=True)
class LinkedBatch:
    reported: list[Decision]  # one per candidate, on the event's own key: what happened to *that* record
    to_save: list[Decision]  # on canonical keys: what the store and the outbox must hold
    members: list[Member]  # final states of the members this batch changed


def group_feature(members: Iterable[Member]) -> CanonicalFeature | None:
    """The canonical content of a linked feature: its latest live member's, plus the live provenance."""
    live = [m for m in members if not m.removed and m.feature is not None]
    if not live:
        return None
    winner = max(live, key=lambda m: (m.occurred_at, m.sequence, m.key.commune, m.key.feature_id))
    assert winner.feature is not None
    provenance = [
        {
            "commune": m.key.commune,
            "feature_id": m.key.feature_id,
            "source": m.source,
            "distance_m": round(m.distance_m, 1),
            "linked_at": m.linked_at.isoformat(),
        }
        for m in sorted(live, key=lambda m: (m.linked_at, m.key.commune, m.key.feature_id))
    ]
    attributes = dict(winner.feature.attributes)
    attributes[PROVENANCE] = cast(str, provenance)  # a JSON array: attributes are stored and sent as JSON
    geometry = winner.feature.geometry
    return CanonicalFeature(attributes, geometry, content_hash(attributes, geometry), winner.feature.corrections)


def _cell_size_deg(policy: SamePlacePolicy) -> float:
    """At least the distance in degrees of longitude up to 60° N (half a degree of latitude's metres)."""
    return max(policy.distance_m, 250.0) / (_M_PER_DEG * 0.5)


class _Grid:
    """Live canonical features of the batch's world by grid cell (cells at least as large as the distance)."""

    def __init__(self) -> None:
        self._cells: dict[tuple[str, int, int], set[FeatureKey]] = {}

    @staticmethod
    def _span(bounds: tuple[float, float, float, float], size: float) -> Iterable[tuple[int, int]]:
        x0, y0, x1, y1 = (int(v // size) for v in bounds)
        for cx in range(x0, x1 + 1):
            for cy in range(y0, y1 + 1):
                yield cx, cy

    def add(self, key: FeatureKey, feature: CanonicalFeature, policy: SamePlacePolicy) -> None:
        if feature.geometry is None or feature.geometry.is_empty:
            return
        size = _cell_size_deg(policy)
        for cx, cy in self._span(feature.geometry.bounds, size):
            self._cells.setdefault((key.dataset, cx, cy), set()).add(key)

    def near(self, dataset: str, feature: CanonicalFeature, policy: SamePlacePolicy) -> set[FeatureKey]:
        if feature.geometry is None or feature.geometry.is_empty:
            return set()
        size = _cell_size_deg(policy)
        x0, y0, x1, y1 = feature.geometry.bounds
        out: set[FeatureKey] = set()
        for cx, cy in self._span((x0 - size, y0 - size, x1 + size, y1 + size), size):
            out |= self._cells.get((dataset, cx, cy), set())
        return out


@dataclass
class _World:
    stored: dict[FeatureKey, StoredFeature]
    members: dict[FeatureKey, Member]
    policies: Mapping[str, SamePlacePolicy]
    grid: _Grid = field(default_factory=_Grid)
    groups: dict[FeatureKey, set[FeatureKey]] = field(default_factory=dict)  # canonical -> member keys

    def __post_init__(self) -> None:
        for m in self.members.values():
            self.groups.setdefault(m.canonical, set()).add(m.key)
        for key, s in self.stored.items():
            policy = self.policies.get(key.dataset)
            if policy is not None and policy.distance_m > 0 and not s.deleted and s.feature is not None:
                self.grid.add(key, s.feature, policy)

    def sources_of(self, canonical: FeatureKey) -> set[str]:
        keys = self.groups.get(canonical)
        if not keys:
            return {canonical.commune}
        return {k.commune for k in keys if not self.members[k].removed}


def _placed(source: str, here: CanonicalFeature, there: CanonicalFeature) -> tuple[PlacedRecord, PlacedRecord]:
    g, h = here.geometry, there.geometry
    assert g is not None and h is not None
    if isinstance(g, Point) and isinstance(h, Point):  # the common case: the nearest points are the points
        return PlacedRecord(source, g.x, g.y, here.attributes), PlacedRecord("", h.x, h.y, there.attributes)
    a, b = nearest_points(g, h)
    return PlacedRecord(source, a.x, a.y, here.attributes), PlacedRecord("", b.x, b.y, there.attributes)


def _boxes_farther_than(a: CanonicalFeature, b: CanonicalFeature, limit_m: float) -> bool:
    """True when the two geometries' bounding boxes alone put them more than ``limit_m`` apart. A lower bound:
    any two points of the boxes differ in latitude by at least the gap ``dy`` (``dy`` x metres per degree on a
    meridian), and in longitude by at least ``dx`` (counted at the boxes' highest latitude, with 10% margin)."""
    ga, gb = a.geometry, b.geometry
    if ga is None or gb is None or (isinstance(ga, Point) and isinstance(gb, Point)):
        return False  # points: the exact distance is as cheap
    ax0, ay0, ax1, ay1 = ga.bounds
    bx0, by0, bx1, by1 = gb.bounds
    dx = max(0.0, max(ax0, bx0) - min(ax1, bx1))
    dy = max(0.0, max(ay0, by0) - min(ay1, by1))
    top = max(abs(ay0), abs(ay1), abs(by0), abs(by1))
    gap = max(dy * _M_PER_DEG, 0.9 * dx * _M_PER_DEG * math.cos(math.radians(min(top, 89.9))))
    return bool(gap > limit_m)


def find_link(world: _World, c: Candidate, policy: SamePlacePolicy) -> tuple[FeatureKey, float] | None:
    """The nearest live canonical feature of another commune that is the same real thing, and its distance."""
    assert c.feature is not None
    best: tuple[float, FeatureKey] | None = None
    for key in world.grid.near(c.key.dataset, c.feature, policy):
        if key == c.key or (key.commune == c.key.commune and key not in world.groups):
            continue  # Link.SAME_SOURCE, known from the keys alone (an unlinked feature's only source is its own)
        s = world.stored.get(key)
        if s is None or s.deleted or s.feature is None or s.feature.geometry is None:
            continue
        if not attributes_allow(c.feature.attributes, s.feature.attributes, policy):
            continue  # Link.DISTINCT or Link.ATTRIBUTES_DIFFER, known before measuring any distance
        if _boxes_farther_than(c.feature, s.feature, policy.distance_m):
            continue  # Link.TOO_FAR, known from the bounding boxes (two parks: no nearest points to compute)
        here, there = _placed(c.key.commune, c.feature, s.feature)
        if distance_m(here, there) > policy.distance_m:
            continue  # Link.TOO_FAR, before gathering the feature's sources
        sources = world.sources_of(key)
        if c.key.commune in sources:
            continue  # Link.SAME_SOURCE: one commune's two records stay two
        there = replace(there, source=min(sources))
        if same_place(here, there, policy) is Link.SAME:
            d = distance_m(here, there)
            if best is None or (d, key.commune, key.feature_id) < (best[0], best[1].commune, best[1].feature_id):
                best = (d, key)
    return None if best is None else (best[1], best[0])


def _canonical_decision(
    world: _World, canonical: FeatureKey, c: Candidate, members_after: Iterable[Member]
) -> Decision | None:
    """The change the canonical feature undergoes when its members become ``members_after``."""
    before = world.stored.get(canonical)
    feature = group_feature(members_after)
    was_live = before is not None and not before.deleted
    if feature is None and not was_live:
        return None
    if (
        feature is not None
        and was_live
        and before is not None
        and before.feature is not None
        and before.feature.content_hash == feature.content_hash
    ):
        return None
    ev = c.event
    sequence = (before.sequence + 1) if before is not None else ev.sequence
    occurred_at = max(before.occurred_at, ev.occurred_at) if before is not None else ev.occurred_at
    after = StoredFeature(sequence, occurred_at, feature is None, feature)
    outcome = Outcome.DELETED if feature is None else Outcome.UPDATED if was_live else Outcome.CREATED
    rekeyed = Candidate(
        replace(
            ev, commune=canonical.commune, feature_id=canonical.feature_id, sequence=sequence, occurred_at=occurred_at
        ),
        canonical,
        feature,
    )
    return Decision(rekeyed, outcome, before, after)


def _member_outcome(before: Member | None, c: Candidate) -> Outcome:
    if c.feature is None:
        return Outcome.UNCHANGED if before is None or before.removed else Outcome.DELETED
    if before is None or before.removed or before.feature is None:
        return Outcome.CREATED
    return Outcome.UNCHANGED if before.feature.content_hash == c.feature.content_hash else Outcome.UPDATED


def decide_linked_batch(
    stored: Mapping[FeatureKey, StoredFeature],
    members: Mapping[FeatureKey, Member],
    candidates: list[Candidate],
    policies: Mapping[str, SamePlacePolicy],
    now: datetime,
) -> LinkedBatch:
    """Decide a batch in arrival order. ``stored`` holds the canonical rows of the candidates' keys, of the
    linked features they belong to and of the live features near the new records; ``members`` every member
    of those linked features."""
    world = _World(dict(stored), dict(members), policies)
    reported: list[Decision] = []
    to_save: list[Decision] = []
    changed: dict[FeatureKey, Member] = {}

    def apply(canonical: FeatureKey, c: Candidate, new_members: list[Member]) -> Decision | None:
        for m in new_members:
            world.members[m.key] = m
            world.groups.setdefault(canonical, set()).add(m.key)
            changed[m.key] = m
        d = _canonical_decision(world, canonical, c, (world.members[k] for k in world.groups[canonical]))
        if d is not None:
            assert d.after is not None
            world.stored[canonical] = d.after
            to_save.append(d)
        return d

    for c in candidates:
        policy = policies.get(c.key.dataset)
        ev = c.event
        member = world.members.get(c.key)
        if policy is None or policy.distance_m <= 0:
            plain = decide(world.stored.get(c.key), c)
            _plain(world, plain, policy, reported, to_save)
            continue
        if member is not None:  # a member of a linked feature: judged against its own position
            if (ev.sequence, ev.occurred_at) <= (member.sequence, member.occurred_at):
                reported.append(Decision(c, Outcome.STALE, None, None))
                continue
            outcome = _member_outcome(member, c)
            updated = replace(
                member,
                source=ev.source,
                sequence=ev.sequence,
                occurred_at=ev.occurred_at,
                removed=c.feature is None,
                feature=c.feature,
            )
            apply(member.canonical, c, [updated])
            reported.append(Decision(c, outcome, None, None))
            continue
        plain = decide(world.stored.get(c.key), c)
        if plain.outcome is not Outcome.CREATED or c.feature is None:
            _plain(world, plain, policy, reported, to_save)
            continue
        found = find_link(world, c, policy)
        if found is None:
            _plain(world, plain, policy, reported, to_save)
            continue
        canonical, distance = found
        new: list[Member] = []
        if canonical not in world.groups:  # the existing feature's own record becomes its first member
            s = world.stored[canonical]
            new.append(Member(canonical, canonical, "", s.sequence, s.occurred_at, False, s.feature, 0.0, now))
        new.append(Member(c.key, canonical, ev.source, ev.sequence, ev.occurred_at, False, c.feature, distance, now))
        apply(canonical, c, new)
        reported.append(Decision(c, Outcome.LINKED, None, None))
    return LinkedBatch(reported, to_save, list(changed.values()))


def _plain(
    world: _World,
    d: Decision,
    policy: SamePlacePolicy | None,
    reported: list[Decision],
    to_save: list[Decision],
) -> None:
    reported.append(d)
    to_save.append(d)
    if d.after is not None:
        world.stored[d.candidate.key] = d.after
        if policy is not None and policy.distance_m > 0 and not d.after.deleted and d.after.feature is not None:
            world.grid.add(d.candidate.key, d.after.feature, policy)
