"""Propose a source profile from a file's header and values. Pure: records in, a suggestion out.

Names: a column matches a schema field by its exact name, the dataset's declared aliases, the folded name
(case, accents, punctuation), then by fuzzy similarity (rapidfuzz) of the name, with common French
abbreviations expanded (``adr`` -> adresse, ``nbre`` -> nombre, ``tel`` -> telephone...), against the field's
name and its title in the national schema. Values: each candidate is weighed by how many of the column's
values fit the field (type, enum, pattern), so a name that looks right but holds the wrong kind of value
loses. Positions: coordinate pairs, a "lat, lon" text column, GeoJSON or WKT in a cell, or the file's own
geometry, with the CRS and axis order read from the numbers' ranges (WGS84, Lambert-93, the CC zones).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz

from services.contract.datasets.catalogue import AREAS, DatasetDefinition
from services.contract.datasets.field_names import fold
from services.contract.messages import AttributeValue, GeometryEncoding
from services.ingest.domain.source_profiles import (
    EXTRA_ATTRIBUTE,
    FEATURE,
    GEOJSON_CELL,
    LATLON,
    LONLAT,
    NO_GEOMETRY,
    POINT_TEXT,
    WKT_CELL,
    XY,
    FieldMapping,
    GeometrySource,
    SourceProfile,
    split_pair,
)
from services.ingest.domain.source_records import SourceRecord

SAMPLE = 2000  # records looked at
ACCEPT = 0.72  # a mapping below this confidence is not proposed (the column is listed as not mapped)

ABBREVIATIONS: dict[str, str] = {
    "adr": "adresse",
    "addr": "adresse",
    "address": "adresse",
    "tel": "telephone",
    "phone": "telephone",
    "nb": "nombre",
    "nbr": "nombre",
    "nbre": "nombre",
    "num": "numero",
    "no": "numero",
    "lib": "libelle",
    "libel": "libelle",
    "cp": "code postal",
    "insee": "code insee",
    "codinsee": "code insee",
    "codeinsee": "code insee",
    "com": "commune",
    "comm": "commune",
    "dt": "date",
    "id": "identifiant",
    "ident": "identifiant",
    "uid": "identifiant",
    "gid": "identifiant",
    "lng": "longitude",
    "lon": "longitude",
    "long": "longitude",
    "lat": "latitude",
    "nom": "nom",
    "denom": "nom",
    "denomination": "nom",
    "name": "nom",
    "type": "type",
    "typ": "type",
    "pl": "places",
    "acces": "acces",
    "handicap": "pmr",
    "dispo": "disponibilite",
    "obs": "observations",
    "comment": "commentaire",
    "gest": "gestionnaire",
    "exploit": "exploitant",
    "exploi": "exploitant",
    "date_maj": "date mise a jour",
    "maj": "mise a jour",
}

# words too common in field names to tie a column to a field on their own ('COLL_NOM' is not 'NOM')
GENERIC_WORDS = frozenset(
    {"identifiant", "code", "nom", "type", "date", "numero", "nombre", "libelle", "commune", "adresse", "insee"}
)
TRUE_WORDS = ("oui", "o", "1", "x", "vrai", "true", "yes", "y", "t", "ok", "avec", "present", "presente")
FALSE_WORDS = ("non", "n", "0", "faux", "false", "no", "f", "sans", "absent", "absente")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_INSEE = re.compile(r"^(\d{5}|2[AB]\d{3})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}|^\d{2}/\d{2}/\d{2,4}$|^\d{8}$")
_WKT = re.compile(r"^\s*(SRID=\d+;\s*)?(MULTI)?(POINT|LINESTRING|POLYGON)\s*Z?\s*\(", re.IGNORECASE)
_POSTAL = ("cp", "codepostal", "postal", "zip", "codepost")


def words(name: str) -> str:
    """``NBRE_PLACE`` -> 'nombre place'; ``dateConvention`` -> 'date convention'."""
    s = _CAMEL.sub(" ", name)
    s = unicodedata.normalize("NFKD", s)
    s = "".join(ch for ch in s if not unicodedata.combining(ch)).lower()
    tokens = [t for t in _NOT_ALNUM.split(s) if t]
    joined = "_".join(tokens)
    if joined in ABBREVIATIONS:
        return ABBREVIATIONS[joined]
    return " ".join(ABBREVIATIONS.get(t, t) for t in tokens)


# ----------------------------------------------------------------------------------- column statistics
@dataclass(frozen=True)
class ColumnStats:
    name: str
    values: tuple[str, ...]  # non-empty values (text), in order, sampled
    distinct: int
    unique: bool  # no value twice among the non-empty sampled ones, and no empty one
    rows: int

    @property
    def filled(self) -> float:
        return len(self.values) / self.rows if self.rows else 0.0

    def share(self, test: Any) -> float:
        if not self.values:
            return 0.0
        return sum(1 for v in self.values if test(v)) / len(self.values)


def _text(value: AttributeValue) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    return text or None


def column_stats(records: Sequence[SourceRecord]) -> list[ColumnStats]:
    names: dict[str, None] = {}
    for r in records:
        for k in r.attributes:
            if k != EXTRA_ATTRIBUTE and not k.startswith("_extra"):
                names.setdefault(k, None)
    out = []
    for name in names:
        values = [t for t in (_text(r.attributes.get(name)) for r in records) if t is not None]
        distinct = len(set(values))
        out.append(ColumnStats(name, tuple(values), distinct, distinct == len(values) == len(records), len(records)))
    return out


def _is_number(v: str) -> bool:
    try:
        float(v.replace(",", "."))
        return True
    except ValueError:
        return False


def _is_integer(v: str) -> bool:
    return bool(re.fullmatch(r"[-+]?\d+(\.0+)?", v))


def _is_bool(v: str) -> bool:
    return v.casefold() in TRUE_WORDS or v.casefold() in FALSE_WORDS


# ---------------------------------------------------------------------------------------- positions
def _in_france(lon: float, lat: float) -> bool:
    return any(b[0] <= lon <= b[2] and b[1] <= lat <= b[3] for b in AREAS["france"])


def crs_of(x: float, y: float) -> tuple[str | None, str] | None:
    """(CRS, axis order as written) recognised from one coordinate pair in France (with its overseas
    départements), else None: a pair such as ``1,1`` or ``1;2`` is not taken for a position."""
    if _in_france(x, y):
        return "EPSG:4326", LONLAT
    if _in_france(y, x):
        return "EPSG:4326", LATLON
    if 1_000_000 <= x <= 2_400_000 and 1_000_000 <= y <= 8_500_000:
        zone = round((y - 200_000) / 1_000_000) + 41  # Conique Conforme CC42..CC50: false northing (zone-41)M+0.2M
        if 42 <= zone <= 50:
            return f"EPSG:{3900 + zone}", LONLAT
    if 50_000 <= x <= 1_300_000 and 6_000_000 <= y <= 7_200_000:
        return "EPSG:2154", LONLAT
    if -700_000 <= x <= 1_200_000 and 5_000_000 <= y < 6_000_000:
        return "EPSG:3857", LONLAT
    return None


def _numbers(pair: tuple[str, str] | None) -> tuple[float, float] | None:
    if pair is None:
        return None
    try:
        return float(pair[0]), float(pair[1])
    except ValueError:
        return None


def _vote(pairs: list[tuple[float, float]]) -> tuple[str | None, str, float]:
    """The CRS and order most pairs agree on, and the share that do."""
    counts: dict[tuple[str | None, str], int] = {}
    for x, y in pairs:
        found = crs_of(x, y)
        if found is not None:
            counts[found] = counts.get(found, 0) + 1
    if not counts or not pairs:
        return None, LONLAT, 0.0
    best = max(counts, key=lambda k: counts[k])
    return best[0], best[1], counts[best] / len(pairs)


def _first_position(geometry: Any) -> tuple[float, float] | None:
    coords = geometry.get("coordinates") if isinstance(geometry, dict) else None
    while isinstance(coords, list) and coords and isinstance(coords[0], list):
        coords = coords[0]
    if isinstance(coords, list) and len(coords) >= 2 and all(isinstance(c, int | float) for c in coords[:2]):
        return float(coords[0]), float(coords[1])
    return None


def _wkt_position(text: str) -> tuple[float, float] | None:
    m = re.search(r"\(+\s*([-+\d.eE]+)\s+([-+\d.eE]+)", text)
    return _numbers((m.group(1), m.group(2))) if m else None


@dataclass(frozen=True)
class GeometryCandidate:
    source: GeometrySource
    share: float  # records with a readable position
    why: str


def _geometry_candidates(records: Sequence[SourceRecord], stats: list[ColumnStats]) -> list[GeometryCandidate]:
    n = len(records) or 1
    out: list[GeometryCandidate] = []
    feature_pairs = []
    declared = None
    for r in records:
        if r.geometry is None:
            continue
        declared = declared or r.geometry.crs
        if r.geometry.encoding is GeometryEncoding.GEOJSON:
            try:
                pos = _first_position(json.loads(r.geometry.value))
            except ValueError:
                pos = None
        else:
            pos = _wkt_position(r.geometry.value.decode("utf-8", "replace"))
        if pos is not None:
            feature_pairs.append(pos)
    if feature_pairs:
        crs, order, agree = _vote(feature_pairs)
        # a declared CRS is the file's word; only say one when the file declares none
        out.append(
            GeometryCandidate(
                GeometrySource(FEATURE, (), None if declared else crs, order),
                len(feature_pairs) / n + 0.01,  # the file's own geometry wins a tie
                f"the file's own geometry ({'declared ' + declared if declared else 'CRS recognised from the coordinates: ' + str(crs)}"
                f", {agree:.0%} of positions agree)",
            )
        )
    for s in stats:
        if not s.values:
            continue
        head = s.values[:SAMPLE]
        geojson = [v for v in head if v.startswith("{") and '"coordinates"' in v]
        if len(geojson) >= 0.5 * len(head):
            pairs = [p for p in (_first_position(_loads(v)) for v in geojson) if p]
            crs, order, agree = _vote(pairs)
            out.append(
                GeometryCandidate(
                    GeometrySource(GEOJSON_CELL, (s.name,), crs if crs != "EPSG:4326" else None, LONLAT),
                    len(geojson) / n,
                    f"GeoJSON geometries in column {s.name!r}",
                )
            )
            continue
        wkt = [v for v in head if _WKT.match(v)]
        if len(wkt) >= 0.5 * len(head):
            pairs = [p for p in (_wkt_position(v) for v in wkt) if p]
            crs, order, agree = _vote(pairs)
            out.append(
                GeometryCandidate(
                    GeometrySource(WKT_CELL, (s.name,), crs, LONLAT), len(wkt) / n, f"WKT in column {s.name!r}"
                )
            )
            continue
        pairs = [p for p in (_numbers(split_pair(v)) for v in head) if p]
        if pairs and len(pairs) >= 0.5 * len(head):
            crs, order, agree = _vote(pairs)
            if crs is not None and agree >= 0.5:
                out.append(
                    GeometryCandidate(
                        GeometrySource(POINT_TEXT, (s.name,), crs, order),
                        len(pairs) / n,
                        f"one column {s.name!r} of '{'lat, lon' if order == LATLON else 'x, y'}' pairs ({crs})",
                    )
                )
    # coordinate column pairs: a name that says x/longitude with one that says y/latitude, both numeric
    xs = [s for s in stats if _axis(s.name) == "x" and s.share(_is_number) >= 0.8]
    ys = [s for s in stats if _axis(s.name) == "y" and s.share(_is_number) >= 0.8]
    for sx in xs:
        for sy in ys:
            pairs = [
                p
                for p in (
                    _numbers(
                        (
                            str(r.attributes.get(sx.name) or "").replace(",", "."),
                            str(r.attributes.get(sy.name) or "").replace(",", "."),
                        )
                    )
                    for r in records[:SAMPLE]
                )
                if p
            ]
            crs, order, agree = _vote(pairs)
            if crs is None or agree < 0.5:
                continue
            out.append(
                GeometryCandidate(
                    GeometrySource(XY, (sx.name, sy.name), crs, order),
                    len(pairs) / n,
                    f"coordinate columns {sx.name!r}, {sy.name!r} ({crs}{', written lat/lon' if order == LATLON else ''})",
                )
            )
    return out


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


_X_NAMES = {
    "x",
    "lon",
    "lng",
    "long",
    "longitude",
    "xlong",
    "coordx",
    "xcoord",
    "longcoor1",
    "geomx",
    "coordonneex",
    "xl93",
    "xwgs84",
    "lambertx",
}
_Y_NAMES = {
    "y",
    "lat",
    "latitude",
    "ylat",
    "coordy",
    "ycoord",
    "latcoor1",
    "geomy",
    "coordonneey",
    "yl93",
    "ywgs84",
    "lamberty",
}


def _axis(name: str) -> str | None:
    f = fold(name)
    if f in _X_NAMES or f.startswith("longitude") or (f.startswith("coord") and f.endswith("x")):
        return "x"
    if f in _Y_NAMES or f.startswith("latitude") or (f.startswith("coord") and f.endswith("y")):
        return "y"
    return None


# ------------------------------------------------------------------------------------------ fields
@dataclass(frozen=True)
class _Field:
    name: str
    type: str
    title: str
    required: bool
    enum: tuple[str, ...]
    pattern: re.Pattern[str] | None


def _schema_fields(definition: DatasetDefinition) -> list[_Field]:
    out = []
    for f in definition.table_schema.get("fields", []):
        c = f.get("constraints") or {}
        pattern = None
        if isinstance(c.get("pattern"), str):
            try:
                pattern = re.compile(c["pattern"])
            except re.error:
                pattern = None
        out.append(
            _Field(
                f["name"],
                f.get("type", "string"),
                str(f.get("title") or ""),
                bool(c.get("required")),
                tuple(str(e) for e in c.get("enum", ()) or ()),
                pattern,
            )
        )
    return out


def _enum_target(value: str, enum: tuple[str, ...]) -> str | None:
    """The schema value a local label stands for: same folded text, a close spelling, or the one listed
    value that contains it ('Wallace' -> 'fontaine type Wallace')."""
    v = fold(value)
    if not v:
        return None
    folded = {fold(e): e for e in enum}
    if v in folded:
        return folded[v]
    score, best = max(((fuzz.ratio(v, k), e) for k, e in folded.items()), default=(0.0, ""))
    if score >= 85:
        return best
    containing = [e for k, e in folded.items() if len(v) >= 4 and v in k]
    return containing[0] if len(containing) == 1 else None


def _fits(field: _Field, s: ColumnStats) -> float:
    """Share of the column's values the field would take (1.0 when there is nothing to judge)."""
    if not s.values:
        return 0.5
    if field.enum:
        return s.share(lambda v: _enum_target(v, field.enum) is not None)
    if field.type == "boolean":
        return s.share(_is_bool)
    if field.type == "integer":
        return s.share(_is_integer)
    if field.type == "number":
        return s.share(_is_number)
    if field.type in ("date", "datetime"):
        return s.share(lambda v: bool(_DATE.match(v)))
    if field.pattern is not None:
        pattern = field.pattern
        return s.share(lambda v: bool(pattern.search(v)))
    return 1.0


