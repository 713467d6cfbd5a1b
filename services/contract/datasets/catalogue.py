"""Load and check dataset definitions. Adding a dataset is adding a folder, not code.

Each dataset is ``definitions/<id>/definition.json`` (identity, geometry and how the schema carries it,
geometry policy, area, name aliases, same-place policy, versioning; for the DCAT catalogue its description for
users, keywords, EU data themes and update frequency) next to its Table Schema: the national
schema copied unmodified as ``schema.json`` (with a ``SOURCE.md`` naming repository, commit and licence), or
the project's own canonical schema, written in the same Table Schema form, where France has none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.contract.datasets.field_names import FieldMatcher
from services.contract.territories import DEFAULT_TERRITORY, Territory, load_territory

DEFINITIONS_DIR = Path(__file__).resolve().parent / "definitions"
# Commune boundaries (GeoJSON, WGS84, one feature per INSEE code; see boundaries/SOURCE.md). Which file a
# deployment uses is its territory's (services/contract/territories/, the ODC_TERRITORY setting).
BOUNDARIES_FILE = Path(__file__).resolve().parent / "boundaries" / "metropole_de_lyon_communes.geojson"

GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "None"}
FIELD_TYPES = {
    "string",
    "integer",
    "number",
    "boolean",
    "date",
    "datetime",
    "time",
    "year",
    "yearmonth",
    "geopoint",
    "geojson",
    "array",
    "object",
    "duration",
    "any",
}
# How a schema carries a feature's position: the GeoJSON geometry only, two coordinate columns
# (Xlong/Ylat, LONGITUDE/LATITUDE, long_coor1/lat_coor1...), one geopoint column, or one WKT column.
CARRIERS = {"geojson", "xy", "geopoint", "wkt", "none"}
POLICIES = {"reject", "flag"}
# The EU's data themes (http://publications.europa.eu/resource/authority/data-theme), the ``themes`` of a definition:
# DCAT-AP's vocabulary for dcat:theme, read by data.gouv.fr's harvester.
DATA_THEMES = {
    "AGRI", "ECON", "EDUC", "ENER", "ENVI", "GOVE", "HEAL", "INTR", "JUST", "REGI", "SOCI", "TECH", "TRAN",
}  # fmt: skip
# The EU's frequencies (http://publications.europa.eu/resource/authority/frequency) a definition may name as its
# ``accrual_periodicity``; the default is UPDATE_CONT: versions are published as the communes' changes arrive.
FREQUENCIES = {"UPDATE_CONT", "CONT", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "QUARTERLY", "ANNUAL", "IRREG"}

Box = tuple[float, float, float, float]
# A dataset whose "area" is "territory" is the deployment's own: its positions are checked against the
# territory's area (ODC_TERRITORY; the Métropole de Lyon's 58 communes span about 4.66..5.07 E, 45.55..45.94 N,
# its area is 4.55..5.20 E, 45.45..46.05 N), and its commune fields accept the territory's communes only: a
# schema pattern holding COMMUNE_TOKEN gets the territory's codes in its place when the catalogue is loaded.
TERRITORY_AREA = "territory"
LEGACY_TERRITORY_AREAS = {"metropole_de_lyon"}  # the name definitions used when the territory was fixed
COMMUNE_TOKEN = "{commune}"
# Areas of national datasets: WGS84 lon/lat boxes, with a margin.
AREAS: dict[str, tuple[Box, ...]] = {
    # Metropolitan France incl. Corsica.
    "france_metropolitaine": ((-5.8, 41.2, 10.0, 51.3),),
    # France with its overseas départements and collectivities (national bases such as the BNLC cover them).
    "france": (
        (-5.8, 41.2, 10.0, 51.3),  # metropolitan France and Corsica
        (-61.9, 15.8, -60.8, 16.6),  # Guadeloupe
        (-61.3, 14.3, -60.7, 14.95),  # Martinique
        (-54.7, 2.0, -51.5, 5.9),  # Guyane
        (55.1, -21.5, 55.9, -20.8),  # La Réunion
        (44.9, -13.1, 45.4, -12.5),  # Mayotte
        (-56.5, 46.7, -56.1, 47.2),  # Saint-Pierre-et-Miquelon
        (-63.2, 17.8, -62.7, 18.2),  # Saint-Martin, Saint-Barthélemy
    ),
}
AREA_NAMES: dict[str, tuple[str, str]] = {
    "france_metropolitaine": ("metropolitan France", "de la France métropolitaine"),
    "france": ("France (metropolitan and overseas)", "de la France (métropole et outre-mer)"),
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
    x_field: str | None = None  # carrier "xy": the longitude / easting column
    y_field: str | None = None  # carrier "xy": the latitude / northing column
    field: str | None = None  # carrier "geopoint" or "wkt": the column
    # what to do with a position outside the dataset's area, or a placeholder (0,0 / 1,1):
    # "reject" the record, or "flag" it (accepted, the flag recorded among its corrections)
    out_of_area: str = "reject"
    placeholder: str = "reject"
    # a position farther than ``commune_tolerance_m`` outside the boundary of the commune that sent it (when
    # that commune's boundary is known, see ``boundaries/``): "reject" the record or "flag" it
    outside_commune: str = "flag"
    commune_tolerance_m: float = 100.0


@dataclass(frozen=True)
class SamePlacePolicy:
    """When two records of different sources are the same real thing (see normalise/domain/same_place.py)."""

    distance_m: float = 0.0  # 0 disables linking for the dataset
    match_fields: tuple[str, ...] = ()  # must be equal (folded text) when both records have them
    distinct_fields: tuple[str, ...] = ()  # when both have them and they differ, the records stay distinct

    @property
    def compared_fields(self) -> tuple[str, ...]:
        """Every field the rule compares: the distinct fields, then the match fields."""
        return (*self.distinct_fields, *self.match_fields)


@dataclass(frozen=True)
class NationalSchema:
    name: str
    version: str
    repository: str
    path: str
    commit: str
    licence: str


@dataclass(frozen=True)
class DatasetDefinition:
    id: str
    title_fr: str
    title_en: str
    identity_fields: tuple[str, ...]
    commune_field: str | None
    geometry: GeometrySpec
    area: str
    versioning: VersioningPolicy
    table_schema: dict[str, Any]
    national_schema: NationalSchema | None = None
    schema_note: str = ""  # for developers: why the schema is what it is (not published)
    # what the dataset holds, for its users (DCAT dct:description), and how it is found (dcat:keyword, dcat:theme)
    description_fr: str = ""
    description_en: str = ""
    keywords: tuple[str, ...] = ()
    themes: tuple[str, ...] = ()
    accrual_periodicity: str = "UPDATE_CONT"
    field_names: tuple[str, ...] = field(default=())
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    same_place: SamePlacePolicy = field(default_factory=SamePlacePolicy)
    # schema fields that change without the thing changing (a timestamp, live counts): snapshot
    # connectors leave them out of change detection (services/ingest/domain/snapshot_diff.py)
    volatile_fields: tuple[str, ...] = ()
    # the area positions are checked against, and its name in messages (en, fr)
    area_boxes: tuple[Box, ...] = ()
    area_name: tuple[str, str] = ("the dataset's area", "de la zone du jeu de données")  # fr: after "hors"
    # field -> how a valid value is written, in words with an example (en, fr): shown instead of the pattern
    pattern_words: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def identity_field(self) -> str:
        """The identity field, or the first of a composite identity."""
        return self.identity_fields[0]

    @property
    def boxes(self) -> tuple[Box, ...]:
        return self.area_boxes or AREAS[self.area]

    @property
    def bounds(self) -> Box:
        """The envelope of the dataset's area boxes."""
        bs = self.boxes
        return (min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs))

    def matcher(self) -> FieldMatcher:
        return FieldMatcher(self.field_names, self.aliases)


