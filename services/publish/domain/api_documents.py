"""JSON documents of the publish API's own resources: the index, datasets, versions, change-feed pages,
feature histories and created subscriptions. Pure shaping: records in, plain dicts out (the routers in
``entrypoints`` only fetch the records and answer with these)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from services.contract.datasets.catalogue import DatasetDefinition
from services.publish.domain import dcat
from services.publish.domain.change_feed import FeedPosition
from services.publish.domain.dcat import VersionSummary
from services.publish.domain.feature_documents import conformance_json
from services.publish.domain.notifications import diff_entry_json, version_links
from services.publish.domain.versioning import DiffEntry


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class DatasetSummary:
    """A dataset's latest version, as ``dataset_state`` holds it (feature_count is its live count)."""

    dataset: str
    last_version: int
    feature_count: int
    content_hash: str
    updated_at: datetime
    incomplete: int = 0  # live features marked incomplete (conformance levels)


@dataclass(frozen=True)
class VersionRecord:
    dataset: str
    summary: VersionSummary
    first_change_id: int
    last_change_id: int


@dataclass(frozen=True)
class FeedRow:
    position: FeedPosition
    published_at: datetime
    entry: DiffEntry


@dataclass(frozen=True)
class HistoryRow:
    version: int
    published_at: datetime
    entry: DiffEntry


def index(base: str) -> dict[str, Any]:
    return {
        "title": "odc publish API",
        "links": {
            "datasets": f"{base}/datasets",
            "catalog": f"{base}/catalog",
            "ogcapi": f"{base}/ogc",
            "subscriptions": f"{base}/subscriptions",
            "openapi": f"{base}/openapi.json",
            "docs": f"{base}/docs",
        },
    }


def dataset_json(base: str, d: DatasetDefinition, state: DatasetSummary | None) -> dict[str, Any]:
    url = f"{base}/datasets/{d.id}"
    return {
        "id": d.id,
        "title": {"fr": d.title_fr, "en": d.title_en},
        "geometry_type": d.geometry.type,
        "national_schema": dcat.national_schema_json(d.national_schema),
        "latest_version": state.last_version if state else 0,
        "feature_count": state.feature_count if state else 0,
        "conformance": conformance_json(state.feature_count, state.incomplete) if state else None,
        "content_hash": state.content_hash if state else None,
        "updated_at": iso(state.updated_at) if state else None,
        "links": {
            "self": url,
            "versions": f"{url}/versions",
            "changes": f"{url}/changes?since=0",
            "events": f"{url}/events",
            "geojson": f"{url}/features.geojson",
            "csv": f"{url}/features.csv",
            "dcat": f"{url}/dcat",
            "ogcapi": f"{base}/ogc/collections/{d.id}",
        },
    }


def version_listing(base: str, dataset: str, rows: Sequence[VersionSummary], limit: int) -> dict[str, Any]:
    """One page of a dataset's versions; ``rows`` holds up to ``limit + 1`` (one more says there is a next)."""
    more = len(rows) > limit
    rows = rows[:limit]
    url = f"{base}/datasets/{dataset}"
    return {
        "dataset": dataset,
        "versions": [
            {
                "version": v.version,
                "published_at": iso(v.published_at),
                "added": v.added,
                "updated": v.updated,
                "removed": v.removed,
                "feature_count": v.feature_count,
                "conformance": conformance_json(v.feature_count, v.incomplete),
                "content_hash": v.content_hash,
                "href": f"{url}/versions/{v.version}",
            }
            for v in rows
        ],
        "next": f"{url}/versions?{urlencode({'after': rows[-1].version, 'limit': limit})}" if more else None,
    }


def version_json(base: str, v: VersionRecord) -> dict[str, Any]:
    s = v.summary
    return {
        "dataset": v.dataset,
        "version": s.version,
        "published_at": iso(s.published_at),
        "added": s.added,
        "updated": s.updated,
        "removed": s.removed,
        "feature_count": s.feature_count,
        "conformance": conformance_json(s.feature_count, s.incomplete),
        "content_hash": s.content_hash,
        "first_change_id": v.first_change_id,
        "last_change_id": v.last_change_id,
        "links": {lk.rel: lk.href for lk in version_links(base, v.dataset, s.version)},
    }


def version_diff_json(base: str, v: VersionRecord, entries: Iterable[DiffEntry]) -> dict[str, Any]:
    return {**version_json(base, v), "changes": [diff_entry_json(v.dataset, e) for e in entries]}


def version_etag(v: VersionRecord, what: str) -> str:
    """Strong ETag of one of a version's documents: versions are immutable, so it never changes."""
    return f'"{v.dataset}-v{v.summary.version}-{what}-{v.summary.content_hash[:16]}"'


def etag_matches(if_none_match: str, tag: str) -> bool:
    return tag in [t.strip() for t in if_none_match.split(",")] or if_none_match.strip() == "*"


def change_page(
    dataset: str, since: int, rows: Sequence[FeedRow], next_url: str | None, next_since: int | None
) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "since": since,
        "changes": [
            {"version": r.position.version, "published_at": iso(r.published_at), **diff_entry_json(dataset, r.entry)}
            for r in rows
        ],
        "next": next_url,
        "next_since": next_since,
    }


def change_page_url(base: str, dataset: str, since: int, limit: int, cursor: str) -> str:
    return f"{base}/datasets/{dataset}/changes?{urlencode({'since': since, 'limit': limit, 'cursor': cursor})}"


def feature_history(dataset: str, public_id: str, rows: Iterable[HistoryRow], pending: int) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "id": public_id,
        "history": [
            {"version": r.version, "published_at": iso(r.published_at), **diff_entry_json(dataset, r.entry)}
            for r in rows
        ],
        "pending_changes": pending,
    }


def subscription_created(
    base: str,
    subscription_id: str,
    url: str,
    datasets: Iterable[str] | None,
    secret: str,
    created_at: datetime,
) -> dict[str, Any]:
    """The answer to a new subscription: the only time its secret is shown."""
    return {
        "id": subscription_id,
        "url": url,
        "datasets": None if datasets is None else list(datasets),
        "secret": secret,
        "created_at": iso(created_at),
        "links": {"self": f"{base}/subscriptions/{subscription_id}"},
    }
