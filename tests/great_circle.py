"""Test helper: the point a distance away along a great circle, on the sphere ``same_place.distance_m`` uses."""

from __future__ import annotations

import math

from services.normalise.domain.same_place import EARTH_RADIUS_M


def destination(lon: float, lat: float, bearing_deg: float, metres: float) -> tuple[float, float]:
    """(lon, lat) of the point ``metres`` from (lon, lat) at initial bearing ``bearing_deg`` (0 = north)."""
    d, t, p1 = metres / EARTH_RADIUS_M, math.radians(bearing_deg), math.radians(lat)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(t))
    dl = math.atan2(math.sin(t) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    return lon + math.degrees(dl), math.degrees(p2)
