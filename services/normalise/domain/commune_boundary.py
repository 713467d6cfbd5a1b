"""Is a position inside the boundary of the commune that sent it? Pure.

The boundaries (``services/contract/datasets/boundaries/``) are simplified: they are compiled once into
shapely geometries prepared for point-in-polygon tests, each also kept in a local metric frame (an
equirectangular projection around its own latitude, well under 1 % off at a commune's size) so that the
distance outside is measured in metres without pyproj in the hot path. Only positions found outside pay for
the distance. A feature that is not a point is checked at its representative point (a point surely inside
it), so a park reaching over a border is judged by where it mostly lies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from services.contract.datasets.catalogue import GeometrySpec
from services.contract.messages import FieldError

_M_PER_DEG_LAT = 111_195.0  # mean Earth radius 6,371,008.8 m * pi / 180


@dataclass(frozen=True)
class OutsideCommune:
    commune: str
    distance_m: float  # from the boundary, in metres (rounded to the metre)

    @property
    def flag(self) -> str:
        return f"outside_commune:{self.commune}:{self.distance_m:.0f}m"


class _Compiled:
    def __init__(self, geometry: BaseGeometry) -> None:
        self.geometry = geometry
        shapely.prepare(self.geometry)
        self.lat0 = geometry.centroid.y
        self.kx = _M_PER_DEG_LAT * math.cos(math.radians(self.lat0))
        self.metric = self._to_metric(geometry)

    def _to_metric(self, g: BaseGeometry) -> BaseGeometry:
        kx = self.kx
        return shapely.transform(g, lambda xy: xy * np.array([kx, _M_PER_DEG_LAT]))

    def distance_m(self, point: BaseGeometry) -> float:
        return float(self.metric.distance(self._to_metric(point)))


class CommuneBoundaries:
    """Compiled once from the catalogue's GeoJSON boundaries; ``outside`` is called per record."""

    def __init__(self, boundaries: Mapping[str, Mapping[str, Any]]) -> None:
        self._compiled = {code: _Compiled(shape(dict(g))) for code, g in boundaries.items()}

    def __contains__(self, commune: str) -> bool:
        return commune in self._compiled

    def outside(self, commune: str, geometry: BaseGeometry, tolerance_m: float) -> OutsideCommune | None:
        """The position lies more than ``tolerance_m`` outside the commune's boundary: say by how much.
        None when it is inside, within the tolerance, or the commune's boundary is not known."""
        compiled = self._compiled.get(commune)
        if compiled is None or geometry.is_empty:
            return None
        point = geometry if geometry.geom_type == "Point" else geometry.representative_point()
        if compiled.geometry.covers(point):
            return None
        distance = compiled.distance_m(point)
        if distance <= tolerance_m:
            return None
        return OutsideCommune(commune, round(distance))

    def judge(self, commune: str, geometry: BaseGeometry, spec: GeometrySpec) -> BoundaryVerdict:
        """Apply the dataset's policy: a rejection (``errors``) or a flag among the corrections (``flags``)."""
        out = self.outside(commune, geometry, spec.commune_tolerance_m)
        if out is None:
            return BoundaryVerdict()
        if spec.outside_commune == "flag":
            return BoundaryVerdict(flags=(out.flag,))
        return BoundaryVerdict(
            errors=(
                FieldError(
                    "outside_commune",
                    f"geometry: {out.distance_m:.0f} m outside the boundary of commune {commune} "
                    f"(tolerance {spec.commune_tolerance_m:.0f} m)",
                    f"géométrie : à {out.distance_m:.0f} m hors des limites de la commune {commune} "
                    f"(tolérance {spec.commune_tolerance_m:.0f} m)",
                    "geometry",
                    shapely.to_wkt(geometry.representative_point() if geometry.geom_type != "Point" else geometry, 7),
                ),
            )
        )


@dataclass(frozen=True)
class BoundaryVerdict:
    errors: tuple[FieldError, ...] = ()
    flags: tuple[str, ...] = ()
