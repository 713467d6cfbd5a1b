"""OGC API – Features, Part 1: Core (OGC 17-069r4) documents for the current (latest published) data.
Pure shaping: the HTTP app supplies the base URL, the extents and the rows."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from services.contract.datasets.catalogue import DatasetDefinition
from services.publish.domain.ogc_edits import CONFORMANCE as EDIT_CONFORMANCE
from services.publish.domain.ogc_filter import CONFORMANCE as FILTER_CONFORMANCE
from services.publish.domain.ogc_filter import QUERYABLES_REL, SCHEMA_JSON

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    *FILTER_CONFORMANCE,  # Part 3 (filtering) and CQL2: the classes met, see ogc_filter.CONFORMANCE
    *EDIT_CONFORMANCE,  # Part 4 (create, replace, update, delete): see ogc_edits
]
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
GEOJSON = "application/geo+json"
JSON = "application/json"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"
DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000


class BadQuery(ValueError):
    """A 400 of the OGC API: an unknown or invalid query parameter (/req/core/query-param-unknown and
    /req/core/query-param-invalid), answered with an exception body ``{"code", "description"}``."""

    code = "InvalidParameterValue"


class UnknownParameter(BadQuery):
    code = "UnknownParameter"


class BadFeatureId(ValueError):
    pass


ITEMS_PARAMETERS = frozenset({"bbox", "datetime", "limit", "offset", "filter", "filter-lang", "filter-crs"})


@dataclass(frozen=True)
class TimeInterval:
    """The ``datetime`` filter: an instant (start == end), a closed interval, or a half-open one (a None
    end is ``..``). Both ends inclusive."""

    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class ItemsQuery:
    bbox: tuple[float, float, float, float] | None
    limit: int
    offset: int
    time: TimeInterval | None = None
    datetime_text: str | None = None  # as asked, repeated in the paging links
    filter_text: str | None = None  # Part 3: the CQL2 filter as asked (parsed by ogc_filter)
    filter_lang: str | None = None
    filter_crs: str | None = None

    @property
    def filtered(self) -> bool:
        return self.bbox is not None or self.time is not None or self.filter_text is not None


def _integer(name: str, value: str) -> int:
    if not re.fullmatch(r"[+]?[0-9]{1,12}", value.strip()):
        raise BadQuery(f"{name} must be a non-negative integer, not {value[:40]!r}")
    return int(value)


def _bbox(value: str) -> tuple[float, float, float, float]:
    try:
        values = [float(v) for v in value.split(",")]
    except ValueError as exc:
        raise BadQuery("bbox must be four numbers: minLon,minLat,maxLon,maxLat") from exc
    if len(values) == 6:  # 3D bbox: keep the horizontal part
        values = [values[0], values[1], values[3], values[4]]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise BadQuery("bbox must be four numbers: minLon,minLat,maxLon,maxLat")
    if values[1] > values[3] or not (-90 <= values[1] <= 90 and -90 <= values[3] <= 90):
        raise BadQuery("bbox latitudes must be within -90..90 with minLat <= maxLat")
    if not (-180 <= values[0] <= 180 and -180 <= values[2] <= 180):
        raise BadQuery("bbox longitudes must be within -180..180")
    return values[0], values[1], values[2], values[3]


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _instant(value: str, end_of_day: bool) -> datetime:
    """An RFC 3339 date-time (with its offset) or a full-date (a whole UTC day: its first or last instant)."""
    try:
        if _DATE.fullmatch(value):
            day = datetime.fromisoformat(value).replace(tzinfo=UTC)
            return day + timedelta(days=1, microseconds=-1) if end_of_day else day
        t = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadQuery(f"datetime {value[:60]!r} is not an RFC 3339 date-time or interval") from exc
    if t.tzinfo is None or "T" not in value.upper():
        raise BadQuery(f"datetime {value[:60]!r} needs a time zone (Z or an offset)")
    return t


def parse_datetime(value: str) -> TimeInterval:
    """``datetime`` as in OGC 17-069r4 7.15.4: an instant, ``start/end``, ``../end``, ``start/..`` (an empty
    end is ``..`` too). A date instant is its whole day."""
    if "/" not in value:
        if _DATE.fullmatch(value):
            return TimeInterval(_instant(value, False), _instant(value, True))
        t = _instant(value, False)
        return TimeInterval(t, t)
    first, _, last = value.partition("/")
    if "/" in last:
        raise BadQuery("datetime has at most one '/'")
    start = None if first in ("", "..") else _instant(first, False)
    end = None if last in ("", "..") else _instant(last, True)
    if start is None and end is None:
        raise BadQuery("datetime cannot be open at both ends")
    if start is not None and end is not None and start > end:
        raise BadQuery("datetime interval ends before it starts")
    return TimeInterval(start, end)


def parse_items_query(params: Sequence[tuple[str, str]]) -> ItemsQuery:
    """The items request's query string (name, value pairs as sent). Unknown or repeated parameters and
    invalid values are a ``BadQuery`` (400); a ``limit`` above ``MAX_LIMIT`` is clamped to it (the page's
    ``next`` link goes on from there)."""
    seen: dict[str, str] = {}
    for name, value in params:
        if name not in ITEMS_PARAMETERS:
            raise UnknownParameter(
                f"unknown query parameter {name[:40]!r}; this API knows {', '.join(sorted(ITEMS_PARAMETERS))}"
            )
        if name in seen:
            raise BadQuery(f"query parameter {name!r} is given more than once")
        seen[name] = value
    box = _bbox(seen["bbox"]) if seen.get("bbox") else None
    n = DEFAULT_LIMIT if "limit" not in seen else _integer("limit", seen["limit"])
    if n < 1:
        raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
    start = 0 if "offset" not in seen else _integer("offset", seen["offset"])
    text = seen.get("datetime") or None
    return ItemsQuery(
        box,
        min(n, MAX_LIMIT),
        start,
        None if text is None else parse_datetime(text),
        text,
        seen.get("filter") or None,
        seen.get("filter-lang") or None,
        seen.get("filter-crs") or None,
    )


# -- feature ids ----------------------------------------------------------------------------------------
# The OGC feature id encodes the canonical key (commune, feature_id) with unreserved URI characters only
# (RFC 3986 2.3), so it is used in a URL as it is: ``<commune>.<feature_id>``, where any other character
# (and ``~``; ``.`` in the commune) is written ``~XX`` per UTF-8 byte. Stable: the same key, the same id.
_FID_SAFE = frozenset(string.ascii_letters + string.digits + "-._")
_COMMUNE_SAFE = frozenset(string.ascii_letters + string.digits + "-_")
_ESCAPE = re.compile(r"~([0-9A-F]{2})")


def _escape(value: str, safe: frozenset[str]) -> str:
    return "".join(c if c in safe else "".join(f"~{b:02X}" for b in c.encode("utf-8")) for c in value)


def _unescape(value: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(value):
        m = _ESCAPE.match(value, i)
        if m:
            raw.append(int(m.group(1), 16))
            i = m.end()
        else:
            raw += value[i].encode("utf-8")
            i += 1
    return raw.decode("utf-8")


def ogc_feature_id(commune: str, feature_id: str) -> str:
    return f"{_escape(commune, _COMMUNE_SAFE)}.{_escape(feature_id, _FID_SAFE)}"


def parse_ogc_feature_id(value: str) -> tuple[str, str]:
    """The key of an OGC feature id; only the canonical spelling is accepted (one id per feature)."""
    commune, sep, fid = value.partition(".")
    try:
        key = (_unescape(commune), _unescape(fid))
    except UnicodeDecodeError as exc:
        raise BadFeatureId(f"feature id {value[:100]!r} is not <commune>.<feature_id>") from exc
    if not sep or not commune or not fid or ogc_feature_id(*key) != value:
        raise BadFeatureId(f"feature id {value[:100]!r} is not <commune>.<feature_id>")
    return key


def exception_body(code: str, description: str) -> dict[str, str]:
    """The OGC API exception document (``exception.yaml`` of OGC 17-069r4)."""
    return {"code": code, "description": description}


def _link(href: str, rel: str, type_: str, title: str | None = None) -> dict[str, str]:
    link = {"href": href, "rel": rel, "type": type_}
    if title:
        link["title"] = title
    return link


def landing_page(base: str, api_doc: str, territory_name: str = "Métropole de Lyon") -> dict[str, Any]:
    return {
        "title": f"odc — OpenData des communes ({territory_name})",
        "description": "Current published data of every dataset, as OGC API – Features.",
        "links": [
            _link(f"{base}", "self", JSON, "this document"),
            _link(api_doc, "service-desc", OPENAPI, "the API definition (OpenAPI 3.0)"),
            _link(f"{base}/conformance", "conformance", JSON, "conformance classes"),
            _link(f"{base}/collections", "data", JSON, "collections"),
            _link(f"{base.removesuffix('/ogc')}/asyncapi.json", "hub", JSON, "notifications (AsyncAPI 3.0)"),
        ],
    }


def conformance() -> dict[str, Any]:
    return {"conformsTo": list(CONFORMANCE)}


def collection(
    base: str,
    d: DatasetDefinition,
    extent: tuple[float, float, float, float] | None,
    version: int,
    first_published: datetime | None = None,
) -> dict[str, Any]:
    """A collection's metadata. The temporal extent is that of the features' time (when each feature's
    current state was published): from the first version on, open-ended."""
    url = f"{base}/collections/{quote(d.id, safe='')}"
    bbox = list(extent) if extent is not None else list(d.bounds)
    extent_doc: dict[str, Any] = {"spatial": {"bbox": [bbox], "crs": CRS84}}
    if first_published is not None:
        extent_doc["temporal"] = {"interval": [[_iso(first_published), None]], "trs": GREGORIAN}
    return {
        "id": d.id,
        "title": d.title_fr,
        "description": f"{d.title_en} — version {version}",
        "itemType": "feature",
        "crs": [CRS84],
        "extent": extent_doc,
        "links": [
            _link(url, "self", JSON),
            _link(f"{url}/items", "items", GEOJSON, "items"),
            _link(f"{url}/queryables", QUERYABLES_REL, SCHEMA_JSON, "queryables (JSON Schema)"),
            _link(f"{url}/queryables", "describedby", SCHEMA_JSON, "the features' properties (JSON Schema)"),
        ],
    }


def collections(base: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"links": [_link(f"{base}/collections", "self", JSON)], "collections": items}


def items_links(base: str, dataset: str, q: ItemsQuery, returned: int, matched: int | None) -> list[dict[str, str]]:
    url = f"{base}/collections/{quote(dataset, safe='')}/items"

    def page(offset: int) -> str:
        params: dict[str, Any] = {"limit": q.limit, "offset": offset}
        if q.bbox is not None:
            params["bbox"] = ",".join(repr(v) for v in q.bbox)
        if q.datetime_text is not None:
            params["datetime"] = q.datetime_text
        for name, value in (("filter", q.filter_text), ("filter-lang", q.filter_lang), ("filter-crs", q.filter_crs)):
            if value is not None:
                params[name] = value
        return f"{url}?{urlencode(params)}"

    links = [_link(page(q.offset), "self", GEOJSON), _link(f"{base}/collections/{dataset}", "collection", JSON)]
    if (q.offset + returned < matched) if matched is not None else returned == q.limit:
        links.append(_link(page(q.offset + q.limit), "next", GEOJSON, "next page"))
    if q.offset > 0:
        links.append(_link(page(max(0, q.offset - q.limit)), "prev", GEOJSON, "previous page"))
    return links


def items_members(
    base: str, dataset: str, q: ItemsQuery, returned: int, matched: int | None, timestamp: str
) -> dict[str, Any]:
    """The FeatureCollection's members other than ``features``."""
    members: dict[str, Any] = {"numberReturned": returned, "timeStamp": timestamp}
    if matched is not None:
        members = {"numberMatched": matched, **members}
    return {**members, "links": items_links(base, dataset, q, returned, matched)}


def item_links(base: str, dataset: str, ogc_id: str) -> list[dict[str, str]]:
    coll = f"{base}/collections/{quote(dataset, safe='')}"
    return [
        _link(f"{coll}/items/{ogc_id}", "self", GEOJSON),
        _link(coll, "collection", JSON),
    ]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")