def _check_field(origin: str, names: tuple[str, ...], what: str, name: str | None) -> None:
    if name is not None and name not in names:
        raise DefinitionError(f"{origin}: {what} {name!r} is not a schema field")


def _example_of(pattern: str, code: str) -> str:
    """A value matching a simple pattern of the definitions (a commune code, then literals and digit runs)."""
    text = pattern.strip("^$").replace(COMMUNE_TOKEN, code).replace("(", "").replace(")", "")
    return re.sub(r"\[0-9\](\{\d+(,\d+)?\}|\+|\*)?", "1", text)


def _territory_schema(
    schema: dict[str, Any], territory: Territory, origin: str
) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """The schema with the territory's commune codes in place of COMMUNE_TOKEN, and how each such field is
    written in words (a commune code: "a 5-character INSEE code of a commune of <territory>, e.g. 69123")."""
    words: dict[str, tuple[str, str]] = {}
    fields = []
    for spec in schema.get("fields", []):
        f = dict(spec)
        pattern = f.get("constraints", {}).get("pattern")
        if isinstance(pattern, str) and COMMUNE_TOKEN in pattern:
            resolved = pattern.replace(COMMUNE_TOKEN, territory.code_pattern)
            example = _example_of(pattern, territory.example)
            if not re.fullmatch(resolved, example):
                raise DefinitionError(f"{origin}: field {f['name']}: no example can be written for its pattern")
            if pattern.strip("^$()") == COMMUNE_TOKEN:
                words[f["name"]] = territory.describe_code()
            else:
                words[f["name"]] = (
                    f"the INSEE code of a commune of {territory.name} then the rest of the identifier, e.g. {example}",
                    f"le code INSEE d'une commune de {territory.name} puis la suite de l'identifiant, par exemple {example}",
                )
            f["constraints"] = {**f["constraints"], "pattern": resolved}
        fields.append(f)
    return ({**schema, "fields": fields} if words else schema), words


