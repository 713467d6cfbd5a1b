"""CloudEvents 1.0 for published versions.

Kafka: protocol binding, binary content mode — attributes in ``ce_*`` headers, the Avro-encoded
DatasetVersionPublished as the value. Webhooks and server-sent events: structured content mode, one JSON
document (``application/cloudevents+json``) with the same attributes and a JSON ``data``. Both carry the
version, its counts, links to its resources and, when the diff is small enough, every changed feature
before and after (a removal carries what was removed).

Extensions (issue #15.5), on every channel: ``partitionkey`` (the dataset: the Kafka message key, the unit of
ordering) and ``sequence`` (the version number zero-padded to 20 digits, so it sorts as text in version order,
as the CloudEvents sequence extension asks); with them the optional attribute ``dataschema`` (core in
CloudEvents 1.0, not an extension), an absolute URI that serves the Avro schema of the version record (the
publish API's ``/schemas/avro/{file}``). The Java SDK's Kafka binding reads the binary form strictly (extension
names of lowercase letters and digits, ``time`` in RFC 3339 with an offset, ``source`` and ``dataschema`` as
URIs): tests/integration/test_cloudevents_java_sdk.py. In the JSON (structured) form ``data``
holds the same record's fields, with ``links`` as an object and ``changes`` as GeoJSON features."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.contract.messages import ChangedFeature, DatasetVersionPublished, Link
from services.publish.domain.feature_documents import feature_dict, public_feature_id
from services.publish.domain.versioning import DiffEntry, VersionDraft

EVENT_TYPE = "fr.grandlyon.odc.dataset.version.published"
CONTENT_TYPE = "application/avro"
JSON_CONTENT_TYPE = "application/json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
DATASCHEMA_FILE = "dataset_version.v3.avsc"
DATASCHEMA = f"schemas/avro/{DATASCHEMA_FILE}"  # relative: only when no base URL is known (unit tests)
SEQUENCE_DIGITS = 20  # a version number as text that sorts in version order (any int64 fits)


def dataschema_uri(base_url: str) -> str:
    """Where the publish API serves the Avro schema of the version record."""
    return f"{base_url.rstrip('/')}/{DATASCHEMA}" if base_url else DATASCHEMA


def sequence(version: int) -> str:
    return f"{version:0{SEQUENCE_DIGITS}d}"


@dataclass(frozen=True)
class CloudEventAttributes:
    id: str
    source: str
    type: str
    subject: str
    time: str
    datacontenttype: str
    dataschema: str
    partitionkey: str
    sequence: str
    specversion: str = "1.0"

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        headers = [
            (f"ce_{k}", v.encode())
            for k, v in (
                ("specversion", self.specversion),
                ("id", self.id),
                ("source", self.source),
                ("type", self.type),
                ("subject", self.subject),
                ("time", self.time),
                ("dataschema", self.dataschema),
                ("partitionkey", self.partitionkey),
                ("sequence", self.sequence),
            )
        ]
        headers.append(("content-type", self.datacontenttype.encode()))
        return headers


def version_event_id(dataset: str, version: int) -> str:
    """Stable across redeliveries and channels (Kafka, webhooks, SSE): subscribers dedupe on it."""
    return f"{dataset}:v{version}"


def version_links(base_url: str, dataset: str, version: int) -> tuple[Link, ...]:
    base = f"{base_url.rstrip('/')}/datasets/{dataset}"
    return (
        Link("self", f"{base}/versions/{version}", "application/json"),
        Link("diff", f"{base}/versions/{version}/diff", "application/json"),
        Link("geojson", f"{base}/versions/{version}/features.geojson", "application/geo+json"),
        Link("csv", f"{base}/versions/{version}/features.csv", "text/csv"),
        Link("changes", f"{base}/changes?since={version - 1}", "application/json"),
        Link("dataset", base, "application/json"),
    )


def _time(draft: VersionDraft) -> str:
    return draft.published_at.isoformat().replace("+00:00", "Z")


def version_message(
    draft: VersionDraft, source: str, *, base_url: str = "", max_inline_changes: int = 0
) -> tuple[CloudEventAttributes, DatasetVersionPublished]:
    attrs = CloudEventAttributes(
        id=version_event_id(draft.dataset, draft.version),
        source=source,
        type=EVENT_TYPE,
        subject=draft.dataset,
        time=_time(draft),
        datacontenttype=CONTENT_TYPE,
        dataschema=dataschema_uri(base_url),
        partitionkey=draft.dataset,
        sequence=sequence(draft.version),
    )
    inline = len(draft.entries) <= max_inline_changes
    data = DatasetVersionPublished(
        dataset=draft.dataset,
        version=draft.version,
        published_at=draft.published_at,
        added=draft.added,
        updated=draft.updated,
        removed=draft.removed,
        feature_count=draft.feature_count,
        content_hash=draft.content_hash,
        first_change_id=draft.first_change_id,
        last_change_id=draft.last_change_id,
        links=version_links(base_url, draft.dataset, draft.version) if base_url else (),
        changes_included=inline,
        changes=tuple(ChangedFeature(e.commune, e.feature_id, e.kind.value, e.before, e.after) for e in draft.entries)
        if inline
        else (),
        incomplete=draft.incomplete,
    )
    return attrs, data


def diff_entry_json(dataset: str, e: DiffEntry) -> dict[str, Any]:
    """One changed feature as JSON: before and after are GeoJSON features (null when absent)."""
    fid = public_feature_id(e.commune, e.feature_id)
    return {
        "id": fid,
        "kind": e.kind.value,
        "before": None if e.before is None else feature_dict(fid, e.before.geometry_geojson, e.before.attributes_json),
        "after": None if e.after is None else feature_dict(fid, e.after.geometry_geojson, e.after.attributes_json),
    }


def structured_event(draft: VersionDraft, source: str, *, base_url: str, max_inline_changes: int) -> dict[str, Any]:
    """The structured-mode CloudEvent (JSON) sent to webhooks and on the SSE stream."""
    inline = len(draft.entries) <= max_inline_changes
    data: dict[str, Any] = {
        "dataset": draft.dataset,
        "version": draft.version,
        "published_at": _time(draft),
        "added": draft.added,
        "updated": draft.updated,
        "removed": draft.removed,
        "feature_count": draft.feature_count,
        "conformance": {"conforming": draft.conforming, "incomplete": draft.incomplete},
        "content_hash": draft.content_hash,
        "links": {lk.rel: lk.href for lk in version_links(base_url, draft.dataset, draft.version)},
        "changes_included": inline,
    }
    if inline:
        data["changes"] = [diff_entry_json(draft.dataset, e) for e in draft.entries]
    return {
        "specversion": "1.0",
        "id": version_event_id(draft.dataset, draft.version),
        "source": source,
        "type": EVENT_TYPE,
        "subject": draft.dataset,
        "time": _time(draft),
        "datacontenttype": JSON_CONTENT_TYPE,
        "dataschema": dataschema_uri(base_url),
        "partitionkey": draft.dataset,
        "sequence": sequence(draft.version),
        "data": data,
    }


def encode_event(event: dict[str, Any]) -> bytes:
    """The exact bytes delivered (and signed): compact, UTF-8."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