def _name_score(column: str, field: _Field, aliases: tuple[str, ...]) -> tuple[float, str]:
    if column == field.name:
        return 1.0, "same name"
    if column in aliases:
        return 0.98, "declared alias"
    if fold(column) == fold(field.name) or fold(column) in {fold(a) for a in aliases}:
        return 0.96, "same name (case, accents)"
    cw = words(column)
    best, why = 0.0, ""
    for target, label in (
        (words(field.name), "name"),
        (words(field.title), "title"),
        *((words(a), "alias") for a in aliases),
    ):
        if not target:
            continue
        if cw == target:
            score = 0.93
        elif all(t in GENERIC_WORDS for t in cw.split()):
            # 'id' is not 'identifiant euro', 'nom' not 'nom du lieu': a generic word matches exactly or not
            score = 0.0
        else:
            score = max(fuzz.ratio(cw, target), fuzz.token_sort_ratio(cw, target)) / 100 * 0.9
        shared = set(cw.split()) & set(target.split())
        # a distinctive shared word: 'PMR' in 'accessibilite pmr', 'remplissage' in 'remplissage contenant'
        if any(len(t) >= 3 and t not in GENERIC_WORDS for t in shared):
            score = max(score, fuzz.token_set_ratio(cw, target) / 100 * 0.85)
        if score > best:
            best, why = score, f"similar to the field's {label} ({target!r})"
    return best, why


