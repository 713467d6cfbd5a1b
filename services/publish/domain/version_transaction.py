"""What one version transaction writes, decided as a plain function of plain data (issue #16.5).

``decide_version`` takes the dataset's locked state and its pending changes (in change_id order) and returns
a ``VersionWrite``: the version (its counts, O(changes) content hash and diff, versioning.build_version), the
state the dataset moves to, the changes it marks as included, and its two notifications (the Kafka CloudEvent
in binary mode and the structured JSON event for webhooks and SSE). The unit of work only writes it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.contract.messages import DatasetVersionPublished
from services.publish.domain.notifications import (
    CloudEventAttributes,
    encode_event,
    structured_event,
    version_message,
)
from services.publish.domain.versioning import DatasetState, ReceivedChange, VersionDraft, build_version


@dataclass(frozen=True)
class NotificationFormat:
    """How a version is announced: the CloudEvents ``source``, the public base URL of its links and schema,
    and up to how many changed features are inlined in the notification."""

    source: str
    base_url: str = ""
    max_inline_changes: int = 0


@dataclass(frozen=True)
class VersionNotice:
    attributes: CloudEventAttributes  # the Kafka message's ce_* headers; attributes.id is the event id
    record: DatasetVersionPublished  # its Avro value (encoded by the adapter's codec)
    structured_body: bytes  # the exact JSON bytes delivered to webhooks and SSE (signed as they are)


@dataclass(frozen=True)
class VersionWrite:
    """Everything one version transaction writes. ``draft`` None: the changes had no net effect; they are
    marked with the dataset's current version (absorbed) and nothing is published."""

    dataset: str
    change_ids: tuple[int, ...]
    marked_version: int
    draft: VersionDraft | None
    state_after: DatasetState
    notice: VersionNotice | None


def decide_version(
    state: DatasetState, changes: list[ReceivedChange], now: datetime, fmt: NotificationFormat
) -> VersionWrite | None:
    """The version transaction for ``changes`` (pending, in change_id order); None when there are none."""
    if not changes:
        return None
    ids = tuple(c.change_id for c in changes)
    draft = build_version(state, changes, now)
    if draft is None:
        return VersionWrite(state.dataset, ids, state.last_version, None, state, None)
    attributes, record = version_message(
        draft, fmt.source, base_url=fmt.base_url, max_inline_changes=fmt.max_inline_changes
    )
    body = encode_event(
        structured_event(draft, fmt.source, base_url=fmt.base_url, max_inline_changes=fmt.max_inline_changes)
    )
    after = DatasetState(state.dataset, draft.version, draft.feature_count, draft.content_hash, draft.incomplete)
    return VersionWrite(state.dataset, ids, draft.version, draft, after, VersionNotice(attributes, record, body))
