"""Same place, two records, applied to a batch. Pure.

A *source record* is what one commune (the sender of record: its own services, or a connector acting for it)
calls one feature: the key (dataset, commune, feature_id). **Every source record is its own canonical
feature, written only by its commune.** When a new record of a dataset that links records (its
``same_place`` policy) is the same real thing as a live feature of another commune
(``same_place.same_place``), the new record is still created at its own key, with its own content, id,
commune code and position; it only carries a link to that feature in ``odc:same_place_as``
(commune, feature id, distance). The other commune's feature is not touched: not its content, not its
sequence, not its versions. A commune's write changes only what that commune owns (docs/architecture.md,
issue #13: the previous model merged the two records into one feature whose content was the latest
writer's, so any commune could rewrite another's published feature by sending a record next to it).

- The link is made when a record is created (or comes back after a delete), and kept on its later updates
  (the store's copy is carried over, so an update does not drop it); it is not re-evaluated later.
- Records of one commune are never linked to each other.
- *Legacy groups*: stores written by the previous model hold linked features in ``feature_provenance``
  (members of one canonical feature). A batch that touches such a group dissolves it first
  (``dissolve_group``): the canonical key gets back its own record's content (or is deleted if its own
  record was), and every other live member becomes its own feature, linked to it. Each of those is a
  change published in the next version, so subscribers see the repair.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import cast

import shapely
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry
from shapely.ops import nearest_points

from services.contract.datasets.catalogue import SamePlacePolicy
from services.contract.messages import ChangeEvent, Operation
from services.normalise.domain.canonical_feature import Candidate, CanonicalFeature, FeatureKey
from services.normalise.domain.dedup_decisions import Decision, Outcome, StoredFeature, decide
from services.normalise.domain.same_place import (
    EARTH_RADIUS_M,
    Link,
    PlacedRecord,
    attributes_allow,
    distance_m,
    same_place,
)

SAME_PLACE_AS = "odc:same_place_as"  # a record's link to another commune's feature of the same place
_M_PER_DEG = 111_195.0


@dataclass(frozen=True)
class Member:
    """One source record of a linked canonical feature of the previous model (``feature_provenance``), with its own
    position and content. Read only to dissolve such a group (``dissolve_group``)."""

    key: FeatureKey
    canonical: FeatureKey
    source: str  # the channel of its last event (ev.source)
    sequence: int
    occurred_at: datetime
    removed: bool
    feature: CanonicalFeature | None  # None when removed
    distance_m: float  # from the canonical feature when it was linked (0 for the first record)
    linked_at: datetime


@dataclass(frozen=True)
class LinkedBatch:
    reported: list[Decision]  # one per candidate, on the event's own key: what happened to *that* record
    to_save: list[Decision]  # what the store and the outbox must hold (repairs of dissolved groups included)
    dissolved: list[FeatureKey]  # canonical keys of the previous model's groups dissolved by this batch


def linked(feature: CanonicalFeature, links: list[dict[str, object]]) -> CanonicalFeature:
    """``feature`` carrying ``links`` in ``odc:same_place_as`` (its own content otherwise unchanged)."""
    attributes = dict(feature.attributes)
    attributes[SAME_PLACE_AS] = cast(str, links)  # a JSON array: attributes are stored and sent as JSON
    return CanonicalFeature.build(attributes, feature.geometry, feature.corrections)


def link_to(key: FeatureKey, distance: float) -> dict[str, object]:
    return {"commune": key.commune, "feature_id": key.feature_id, "distance_m": round(distance, 1)}


def carried_link(stored: StoredFeature | None, c: Candidate) -> Candidate:
    """An update of a linked record keeps its link (the sender does not send it; senders cannot set it either:
    it is not a schema field, so validation drops it from what they send)."""
    if stored is None or stored.deleted or stored.feature is None or c.feature is None:
        return c
    links = stored.feature.attributes.get(SAME_PLACE_AS)
    if links is None or SAME_PLACE_AS in c.feature.attributes:
        return c
    return replace(c, feature=linked(c.feature, cast(list[dict[str, object]], links)))


def _cell_size_deg(policy: SamePlacePolicy) -> float:
    """The grid's bucket size: the distance (at least 250 m) in degrees of latitude. Only a matter of speed: a
    search spans every cell its widened box meets, whatever their size (``_Grid.near``)."""
    return max(policy.distance_m, 250.0) / _M_PER_DEG


Box = tuple[float, float, float, float]


def _boxes_meet(a: Box, b: Box) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


class _Grid:
    """Live canonical features of the batch's world by grid cell, each with its bounding box. A key may also sit
    in cells of an older geometry of its feature (an update moved it): the caller reads the feature itself."""

    def __init__(self) -> None:
        self._cells: dict[tuple[str, int, int], dict[FeatureKey, Box]] = {}
        self._boxes: dict[int, tuple[BaseGeometry, Box]] = {}  # by id(), the geometry held so the id stays its own

    def measure(self, geometries: list[BaseGeometry]) -> None:
        """The bounding boxes of geometries the batch will add or search, in one call (``shapely.bounds``)."""
        if geometries:
            for g, row in zip(geometries, shapely.bounds(geometries).tolist(), strict=True):
                self._boxes[id(g)] = (g, (row[0], row[1], row[2], row[3]))

    def _box(self, geometry: BaseGeometry) -> Box:
        held = self._boxes.get(id(geometry))
        if held is not None and held[0] is geometry:
            return held[1]
        box: Box = geometry.bounds
        return box

    @staticmethod
    def _range(box: Box, size: float) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = (int(v // size) for v in box)
        return x0, y0, x1, y1

    def add(self, key: FeatureKey, feature: CanonicalFeature, policy: SamePlacePolicy) -> None:
        if feature.geometry is None:
            return
        box = self._box(feature.geometry)
        if math.isnan(box[0]):  # empty
            return
        size = _cell_size_deg(policy)
        x0, y0, x1, y1 = self._range(box, size)
        for cx in range(x0, x1 + 1):
            for cy in range(y0, y1 + 1):
                self._cells.setdefault((key.dataset, cx, cy), {})[key] = box

    def near(self, dataset: str, feature: CanonicalFeature, policy: SamePlacePolicy) -> set[FeatureKey]:
        """Every key whose box meets ``feature``'s box widened by the distance (``search_margins_deg``, exact at
        any latitude): a superset of the features within the distance."""
        if feature.geometry is None:
            return set()
        bx0, by0, bx1, by1 = self._box(feature.geometry)
        if math.isnan(bx0):  # empty
            return set()
        dx, dy = search_margins_deg((bx0, by0, bx1, by1), policy.distance_m)
        box = (bx0 - dx, by0 - dy, bx1 + dx, by1 + dy)
        size = _cell_size_deg(policy)
        x0, y0, x1, y1 = self._range(box, size)
        out: set[FeatureKey] = set()
        if (x1 - x0 + 1) * (y1 - y0 + 1) > len(self._cells):  # a box wider than the world held (near a pole)
            cells = [
                entries
                for (d, cx, cy), entries in self._cells.items()
                if d == dataset and x0 <= cx <= x1 and y0 <= cy <= y1
            ]
        else:
            cells = [
                entries
                for cx in range(x0, x1 + 1)
                for cy in range(y0, y1 + 1)
                if (entries := self._cells.get((dataset, cx, cy))) is not None
            ]
        for entries in cells:
            for key, other in entries.items():
                if _boxes_meet(box, other):
                    out.add(key)
        return out


@dataclass
class _World:
    stored: dict[FeatureKey, StoredFeature]
    policies: Mapping[str, SamePlacePolicy]
    grid: _Grid = field(default_factory=_Grid)

    def __post_init__(self) -> None:
        live = [
            (key, s.feature)
            for key, s in self.stored.items()
            if (policy := self.policies.get(key.dataset)) is not None
            and policy.distance_m > 0
            and not s.deleted
            and s.feature is not None
        ]
        self.grid.measure([f.geometry for _, f in live if f.geometry is not None])
        for key, feature in live:
            self.grid.add(key, feature, self.policies[key.dataset])

    def put(self, d: Decision) -> None:
        if d.after is None:
            return
        key = d.candidate.key
        self.stored[key] = d.after
        policy = self.policies.get(key.dataset)
        if policy is not None and policy.distance_m > 0 and not d.after.deleted and d.after.feature is not None:
            self.grid.add(key, d.after.feature, policy)


def _placed(source: str, here: CanonicalFeature, there: CanonicalFeature) -> tuple[PlacedRecord, PlacedRecord]:
    g, h = here.geometry, there.geometry
    assert g is not None and h is not None
    if isinstance(g, Point) and isinstance(h, Point):  # the common case: the nearest points are the points
        return PlacedRecord(source, g.x, g.y, here.attributes), PlacedRecord("", h.x, h.y, there.attributes)
    a, b = nearest_points(g, h)
    return PlacedRecord(source, a.x, a.y, here.attributes), PlacedRecord("", b.x, b.y, there.attributes)


def search_margins_deg(bounds: tuple[float, float, float, float], distance_m: float) -> tuple[float, float]:
    """How far to widen a geometry's bounding box, in degrees of longitude and latitude, so that every point
    within ``distance_m`` of the geometry (``same_place.distance_m``: great circle on the sphere of radius
    ``EARTH_RADIUS_M``) lies inside it. Exact on the sphere: a point at angular distance ``delta`` from a point
    at latitude ``phi`` differs from it by at most ``delta`` in latitude and by at most
    ``asin(sin(delta) / cos(phi))`` in longitude, largest at the box's highest absolute latitude. One part in a
    million more absorbs rounding. Near a pole (or beyond a quarter of the globe) the longitude margin is the
    whole circle."""
    delta = distance_m / EARTH_RADIUS_M
    dy = math.degrees(delta) * (1 + 1e-6)
    top = math.radians(max(abs(bounds[1]), abs(bounds[3])))
    ratio = math.sin(min(delta, math.pi / 2)) / math.cos(top) if top < math.pi / 2 else math.inf
    dx = 360.0 if ratio >= 1 else math.degrees(math.asin(ratio)) * (1 + 1e-6)
    return dx, dy


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
    """The nearest live feature of another commune that is the same real thing, and its distance."""
    assert c.feature is not None
    best: tuple[float, FeatureKey] | None = None
    for key in world.grid.near(c.key.dataset, c.feature, policy):
        if key.commune == c.key.commune:
            continue  # Link.SAME_SOURCE: one commune's two records stay two
        s = world.stored.get(key)
        if s is None or s.deleted or s.feature is None or s.feature.geometry is None:
            continue
        if not attributes_allow(c.feature.attributes, s.feature.attributes, policy):
            continue  # Link.DISTINCT or Link.ATTRIBUTES_DIFFER, known before measuring any distance
        if _boxes_farther_than(c.feature, s.feature, policy.distance_m):
            continue  # Link.TOO_FAR, known from the bounding boxes (two parks: no nearest points to compute)
        here, there = _placed(c.key.commune, c.feature, s.feature)
        if distance_m(here, there) > policy.distance_m:
            continue  # Link.TOO_FAR
        there = replace(there, source=key.commune)
        if same_place(here, there, policy) is Link.SAME:
            d = distance_m(here, there)
            if best is None or (d, key.commune, key.feature_id) < (best[0], best[1].commune, best[1].feature_id):
                best = (d, key)
    return None if best is None else (best[1], best[0])


def _rekeyed(
    c: Candidate, key: FeatureKey, sequence: int, occurred_at: datetime, feature: CanonicalFeature | None
) -> Candidate:
    ev = replace(c.event, commune=key.commune, feature_id=key.feature_id, sequence=sequence, occurred_at=occurred_at)
    return Candidate(ev, key, feature)


def dissolve_group(
    canonical: FeatureKey,
    members: Iterable[Member],
    stored: Mapping[FeatureKey, StoredFeature],
    trigger: Candidate,
) -> list[Decision]:
    """The changes that turn a previous-model group back into one feature per source record.

    The canonical key gets its own record's content back (deleted when its own record was); its stored
    position only moves forward (``sequence + 1``), as the store's ordering guard requires. Every other
    live member becomes a feature at its own key, at its own position, linked to the canonical feature's
    key. Each change is written under ``trigger``'s event id (the event that reached the group)."""
    group = sorted(members, key=lambda m: (m.key.commune, m.key.feature_id))
    out: list[Decision] = []
    before = stored.get(canonical)
    own = next((m for m in group if m.key == canonical), None)
    own_feature = None if own is None or own.removed else own.feature
    if before is not None:
        after_feature = own_feature
        was_live = not before.deleted
        same = (
            was_live
            and after_feature is not None
            and before.feature is not None
            and before.feature.content_hash == after_feature.content_hash
        )
        if not same and (was_live or after_feature is not None):
            seq, occ = before.sequence + 1, before.occurred_at
            after = StoredFeature(seq, occ, after_feature is None, after_feature)
            outcome = Outcome.DELETED if after_feature is None else Outcome.UPDATED if was_live else Outcome.CREATED
            out.append(Decision(_rekeyed(trigger, canonical, seq, occ, after_feature), outcome, before, after))
    for m in group:
        if m.key == canonical or m.removed or m.feature is None:
            continue
        prior = stored.get(m.key)
        seq, occ = m.sequence, m.occurred_at
        if prior is not None and (prior.sequence, prior.occurred_at) >= (seq, occ):
            seq, occ = prior.sequence + 1, prior.occurred_at
        feature = linked(m.feature, [link_to(canonical, m.distance_m)]) if own_feature is not None else m.feature
        after = StoredFeature(seq, occ, False, feature)
        live_before = prior is not None and not prior.deleted
        outcome = Outcome.UPDATED if live_before else Outcome.CREATED
        out.append(Decision(_rekeyed(trigger, m.key, seq, occ, feature), outcome, prior, after))
    return out


