"""CloudEvents 1.0 for published versions, Kafka protocol binding, binary content mode:
attributes in ``ce_*`` headers, the Avro-encoded DatasetVersionPublished as the value."""

from __future__ import annotations

from dataclasses import dataclass

from services.contract.messages import DatasetVersionPublished
from services.publish.domain.versioning import VersionDraft

EVENT_TYPE = "fr.grandlyon.odc.dataset.version.published"
CONTENT_TYPE = "application/avro"


@dataclass(frozen=True)
class CloudEventAttributes:
    id: str
    source: str
    type: str
    subject: str
    time: str
    datacontenttype: str
    dataschema: str
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
            )
        ]
        headers.append(("content-type", self.datacontenttype.encode()))
        return headers


def version_event_id(dataset: str, version: int) -> str:
    """Stable across redeliveries: subscribers dedupe on it."""
    return f"{dataset}:v{version}"


def version_message(draft: VersionDraft, source: str) -> tuple[CloudEventAttributes, DatasetVersionPublished]:
    attrs = CloudEventAttributes(
        id=version_event_id(draft.dataset, draft.version),
        source=source,
        type=EVENT_TYPE,
        subject=draft.dataset,
        time=draft.published_at.isoformat().replace("+00:00", "Z"),
        datacontenttype=CONTENT_TYPE,
        dataschema="schemas/avro/dataset_version.v1.avsc",
    )
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
    )
    return attrs, data
