"""The territory a deployment serves: the communes that may publish, the area positions are checked against, and
each commune's own area. One setting chooses it (``ODC_TERRITORY``, see docs/validation.md "Territory"):

- ``metropole-de-lyon`` (the default) or ``montpellier-mediterranee-metropole``: a territory file of this
  folder (``<name>.json``), with its communes' generalised boundaries;
- a 9-digit SIREN: the communes of that EPCI (a métropole, a communauté urbaine, d'agglomération or de communes);
- ``departement:XX``: the communes of a département (``departement:34``, ``departement:2A``);
- a path to a territory file of the same form as the ones here (``name`` and ``epci``, ``departement`` or
  ``communes``; optionally ``boundaries``, a GeoJSON file of one feature per INSEE code, and ``area``, a WGS84 box).

The list of communes is the COG as carried by the npm package ``@etalab/decoupage-administratif``, bundled in
``communes.tsv.gz`` (SOURCE.md); nothing is fetched at run time. Where no boundaries are bundled, a commune's
area is the box around its boundary (rounded outward to 0.001°), a coarser check.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COMMUNES_FILE = HERE / "communes.tsv.gz"
GROUPS_FILE = HERE / "groups.json"
DEFAULT_TERRITORY = "metropole-de-lyon"
# around the communes' boxes, the territory's area keeps this margin (degrees; ~8 to 11 km)
AREA_MARGIN_DEG = 0.1

Box = tuple[float, float, float, float]
_SIREN = re.compile(r"^\d{9}$")
_DEPARTEMENT = re.compile(r"^departement:(\d{2,3}|2[AB])$", re.IGNORECASE)


class TerritoryError(ValueError):
    pass


@dataclass(frozen=True)
class CommuneEntry:
    code: str
    name: str
    kind: str  # C current commune, M municipal arrondissement, D delegated commune, A associated commune
    parent: str  # the commune an arrondissement belongs to, or the chef-lieu of a delegated/associated one
    departement: str
    epci: str
    population: int | None
    bbox: Box | None
    former_codes: tuple[str, ...]


@dataclass(frozen=True)
class Territory:
    """What one deployment serves. ``communes`` maps every code a record of the territory may carry (its
    communes, their municipal arrondissements, and the codes of former communes now merged into one of them)
    to its name; ``boundaries`` maps a code to a GeoJSON geometry checked by the normaliser."""

    id: str
    name: str
    communes: dict[str, str]
    area: Box
    boundaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    boundaries_are_boxes: bool = False
    example: str = ""  # the code of its most populous commune, shown in messages

    @property
    def code_pattern(self) -> str:
        """A regular expression (without anchors) matching exactly the territory's commune codes."""
        return "(?:" + "|".join(sorted(self.communes)) + ")"

    def describe_code(self) -> tuple[str, str]:
        """How a commune code of the territory is written, in words with an example (en, fr)."""
        return (
            f"a 5-character INSEE code of a commune of {self.name}, e.g. {self.example}",
            f"un code INSEE à 5 caractères d'une commune de {self.name}, par exemple {self.example}",
        )


def _box(text: str) -> Box | None:
    if not text:
        return None
    w, s, e, n = (float(v) for v in text.split(","))
    return (w, s, e, n)


