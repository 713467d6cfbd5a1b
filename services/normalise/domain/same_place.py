"""Same place, two records: decide whether two features of one dataset are the same real thing.

Two records are linked when they come from different sources (a commune and the Métropole, OSM and a
commune...), lie within the dataset's distance of each other, agree on every ``match_fields`` value they
both carry, and do not differ on any ``distinct_fields`` value they both carry (a market held on Tuesday
and the one held on Saturday at the same spot stay two records). Records of one source are never linked:
a source that sends two ids for one place is told so by its own data, not silently merged. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from services.contract.datasets.catalogue import SamePlacePolicy
from services.contract.datasets.field_names import fold

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class PlacedRecord:
    source: str
    lon: float
    lat: float
    attributes: Mapping[str, object]


class Link(str, Enum):
    SAME = "same"
    DISABLED = "disabled"  # the dataset does not link records
    SAME_SOURCE = "same_source"
    TOO_FAR = "too_far"
    ATTRIBUTES_DIFFER = "attributes_differ"
    DISTINCT = "distinct"  # a distinct_fields value differs: legitimately two records at one point


def distance_m(a: PlacedRecord, b: PlacedRecord) -> float:
    """Great-circle distance (haversine), precise to well under a metre at the distances that matter here."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _comparable(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return fold(str(value)) if isinstance(value, str) else str(value)


def folded_text_values(attributes: Mapping[str, object], names: tuple[str, ...]) -> dict[str, str]:
    """The folded value of each named attribute that is text with something left once folded: what a store
    may compare on its side to rule a neighbour out early (other kinds of values are compared by
    ``attributes_allow`` alone)."""
    out: dict[str, str] = {}
    for name in names:
        value = attributes.get(name)
        if isinstance(value, str):
            folded = _comparable(value)
            if folded:
                out[name] = folded
    return out


def same_place(a: PlacedRecord, b: PlacedRecord, policy: SamePlacePolicy) -> Link:
    if policy.distance_m <= 0:
        return Link.DISABLED
    if a.source == b.source:
        return Link.SAME_SOURCE
    if distance_m(a, b) > policy.distance_m:
        return Link.TOO_FAR
    for name in policy.distinct_fields:
        va, vb = _comparable(a.attributes.get(name)), _comparable(b.attributes.get(name))
        if va is not None and vb is not None and va != vb:
            return Link.DISTINCT
    for name in policy.match_fields:
        va, vb = _comparable(a.attributes.get(name)), _comparable(b.attributes.get(name))
        if va is not None and vb is not None and va != vb:
            return Link.ATTRIBUTES_DIFFER
    return Link.SAME


def attributes_allow(a: Mapping[str, object], b: Mapping[str, object], policy: SamePlacePolicy) -> bool:
    """The attribute half of ``same_place`` (no distinct field differs, no match field differs): cheap, so a
    batch checks it before measuring the distance between two polygons."""
    for name in policy.compared_fields:
        va, vb = _comparable(a.get(name)), _comparable(b.get(name))
        if va is not None and vb is not None and va != vb:
            return False
    return True
