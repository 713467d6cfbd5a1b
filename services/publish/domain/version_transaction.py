"""What one version transaction writes, decided as a plain function of plain data (issue #16.5).

``decide_version`` takes the dataset's locked state and its pending changes (the range of the change log after
its cut position, in change_id order) and returns a ``VersionWrite``: the version (its counts, O(changes)
content hash and diff, versioning.build_version), the range of the change log it covers, the state the dataset
moves to (its cut position at the range's end), and its two notifications (the Kafka CloudEvent in binary mode
and the structured JSON event for webhooks and SSE). The unit of work only writes it: one row per version, none
per change."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from services.contract.messages import DatasetVersionPublished
from services.publish.domain.notifications import (
    CloudEventAttributes,
    encode_event,
    structured_event,
    version_message,
)
from services.publish.domain.versioning import DatasetState, PendingChanges, VersionDraft, build_version


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
    """Everything one version transaction writes. The changes at positions ``first_position`` ..
    ``last_position`` of the change log are the version's (``marked_version``). ``draft`` None: they had no net
    effect; they belong to the dataset's current version (absorbed), only the cut position moves and nothing
    is published."""

    dataset: str
    first_position: int
    last_position: int
    marked_version: int
    draft: VersionDraft | None
    state_after: DatasetState
    notice: VersionNotice | None
    changes: int  # how many changes the range holds (taken off the dataset's pending count)


def decide_version(
    state: DatasetState, pending: PendingChanges, now: datetime, fmt: NotificationFormat
) -> VersionWrite | None:
    """The version transaction for the ``pending`` changes (after ``state.cut_position``, up to
    ``pending.through``); None when there are none."""
    if not pending.changes:
        return None
    if pending.through <= state.cut_position:
        raise ValueError(f"pending changes end at {pending.through}, not after the cut at {state.cut_position}")
    first, last = state.cut_position + 1, pending.through
    draft = build_version(state, list(pending.changes), now)
    if draft is None:
        absorbed = replace(state, cut_position=last)
        return VersionWrite(state.dataset, first, last, state.last_version, None, absorbed, None, len(pending.changes))
    attributes, record = version_message(
        draft, fmt.source, base_url=fmt.base_url, max_inline_changes=fmt.max_inline_changes
    )
    body = encode_event(
        structured_event(draft, fmt.source, base_url=fmt.base_url, max_inline_changes=fmt.max_inline_changes)
    )
    after = DatasetState(
        state.dataset, draft.version, draft.feature_count, draft.content_hash, draft.incomplete, cut_position=last
    )
    return VersionWrite(
        state.dataset,
        first,
        last,
        draft.version,
        draft,
        after,
        VersionNotice(attributes, record, body),
        len(pending.changes),
    )
