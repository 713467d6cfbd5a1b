"""OGC API – Features Part 3 (filtering): the queryables of a collection (a JSON Schema built from its Table
Schema) and CQL2 filters (text or JSON, parsed by ``pygeofilter``) translated into a SQL condition over
``published_feature`` (``geom`` in EPSG:4326, ``attributes`` JSON text, read as jsonb).

Safety: the condition's text is built only from constant fragments and generated bind-parameter names
(``:cq0``, ``:cq1`` ...); every value *and every property name* is a bound parameter. A property that is not
one of the collection's queryables, an operator outside what is supported, or a filter that does not parse
is a ``BadFilter`` (a 400 naming what is wrong)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pygeofilter import ast, values
from pygeofilter.parsers.cql2_json import parse as parse_cql2_json
from pygeofilter.parsers.cql2_text import parse as parse_cql2_text

from services.contract.datasets.catalogue import DatasetDefinition

CQL2_TEXT = "cql2-text"
CQL2_JSON = "cql2-json"
FILTER_LANGS = (CQL2_TEXT, CQL2_JSON)
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GEOMETRY = "geometry"
SCHEMA_JSON = "application/schema+json"
QUERYABLES_REL = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
MAX_FILTER_CHARS = 20_000
MAX_NODES = 500

# The requirement classes met (OGC API – Features Part 3 1.0 and CQL2 1.0): filter and queryables on items,
# CQL2 text and JSON, Basic CQL2 (comparisons, and/or/not, is null), the advanced comparison operators
# (LIKE, BETWEEN, IN) and S_INTERSECTS on any geometry literal (basic-spatial-functions and -plus).
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
]


class BadFilter(ValueError):
    """An invalid ``filter``, ``filter-lang`` or ``filter-crs``: a 400 with an OGC exception body."""

    code = "InvalidParameterValue"


# -- queryables -----------------------------------------------------------------------------------------
_JSON_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
_FORMATS = {"date": "date", "datetime": "date-time", "time": "time"}


def field_types(d: DatasetDefinition) -> dict[str, str]:
    """Table Schema field name -> its Table Schema type (``string`` when none)."""
    return {f["name"]: str(f.get("type", "string")) for f in d.table_schema.get("fields", []) if "name" in f}


def queryables(base: str, d: DatasetDefinition) -> dict[str, Any]:
    """The collection's queryables as a JSON Schema (2020-12): one property per Table Schema field, with its
    type (and format, enum, pattern, description), plus ``geometry``."""
    props: dict[str, Any] = {
        GEOMETRY: {"format": "geometry-any", "title": "geometry", "description": "the feature's geometry (CRS84)"}
    }
    for f in d.table_schema.get("fields", []):
        if "name" not in f:
            continue
        ttype = str(f.get("type", "string"))
        p: dict[str, Any] = {"type": _JSON_TYPES.get(ttype, "string")}
        if ttype in _FORMATS:
            p["format"] = _FORMATS[ttype]
        if f.get("title"):
            p["title"] = str(f["title"])
        if f.get("description"):
            p["description"] = str(f["description"])
        constraints = f.get("constraints") or {}
        if isinstance(constraints.get("enum"), list):
            p["enum"] = list(constraints["enum"])
        if isinstance(constraints.get("pattern"), str) and ttype == "string":
            p["pattern"] = constraints["pattern"]
        props[f["name"]] = p
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{base}/collections/{d.id}/queryables",
        "type": "object",
        "title": d.title_fr,
        "properties": props,
        "additionalProperties": False,
    }


def _cql2_json_1_0(node: Any) -> Any:
    """CQL2 1.0 JSON as pygeofilter 0.4 reads it: it takes ``{"bbox": [...]}`` in an older order and
    ``between``'s bounds as one array, so a bbox becomes the equivalent GeoJSON polygon and ``between``'s
    three arguments become (property, [low, high])."""
    if isinstance(node, list):
        return [_cql2_json_1_0(v) for v in node]
    if not isinstance(node, dict):
        return node
    box = node.get("bbox")
    if len(node) == 1 and isinstance(box, list) and len(box) in (4, 6):
        x0, y0, x1, y1 = (box[0], box[1], box[3], box[4]) if len(box) == 6 else box
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        return {"type": "Polygon", "coordinates": [ring]}
    out = {k: _cql2_json_1_0(v) for k, v in node.items()}
    args = out.get("args")
    if str(out.get("op", "")).lower() == "between" and isinstance(args, list) and len(args) == 3:
        out["args"] = [args[0], [args[1], args[2]]]
    return out


# -- parsing --------------------------------------------------------------------------------------------
def parse_filter(text: str, lang: str | None, crs: str | None) -> ast.AstType:
    """The filter's AST; anything the parser refuses is a ``BadFilter`` (its message cut short)."""
    lang = lang or CQL2_TEXT
    if lang not in FILTER_LANGS:
        raise BadFilter(f"filter-lang must be one of {', '.join(FILTER_LANGS)}, not {lang[:40]!r}")
    if crs not in (None, "", CRS84):
        raise BadFilter(f"filter-crs must be {CRS84} (the only CRS served), not {crs[:80]!r}")
    if len(text) > MAX_FILTER_CHARS:
        raise BadFilter(f"filter is longer than {MAX_FILTER_CHARS} characters")
    if not text.strip():
        raise BadFilter("filter is empty")
    try:
        if lang == CQL2_JSON:
            return parse_cql2_json(_cql2_json_1_0(json.loads(text)))
        return parse_cql2_text(text)
    except Exception as exc:  # the parsers raise lark, JSON, key and value errors alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadFilter(f"filter is not valid {lang}: {first[:200]}") from exc