def _definition_from_dict(
    raw: dict[str, Any], schema: dict[str, Any], origin: str, territory: Territory | None = None
) -> DatasetDefinition:
    territory = territory or load_territory(DEFAULT_TERRITORY)
    schema, pattern_words = _territory_schema(schema, territory, origin)
    try:
        fields = schema["fields"]
        names = tuple(f["name"] for f in fields)
        for f in fields:
            if f.get("type", "string") not in FIELD_TYPES:
                raise DefinitionError(f"{origin}: field {f['name']}: unknown type {f.get('type')!r}")
        geometry = GeometrySpec(**raw["geometry"])
        if geometry.type not in GEOMETRY_TYPES:
            raise DefinitionError(f"{origin}: unknown geometry type {geometry.type!r}")
        if geometry.carrier not in CARRIERS:
            raise DefinitionError(f"{origin}: unknown geometry carrier {geometry.carrier!r}")
        if (
            geometry.out_of_area not in POLICIES
            or geometry.placeholder not in POLICIES
            or geometry.outside_commune not in POLICIES
        ):
            raise DefinitionError(f"{origin}: geometry policies must be one of {sorted(POLICIES)}")
        if not isinstance(geometry.commune_tolerance_m, int | float) or geometry.commune_tolerance_m < 0:
            raise DefinitionError(f"{origin}: commune_tolerance_m must be a number of metres >= 0")
        if geometry.carrier == "xy" and (geometry.x_field is None or geometry.y_field is None):
            raise DefinitionError(f"{origin}: carrier 'xy' needs x_field and y_field")
        if geometry.carrier in ("geopoint", "wkt") and geometry.field is None:
            raise DefinitionError(f"{origin}: carrier {geometry.carrier!r} needs field")
        for what, name in (
            ("x_field", geometry.x_field),
            ("y_field", geometry.y_field),
            ("geometry field", geometry.field),
        ):
            _check_field(origin, names, what, name)
        area = raw.get("area", "france_metropolitaine")
        if area in LEGACY_TERRITORY_AREAS:
            area = TERRITORY_AREA
        if area == TERRITORY_AREA:
            area_boxes: tuple[Box, ...] = (territory.area,)
            area_name = (f"the territory of {territory.name}", f"du territoire de {territory.name}")
        elif area in AREAS:
            area_boxes, area_name = AREAS[area], AREA_NAMES[area]
        else:
            raise DefinitionError(f"{origin}: unknown area {area!r}")
        identity = raw["identity_field"]
        identity_fields = tuple(identity) if isinstance(identity, list) else (identity,)
        for name in identity_fields:
            _check_field(origin, names, "identity_field", name)
        commune_field = raw.get("commune_field")
        _check_field(origin, names, "commune_field", commune_field)
        aliases = {k: tuple(v) for k, v in raw.get("aliases", {}).items()}
        for name in aliases:
            _check_field(origin, names, "alias target", name)
        volatile_fields = tuple(raw.get("volatile_fields", ()))
        for name in volatile_fields:
            _check_field(origin, names, "volatile field", name)
        sp = raw.get("same_place", {})
        same_place = SamePlacePolicy(
            distance_m=float(sp.get("distance_m", 0.0)),
            match_fields=tuple(sp.get("match_fields", ())),
            distinct_fields=tuple(sp.get("distinct_fields", ())),
        )
        for name in (*same_place.match_fields, *same_place.distinct_fields):
            _check_field(origin, names, "same_place field", name)
        ns = raw.get("national_schema")
        description = raw.get("description", {})
        themes = tuple(raw.get("themes", ()))
        for theme in themes:
            if theme not in DATA_THEMES:
                raise DefinitionError(
                    f"{origin}: theme {theme!r} is not an EU data theme ({', '.join(sorted(DATA_THEMES))})"
                )
        periodicity = raw.get("accrual_periodicity", "UPDATE_CONT")
        if periodicity not in FREQUENCIES:
            raise DefinitionError(f"{origin}: accrual_periodicity {periodicity!r} is not one of {sorted(FREQUENCIES)}")
        return DatasetDefinition(
            id=raw["id"],
            title_fr=raw["title"]["fr"],
            title_en=raw["title"]["en"],
            identity_fields=identity_fields,
            commune_field=commune_field,
            geometry=geometry,
            area=area,
            versioning=VersioningPolicy(**raw.get("versioning", {})),
            table_schema=schema,
            national_schema=NationalSchema(**ns) if ns else None,
            schema_note=raw.get("schema_note", ""),
            description_fr=str(description.get("fr", "")),
            description_en=str(description.get("en", "")),
            keywords=tuple(str(k) for k in raw.get("keywords", ())),
            themes=themes,
            accrual_periodicity=periodicity,
            field_names=names,
            aliases=aliases,
            same_place=same_place,
            volatile_fields=volatile_fields,
            area_boxes=area_boxes,
            area_name=area_name,
            pattern_words=pattern_words,
        )
    except (KeyError, TypeError) as exc:
        raise DefinitionError(f"{origin}: malformed definition ({exc!r})") from exc


