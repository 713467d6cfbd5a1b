"""Load and check dataset definitions. Adding a dataset is adding a JSON file, not code."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFINITIONS_DIR = Path(__file__).resolve().parent / "definitions"

GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "None"}
FIELD_TYPES = {"string", "integer", "number", "boolean", "date", "datetime", "time", "year", "any"}

# Areas a dataset's features must fall in (WGS84 lon/lat bounding boxes, with a margin).
AREAS: dict[str, tuple[float, float, float, float]] = {
    # Métropole de Lyon's 58 communes span about 4.66..5.07 E, 45.55..45.94 N.
    "metropole_de_lyon": (4.55, 45.45, 5.20, 46.05),
    # Metropolitan France incl. Corsica.
    "france_metropolitaine": (-5.8, 41.2, 10.0, 51.3),
}


class DefinitionError(ValueError):
    pass


@dataclass(frozen=True)
class VersioningPolicy:
    quiet_period_seconds: float = 2.0
    max_changes: int = 20000


@dataclass(frozen=True)
class GeometrySpec:
    type: str  # a GeoJSON type, or "None" for datasets without geometry
    carrier: str = "geojson"
    nullable: bool = False


@dataclass(frozen=True)
class DatasetDefinition:
    id: str
    title_fr: str
    title_en: str
    identity_field: str
    commune_field: str | None
    geometry: GeometrySpec
    area: str
    versioning: VersioningPolicy
    table_schema: dict[str, Any]
    national_schema: dict[str, Any] | None = None
    schema_note: str = ""
    field_names: tuple[str, ...] = field(default=())

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return AREAS[self.area]


def _definition_from_dict(raw: dict[str, Any], origin: str) -> DatasetDefinition:
    try:
        schema = raw["schema"]
        fields = schema["fields"]
        names = tuple(f["name"] for f in fields)
        for f in fields:
            if f.get("type", "string") not in FIELD_TYPES:
                raise DefinitionError(f"{origin}: field {f['name']}: unknown type {f.get('type')!r}")
        geometry = GeometrySpec(**raw["geometry"])
        if geometry.type not in GEOMETRY_TYPES:
            raise DefinitionError(f"{origin}: unknown geometry type {geometry.type!r}")
        area = raw.get("area", "france_metropolitaine")
        if area not in AREAS:
            raise DefinitionError(f"{origin}: unknown area {area!r}")
        if raw["identity_field"] not in names:
            raise DefinitionError(f"{origin}: identity_field {raw['identity_field']!r} is not a schema field")
        commune_field = raw.get("commune_field")
        if commune_field is not None and commune_field not in names:
            raise DefinitionError(f"{origin}: commune_field {commune_field!r} is not a schema field")
        return DatasetDefinition(
            id=raw["id"],
            title_fr=raw["title"]["fr"],
            title_en=raw["title"]["en"],
            identity_field=raw["identity_field"],
            commune_field=commune_field,
            geometry=geometry,
            area=area,
            versioning=VersioningPolicy(**raw.get("versioning", {})),
            table_schema=schema,
            national_schema=raw.get("national_schema"),
            schema_note=raw.get("schema_note", ""),
            field_names=names,
        )
    except (KeyError, TypeError) as exc:
        raise DefinitionError(f"{origin}: malformed definition ({exc!r})") from exc


class DatasetCatalogue:
    def __init__(self, definitions: dict[str, DatasetDefinition]) -> None:
        self._definitions = dict(sorted(definitions.items()))

    @classmethod
    def load(cls, directory: Path = DEFINITIONS_DIR) -> DatasetCatalogue:
        defs: dict[str, DatasetDefinition] = {}
        for path in sorted(directory.glob("*.json")):
            d = _definition_from_dict(json.loads(path.read_text(encoding="utf-8")), path.name)
            if d.id != path.stem:
                raise DefinitionError(f"{path.name}: id {d.id!r} must match the file name")
            defs[d.id] = d
        return cls(defs)

    def get(self, dataset_id: str) -> DatasetDefinition | None:
        return self._definitions.get(dataset_id)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._definitions.values())

    def ids(self) -> list[str]:
        return list(self._definitions)