# -- translation into SQL -------------------------------------------------------------------------------
_NUMERIC = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
_COMPARISONS = {
    ast.Equal: "=",
    ast.NotEqual: "<>",
    ast.LessThan: "<",
    ast.LessEqual: "<=",
    ast.GreaterThan: ">",
    ast.GreaterEqual: ">=",
}

_MIRRORED = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


@dataclass
class SqlFilter:
    """A SQL condition (constant text and ``:cqN`` parameter names only) and its bound parameters."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)


class _Translator:
    def __init__(self, types: dict[str, str]) -> None:
        self.types = types
        self.params: dict[str, Any] = {}
        self.nodes = 0

    def bind(self, value: Any) -> str:
        name = f"cq{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def prop(self, node: Any) -> tuple[str, str]:
        """(SQL expression, kind) of a property: kind is number, boolean or text."""
        if not isinstance(node, ast.Attribute):
            raise BadFilter("the left side of a comparison must be a property (a queryable)")
        name = node.name
        if name not in self.types:
            raise BadFilter(f"unknown property {name[:80]!r}: see the collection's queryables")
        key = self.bind(name)
        raw = f"(CAST(attributes AS jsonb) ->> CAST({key} AS text))"
        kind = self.types[name]
        if kind in ("number", "integer"):
            return f"(CASE WHEN {raw} ~ '{_NUMERIC}' THEN CAST({raw} AS double precision) END)", "number"
        if kind == "boolean":
            return (
                f"(CASE WHEN lower({raw}) IN ('true', '1') THEN true WHEN lower({raw}) IN ('false', '0') "
                "THEN false END)",
                "boolean",
            )
        return raw, "text"

    def literal(self, value: Any, kind: str) -> str:
        if isinstance(value, (ast.Node, values.Geometry, values.Envelope)):
            raise BadFilter("only a literal value may be compared with a property")
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadFilter(f"a number is expected, not {str(value)[:40]!r}")
            return f"CAST({self.bind(float(value))} AS double precision)"
        if kind == "boolean":
            if not isinstance(value, bool):
                raise BadFilter(f"a boolean is expected, not {str(value)[:40]!r}")
            return f"CAST({self.bind(value)} AS boolean)"
        if isinstance(value, datetime):
            value = value.isoformat().replace("+00:00", "Z")
        elif isinstance(value, date):
            value = value.isoformat()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif not isinstance(value, (str, int, float)):
            raise BadFilter(f"unsupported literal {str(value)[:40]!r}")
        return f"CAST({self.bind(str(value))} AS text)"

    def geometry(self, value: Any) -> str:
        if isinstance(value, values.Geometry):
            return f"ST_SetSRID(ST_GeomFromGeoJSON(CAST({self.bind(json.dumps(value.geometry))} AS text)), 4326)"
        box: list[Any]
        if isinstance(value, values.Envelope):
            box = [value.x1, value.y1, value.x2, value.y2]
        elif isinstance(value, ast.Function) and value.name.lower() == "bbox":
            box = list(value.arguments)
            if len(box) == 6:
                box = [box[0], box[1], box[3], box[4]]
        else:
            raise BadFilter("S_INTERSECTS needs a geometry literal (WKT, GeoJSON or BBOX)")
        if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
            raise BadFilter("BBOX needs four numbers")
        x0, y0, x1, y1 = (self.bind(float(v)) for v in box)
        return f"ST_MakeEnvelope({x0}, {y0}, {x1}, {y1}, 4326)"

    def walk(self, node: Any) -> str:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise BadFilter(f"filter has more than {MAX_NODES} terms")
        if isinstance(node, ast.And):
            return f"({self.walk(node.lhs)} AND {self.walk(node.rhs)})"
        if isinstance(node, ast.Or):
            return f"({self.walk(node.lhs)} OR {self.walk(node.rhs)})"
        if isinstance(node, ast.Not):
            return f"(NOT coalesce({self.walk(node.sub_node)}, false))"
        if isinstance(node, bool):  # TRUE / FALSE as a whole predicate
            return "true" if node else "false"
        if type(node) in _COMPARISONS:
            op, left, right = _COMPARISONS[type(node)], node.lhs, node.rhs
            if isinstance(right, ast.Attribute) and not isinstance(left, ast.Attribute):  # 3 < gid: gid > 3
                op, left, right = _MIRRORED[op], right, left
            lhs, kind = self.prop(left)
            return f"({lhs} {op} {self.literal(right, kind)})"
        if isinstance(node, ast.IsNull):
            lhs, _ = self.prop(node.lhs)
            return f"({lhs} IS {'NOT ' if node.not_ else ''}NULL)"
        if isinstance(node, ast.Between):
            lhs, kind = self.prop(node.lhs)
            low, high = self.literal(node.low, kind), self.literal(node.high, kind)
            return f"({lhs} {'NOT ' if node.not_ else ''}BETWEEN {low} AND {high})"
        if isinstance(node, ast.In):
            lhs, kind = self.prop(node.lhs)
            if not node.sub_nodes:
                raise BadFilter("IN needs at least one value")
            items = ", ".join(self.literal(v, kind) for v in node.sub_nodes)
            return f"({lhs} {'NOT ' if node.not_ else ''}IN ({items}))"
        if isinstance(node, ast.Like):
            lhs, kind = self.prop(node.lhs)
            if kind != "text" or not isinstance(node.pattern, str):
                raise BadFilter("LIKE compares a text property with a text pattern")
            op = ("NOT " if node.not_ else "") + ("ILIKE" if node.nocase else "LIKE")
            return f"({lhs} {op} {self.literal(node.pattern, 'text')} ESCAPE '\\')"
        if isinstance(node, ast.GeometryIntersects):
            lhs, rhs = node.lhs, node.rhs
            if isinstance(rhs, ast.Attribute) and not isinstance(lhs, ast.Attribute):
                lhs, rhs = rhs, lhs
            if not isinstance(lhs, ast.Attribute) or lhs.name != GEOMETRY:
                raise BadFilter(f"S_INTERSECTS applies to the property {GEOMETRY!r} and a geometry literal")
            g = self.geometry(rhs)
            return f"(geom && {g} AND ST_Intersects(geom, {g}))"
        name = getattr(node, "op", None)
        label = getattr(name, "value", None) or type(node).__name__
        raise BadFilter(
            f"the operator {str(label)[:40]!r} is not supported (Basic CQL2, LIKE, BETWEEN, IN, S_INTERSECTS)"
        )


def to_sql(node: ast.AstType, d: DatasetDefinition) -> SqlFilter:
    """The SQL condition of a parsed filter over ``published_feature`` for dataset ``d``."""
    t = _Translator(field_types(d))
    sql = t.walk(node)
    return SqlFilter(sql, t.params)