def dissolve_groups(
    groups: Mapping[FeatureKey, Iterable[Member]], stored: Mapping[FeatureKey, StoredFeature], now: datetime
) -> list[Decision]:
    """The repair of groups that no event reached: ``dissolve_group`` for each, under an event id that names the
    repair and the group (``repair:same-place:<dataset>/<commune>/<feature id>``), at ``now``."""
    out: list[Decision] = []
    for canonical, members in sorted(groups.items(), key=lambda kv: (kv[0].dataset, kv[0].commune, kv[0].feature_id)):
        trigger = Candidate(
            ChangeEvent(
                f"repair:same-place:{canonical.dataset}/{canonical.commune}/{canonical.feature_id}",
                canonical.dataset,
                canonical.commune,
                canonical.feature_id,
                Operation.UPSERT,
                now,
                0,
                "odc-repair",
            ),
            canonical,
            None,
        )
        out.extend(dissolve_group(canonical, members, stored, trigger))
    return out


def decide_linked_batch(
    stored: Mapping[FeatureKey, StoredFeature],
    members: Mapping[FeatureKey, Member],
    candidates: list[Candidate],
    policies: Mapping[str, SamePlacePolicy],
    now: datetime,
) -> LinkedBatch:
    """Decide a batch in arrival order. ``stored`` holds the rows of the candidates' keys, of the live features
    near the new records and of every key of the previous model's groups in ``members`` (which holds every
    member of the groups the candidates belong to). ``now`` is kept for the callers' signature."""
    del now
    world = _World(dict(stored), policies)
    world.grid.measure(
        [c.feature.geometry for c in candidates if c.feature is not None and c.feature.geometry is not None]
    )
    reported: list[Decision] = []
    to_save: list[Decision] = []
    groups: dict[FeatureKey, list[Member]] = {}
    for m in members.values():
        groups.setdefault(m.canonical, []).append(m)
    dissolved: list[FeatureKey] = []

    def save(d: Decision) -> None:
        to_save.append(d)
        world.put(d)

    for received in candidates:
        c = received
        policy = policies.get(c.key.dataset)
        member = members.get(c.key)
        if member is not None and member.canonical in groups:
            # the previous model's group this record belongs to: one feature per source record again
            for d in dissolve_group(member.canonical, groups.pop(member.canonical), world.stored, c):
                save(d)
            dissolved.append(member.canonical)
            if (c.event.sequence, c.event.occurred_at) <= (member.sequence, member.occurred_at):
                reported.append(Decision(c, Outcome.STALE, None, None))
                continue
            s = world.stored.get(c.key)
            if s is not None and (c.event.sequence, c.event.occurred_at) <= (s.sequence, s.occurred_at):
                # newer than its record, older than the group's counter the canonical row carried: ordered after it
                c = _rekeyed(c, c.key, s.sequence + 1, max(s.occurred_at, c.event.occurred_at), c.feature)
        c = carried_link(world.stored.get(c.key), c)
        plain = decide(world.stored.get(c.key), c)
        if (
            policy is not None
            and policy.distance_m > 0
            and plain.outcome is Outcome.CREATED
            and c.feature is not None
            and SAME_PLACE_AS not in c.feature.attributes
        ):
            found = find_link(world, c, policy)
            if found is not None:
                target, distance = found
                c = replace(c, feature=linked(c.feature, [link_to(target, distance)]))
                plain = decide(world.stored.get(c.key), c)
                reported.append(Decision(c, Outcome.LINKED, plain.before, plain.after))
                save(plain)
                continue
        reported.append(plain)
        save(plain)
    return LinkedBatch(reported, to_save, dissolved)