def _id_like(name: str) -> bool:
    w = words(name).split()
    return bool(w) and (
        w[0] == "identifiant"
        or fold(name) in ("fid", "objectid", "ogcfid", "code", "ref")
        or fold(name).startswith("fid")
    )


def _value_map(field: _Field, s: ColumnStats) -> tuple[tuple[str, AttributeValue], ...]:
    distinct = list(dict.fromkeys(s.values))[:100]
    pairs: list[tuple[str, AttributeValue]] = []
    if field.type == "boolean":
        for v in distinct:
            c = v.casefold()
            if c in TRUE_WORDS and v not in ("true", "True", "TRUE", "1"):
                pairs.append((v, True))
            elif c in FALSE_WORDS and v not in ("false", "False", "FALSE", "0"):
                pairs.append((v, False))
    elif field.enum:
        for v in distinct:
            if v in field.enum:
                continue
            target = _enum_target(v, field.enum)
            if target is not None:
                pairs.append((v, target))
    return tuple(pairs)


@dataclass(frozen=True)
class ProfileSuggestion:
    profile: SourceProfile
    geometry_why: str
    unmapped_columns: tuple[str, ...]  # kept under odc:extra
    missing_fields: tuple[tuple[str, bool], ...]  # (schema field nothing maps to, required by the schema)
    unmapped_values: tuple[tuple[str, tuple[str, ...]], ...]  # field -> local labels outside its enum
    records_sampled: int


