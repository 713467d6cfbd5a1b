"""OGC API – Features, Part 1: Core (OGC 17-069r4) documents for the current (latest published) data.
Pure shaping: the HTTP app supplies the base URL, the extents and the rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from services.contract.datasets.catalogue import DatasetDefinition

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
]
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GEOJSON = "application/geo+json"
JSON = "application/json"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"
DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000


class BadQuery(ValueError):
    pass


@dataclass(frozen=True)
class ItemsQuery:
    bbox: tuple[float, float, float, float] | None
    limit: int
    offset: int


def parse_items_query(bbox: str | None, limit: int | None, offset: int | None) -> ItemsQuery:
    """Validate ``bbox`` (minLon,minLat,maxLon,maxLat in CRS84), ``limit`` and ``offset``. An out-of-range
    limit is an error rather than silently capped, so a client never mistakes a short page for the end."""
    box = None
    if bbox is not None and bbox != "":
        try:
            values = [float(v) for v in bbox.split(",")]
        except ValueError as exc:
            raise BadQuery("bbox must be four numbers: minLon,minLat,maxLon,maxLat") from exc
        if len(values) == 6:  # 3D bbox: keep the horizontal part
            values = [values[0], values[1], values[3], values[4]]
        if len(values) != 4:
            raise BadQuery("bbox must be four numbers: minLon,minLat,maxLon,maxLat")
        if values[1] > values[3] or not (-90 <= values[1] <= 90 and -90 <= values[3] <= 90):
            raise BadQuery("bbox latitudes must be within -90..90 with minLat <= maxLat")
        box = (values[0], values[1], values[2], values[3])
    n = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= n <= MAX_LIMIT:
        raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
    start = 0 if offset is None else offset
    if start < 0:
        raise BadQuery("offset must not be negative")
    return ItemsQuery(box, n, start)


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
            _link(api_doc, "service-desc", OPENAPI, "the API definition"),
            _link(f"{base}/conformance", "conformance", JSON, "conformance classes"),
            _link(f"{base}/collections", "data", JSON, "collections"),
        ],
    }


def conformance() -> dict[str, Any]:
    return {"conformsTo": list(CONFORMANCE)}


def collection(
    base: str, d: DatasetDefinition, extent: tuple[float, float, float, float] | None, version: int
) -> dict[str, Any]:
    url = f"{base}/collections/{quote(d.id, safe='')}"
    bbox = list(extent) if extent is not None else list(d.bounds)
    return {
        "id": d.id,
        "title": d.title_fr,
        "description": f"{d.title_en} — version {version}",
        "itemType": "feature",
        "crs": [CRS84],
        "extent": {"spatial": {"bbox": [bbox], "crs": CRS84}},
        "links": [
            _link(url, "self", JSON),
            _link(f"{url}/items", "items", GEOJSON, "items"),
        ],
    }


def collections(base: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"links": [_link(f"{base}/collections", "self", JSON)], "collections": items}


def items_links(base: str, dataset: str, q: ItemsQuery, returned: int, matched: int) -> list[dict[str, str]]:
    url = f"{base}/collections/{quote(dataset, safe='')}/items"

    def page(offset: int) -> str:
        params: dict[str, Any] = {"limit": q.limit, "offset": offset}
        if q.bbox is not None:
            params["bbox"] = ",".join(repr(v) for v in q.bbox)
        return f"{url}?{urlencode(params)}"

    links = [_link(page(q.offset), "self", GEOJSON), _link(f"{base}/collections/{dataset}", "collection", JSON)]
    if q.offset + returned < matched:
        links.append(_link(page(q.offset + q.limit), "next", GEOJSON, "next page"))
    if q.offset > 0:
        links.append(_link(page(max(0, q.offset - q.limit)), "prev", GEOJSON, "previous page"))
    return links


def items_members(
    base: str, dataset: str, q: ItemsQuery, returned: int, matched: int, timestamp: str
) -> dict[str, Any]:
    """The FeatureCollection's members other than ``features``."""
    return {
        "numberMatched": matched,
        "numberReturned": returned,
        "timeStamp": timestamp,
        "links": items_links(base, dataset, q, returned, matched),
    }


def item_links(base: str, dataset: str, public_id: str) -> list[dict[str, str]]:
    coll = f"{base}/collections/{quote(dataset, safe='')}"
    return [
        _link(f"{coll}/items/{quote(public_id, safe=':')}", "self", GEOJSON),
        _link(coll, "collection", JSON),
    ]