def load_definition(folder: Path, territory: Territory | None = None) -> DatasetDefinition:
    path = folder / "definition.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    origin = f"{folder.name}/definition.json"
    schema_ref = raw.get("schema")
    if isinstance(schema_ref, str):  # a file next to the definition, e.g. the national schema.json
        schema = json.loads((folder / schema_ref).read_text(encoding="utf-8"))
    elif isinstance(schema_ref, dict):
        schema = schema_ref
    else:
        raise DefinitionError(f"{origin}: 'schema' must be a file name or an inline Table Schema")
    if raw.get("national_schema") and schema.get("version") not in (None, raw["national_schema"].get("version")):
        raise DefinitionError(
            f"{origin}: national_schema.version {raw['national_schema'].get('version')!r} "
            f"differs from the schema file's {schema.get('version')!r}"
        )
    d = _definition_from_dict(raw, schema, origin, territory)
    if d.id != folder.name:
        raise DefinitionError(f"{origin}: id {d.id!r} must match the folder name")
    return d


def load_commune_boundaries(path: Path = BOUNDARIES_FILE) -> dict[str, dict[str, Any]]:
    """INSEE code -> GeoJSON geometry (a plain dict: the normaliser's core compiles it with shapely)."""
    collection = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, dict[str, Any]] = {}
    for feature in collection["features"]:
        code = str(feature["properties"]["code"])
        if code in out:
            raise DefinitionError(f"{path.name}: INSEE code {code} appears twice")
        out[code] = feature["geometry"]
    return out


class DatasetCatalogue:
    def __init__(
        self,
        definitions: dict[str, DatasetDefinition],
        commune_boundaries: dict[str, dict[str, Any]] | None = None,
        territory: Territory | None = None,
    ) -> None:
        self._definitions = dict(sorted(definitions.items()))
        # the communes whose boundary is known: positions they send are checked against it
        self.commune_boundaries: dict[str, dict[str, Any]] = dict(commune_boundaries or {})
        self.territory = territory or load_territory(DEFAULT_TERRITORY)

    @classmethod
    def load(
        cls,
        directory: Path = DEFINITIONS_DIR,
        boundaries: Path | str | None = "territory",
        territory: Territory | str | None = None,
    ) -> DatasetCatalogue:
        """``territory``: a Territory or the ODC_TERRITORY setting (default: the Métropole de Lyon).
        ``boundaries``: the territory's (default), another GeoJSON file, or None to check no commune's."""
        t = load_territory(territory or DEFAULT_TERRITORY) if not isinstance(territory, Territory) else territory
        defs: dict[str, DatasetDefinition] = {}
        for path in sorted(directory.glob("*/definition.json")):
            d = load_definition(path.parent, t)
            defs[d.id] = d
        if isinstance(boundaries, Path):
            commune_boundaries: dict[str, dict[str, Any]] | None = load_commune_boundaries(boundaries)
        else:
            commune_boundaries = t.boundaries if boundaries is not None else None
        return cls(defs, commune_boundaries, t)

    def get(self, dataset_id: str) -> DatasetDefinition | None:
        return self._definitions.get(dataset_id)

    def __iter__(self) -> Iterator[DatasetDefinition]:
        return iter(self._definitions.values())

    def ids(self) -> list[str]:
        return list(self._definitions)