def suggest_profile(
    records: Sequence[SourceRecord], definition: DatasetDefinition, *, own_geometry: bool = True
) -> ProfileSuggestion:
    """``own_geometry``: the records' geometry is the file's (GeoJSON), not one the CSV reader guessed."""
    sample = list(records[:SAMPLE])
    if not own_geometry:
        sample = [SourceRecord(r.line, r.attributes, None, r.commune) for r in sample]
    stats = column_stats(sample)
    fields = _schema_fields(definition)
    spec = definition.geometry
    carrier_fields = {n for n in (spec.x_field, spec.y_field, spec.field) if n}

    # the position
    geometry, geometry_why = GeometrySource(NO_GEOMETRY), "no position found in the file"
    if spec.type != "None":
        candidates = sorted(_geometry_candidates(sample, stats), key=lambda c: c.share, reverse=True)
        if candidates and candidates[0].share > 0:
            geometry, geometry_why = candidates[0].source, candidates[0].why
    geometry_columns = set(geometry.columns)

    # the identity: a column named as the identity field, else an id-like column whose values are all
    # present and distinct (a row number, a gid...), taken before the fuzzy names can give it to another field
    id_columns: tuple[str, ...] = ()
    single_identity = len(definition.identity_fields) == 1
    if single_identity:
        identity = next(f for f in fields if f.name == definition.identity_field)
        aliases = definition.aliases.get(identity.name, ())
        if not any(_name_score(s.name, identity, aliases)[0] >= 0.9 for s in stats):
            unique = [s for s in stats if s.unique and s.name not in geometry_columns]
            unique.sort(key=lambda s: 0 if _id_like(s.name) else 1)
            if unique and (_id_like(unique[0].name) or unique[0].share(_is_integer) == 1.0):
                id_columns = (unique[0].name,)

    # names x values, best pairs first, each column and each field once
    scored: list[tuple[float, str, str, str]] = []
    for s in stats:
        if s.name in geometry_columns or s.name in id_columns:
            continue
        for f in fields:
            if f.name in carrier_fields and geometry.kind != NO_GEOMETRY:
                continue
            name_score, why = _name_score(s.name, f, definition.aliases.get(f.name, ()))
            if name_score < 0.6:
                continue
            fits = _fits(f, s)
            if fits < 0.5 and name_score < 0.96:
                continue  # looks like the field, does not hold its kind of values
            confidence = name_score * (0.7 + 0.3 * fits)
            if fits >= 0.9 and (f.type == "boolean" or f.enum) and len(s.values) >= 2:
                confidence = min(0.99, confidence + 0.1)  # yes/no or listed values where the field wants them
            # the field's own name is kept whatever the values: validation then says what is wrong with them
            if confidence >= ACCEPT or name_score >= 0.96:
                scored.append((confidence, s.name, f.name, f"{why}; {fits:.0%} of values fit"))
    scored.sort(key=lambda t: t[0], reverse=True)
    taken_columns: set[str] = set()
    taken_fields: set[str] = set()
    by_field = {f.name: f for f in fields}
    by_column = {s.name: s for s in stats}
    mappings: list[FieldMapping] = []
    for confidence, column, fname, why in scored:
        if column in taken_columns or fname in taken_fields:
            continue
        taken_columns.add(column)
        taken_fields.add(fname)
        mappings.append(
            FieldMapping(column, fname, _value_map(by_field[fname], by_column[column]), round(confidence, 2), why)
        )

    # the commune: the field's column, else a column of INSEE codes (not postcodes)
    commune_column = next((m.column for m in mappings if m.field == definition.commune_field), None)
    if commune_column is None:
        for s in stats:
            if s.name in taken_columns or s.name in geometry_columns or fold(s.name) in _POSTAL:
                continue
            if (
                s.values
                and s.share(lambda v: bool(_INSEE.match(v.zfill(5) if v.isdigit() else v))) >= 0.9
                and ("insee" in fold(s.name) or "com" in fold(s.name))
            ):
                commune_column = s.name
                if definition.commune_field and definition.commune_field not in taken_fields:
                    mappings.append(
                        FieldMapping(s.name, definition.commune_field, (), 0.8, "INSEE codes in the values")
                    )
                    taken_fields.add(definition.commune_field)
                taken_columns.add(s.name)
                break

    used = taken_columns | geometry_columns | set(id_columns)
    unmapped = tuple(s.name for s in stats if s.name not in used)
    covered = taken_fields | (carrier_fields if geometry.kind != NO_GEOMETRY else set())
    if id_columns:
        covered.add(definition.identity_field)
    missing = tuple((f.name, f.required) for f in fields if f.name not in covered)
    outside: list[tuple[str, tuple[str, ...]]] = []
    for m in mappings:
        f = by_field[m.field]
        if f.enum:
            mapped = {k for k, _ in m.values} | set(f.enum)
            left = tuple(v for v in dict.fromkeys(by_column[m.column].values) if v not in mapped)[:20]
            if left:
                outside.append((m.field, left))
    profile = SourceProfile(
        dataset=definition.id,
        fields=tuple(sorted(mappings, key=lambda m: [f.name for f in fields].index(m.field))),
        geometry=geometry,
        id_columns=id_columns,
        commune_column=commune_column,
    )
    return ProfileSuggestion(profile, geometry_why, unmapped, missing, tuple(outside), len(sample))