def _rows(path: Path = COMMUNES_FILE) -> Iterator[tuple[str, ...]]:
    """The bundled COG's rows as text, read as they come (split only: a territory parses the few rows it needs).
    Not kept: the 37,600 rows held ~14 MB in every service for the life of the process (issue #16); a territory
    reads them twice when it is built, once."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:3] != ["code", "name", "kind"]:
            raise TerritoryError(f"{path.name}: unexpected header {header}")
        for line in f:
            yield tuple(line.rstrip("\n").split("\t"))


def _entry(row: tuple[str, ...]) -> CommuneEntry:
    code, name, kind, parent, dep, epci, pop, bbox, former = row
    return CommuneEntry(
        code,
        name,
        kind,
        parent,
        dep,
        epci,
        int(pop) if pop else None,
        _box(bbox),
        tuple(former.split(";")) if former else (),
    )


def read_communes() -> tuple[CommuneEntry, ...]:
    """Every code of the bundled COG (about 37,600 rows)."""
    return tuple(_entry(r) for r in _rows())


@lru_cache(maxsize=1)
def _groups() -> dict[str, dict[str, str]]:
    return json.loads(GROUPS_FILE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _members(current: set[str], entries: tuple[CommuneEntry, ...]) -> tuple[dict[str, str], list[CommuneEntry]]:
    """The codes records of these current communes may carry, with names; and the current communes themselves."""
    codes: dict[str, str] = {}
    heads = [e for e in entries if e.kind == "C" and e.code in current]
    for e in heads:
        codes[e.code] = e.name
        for old in e.former_codes:
            if old[:2] == e.code[:2]:  # not the codes of the 1960s' moves between départements
                codes.setdefault(old, e.name)
    for e in entries:
        if e.kind in ("M", "D", "A") and e.parent in current:
            codes.setdefault(e.code, e.name)
    return codes, heads


def _envelope(boxes: list[Box]) -> Box:
    m = AREA_MARGIN_DEG
    return (
        round(min(b[0] for b in boxes) - m, 3),
        round(min(b[1] for b in boxes) - m, 3),
        round(max(b[2] for b in boxes) + m, 3),
        round(max(b[3] for b in boxes) + m, 3),
    )


def _load_boundaries(path: Path) -> dict[str, dict[str, Any]]:
    collection = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, dict[str, Any]] = {}
    for feature in collection["features"]:
        code = str(feature["properties"]["code"])
        if code in out:
            raise TerritoryError(f"{path.name}: INSEE code {code} appears twice")
        out[code] = feature["geometry"]
    return out


def _bbox_polygon(b: Box) -> dict[str, Any]:
    w, s, e, n = b
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def build_territory(spec: dict[str, Any], tid: str, base: Path) -> Territory:
    """A territory from a territory file's content (``base``: the folder relative paths are read from)."""
    groups = _groups()
    # row: code, name, kind, parent, departement, epci, ...
    if "epci" in spec:
        siren = str(spec["epci"])
        current = {r[0] for r in _rows() if r[2] == "C" and r[5] == siren}
        default_name = groups["epci"].get(siren, siren)
    elif "departement" in spec:
        dep = str(spec["departement"]).upper()
        current = {r[0] for r in _rows() if r[2] == "C" and r[4] == dep}
        default_name = groups["departements"].get(dep, dep)
    elif "communes" in spec:
        current = {str(c) for c in spec["communes"]}
        known = {r[0] for r in _rows() if r[2] == "C"}
        unknown = sorted(current - known)
        if unknown:
            raise TerritoryError(f"{tid}: not current communes of the COG: {', '.join(unknown[:10])}")
        default_name = tid
    else:
        raise TerritoryError(f"{tid}: a territory names its communes by 'epci', 'departement' or 'communes'")
    if not current:
        raise TerritoryError(f"{tid}: no commune of the COG belongs to it")
    entries = tuple(_entry(r) for r in _rows() if (r[0] if r[2] == "C" else r[3]) in current)
    codes, heads = _members(current, entries)
    boxes = [e.bbox for e in entries if e.code in codes and e.kind in ("C", "M") and e.bbox is not None]
    if "boundaries" in spec:
        boundaries = _load_boundaries((base / spec["boundaries"]).resolve())
        are_boxes = False
    else:
        boundaries = {
            e.code: _bbox_polygon(e.bbox) for e in entries if e.code in codes and e.kind in ("C", "M") and e.bbox
        }
        are_boxes = True
    if "area" in spec:
        w, s, e_, n = (float(v) for v in spec["area"])
        area: Box = (w, s, e_, n)
    elif boxes:
        area = _envelope(boxes)
    else:
        raise TerritoryError(f"{tid}: no position is known for its communes; give its 'area' (a WGS84 box)")
    example = max(heads, key=lambda e: (e.population or 0, e.code)).code
    return Territory(
        id=tid,
        name=str(spec.get("name", default_name)),
        communes=codes,
        area=area,
        boundaries=boundaries,
        boundaries_are_boxes=are_boxes,
        example=example,
    )


@lru_cache(maxsize=8)
def load_territory(setting: str = DEFAULT_TERRITORY) -> Territory:
    """The territory named by the ``ODC_TERRITORY`` setting (see the module's docstring)."""
    text = setting.strip()
    bundled = HERE / f"{text}.json"
    if re.fullmatch(r"[a-z0-9-]+", text) and bundled.is_file():
        return build_territory(json.loads(bundled.read_text(encoding="utf-8")), text, HERE)
    if _SIREN.match(text):
        for candidate in sorted(HERE.glob("*.json")):  # a bundled territory with boundaries, if there is one
            spec = json.loads(candidate.read_text(encoding="utf-8"))
            if isinstance(spec, dict) and str(spec.get("epci")) == text:
                return build_territory(spec, candidate.stem, HERE)
        if text not in _groups()["epci"]:
            raise TerritoryError(f"ODC_TERRITORY={text}: no EPCI has this SIREN in the bundled COG")
        return build_territory({"epci": text}, text, HERE)
    dep = _DEPARTEMENT.match(text)
    if dep:
        code = dep.group(1).upper()
        if code not in _groups()["departements"]:
            raise TerritoryError(f"ODC_TERRITORY={text}: no département {code} in the bundled COG")
        return build_territory({"departement": code}, f"departement-{code.lower()}", HERE)
    path = Path(text)
    if path.suffix == ".json" and path.is_file():
        return build_territory(json.loads(path.read_text(encoding="utf-8")), path.stem, path.parent)
    raise TerritoryError(
        f"ODC_TERRITORY={text!r}: expected one of "
        f"{', '.join(sorted(p.stem for p in HERE.glob('*-*.json')))}, a 9-digit EPCI SIREN, "
        "departement:XX, or the path of a territory .json file"
    )
