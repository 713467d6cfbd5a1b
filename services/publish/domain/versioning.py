"""Cut numbered dataset versions from the canonical feature changes received since the last one.

The cost of a version is proportional to the changes it holds, not to the dataset: the feature count
and the dataset content hash are maintained incrementally (the hash is an XOR over per-feature digests,
so removing a feature's digest is XOR-ing it again).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from services.contract.conformance_levels import is_incomplete_json
from services.contract.datasets.catalogue import VersioningPolicy
from services.contract.messages import ChangeKind, FeatureState

EMPTY_HASH = "0" * 64


class DiffKind(str, Enum):
    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"


@dataclass(frozen=True)
class ReceivedChange:
    change_id: int
    dataset: str
    commune: str
    feature_id: str
    kind: ChangeKind
    before: FeatureState | None
    after: FeatureState | None


def change_bytes(c: ReceivedChange) -> int:
    """What a change weighs for the bound on a version's size: the UTF-8 bytes of its before and after geometry
    and attributes (the store counts the same with ``octet_length`` on the four columns)."""
    return sum(
        len(text.encode("utf-8"))
        for s in (c.before, c.after)
        if s is not None
        for text in (s.geometry_geojson, s.attributes_json)
        if text is not None
    )


@dataclass(frozen=True)
class DatasetState:
    dataset: str
    last_version: int
    feature_count: int
    content_hash: str
    incomplete: int = 0  # live features marked incomplete (conformance_levels.py); the rest conform
    # the change log's position up to which every change of the dataset is in a version (or absorbed):
    # the changes after it are pending (docs/architecture.md, "Versions are ranges of the change log")
    cut_position: int = 0


@dataclass(frozen=True)
class PendingChanges:
    """The dataset's changes recorded in the change log after its cut position, up to ``through`` (the
    position of the last one read), in change_id order: a version covers exactly that range of the log."""

    changes: tuple[ReceivedChange, ...]
    through: int


@dataclass(frozen=True)
class DiffEntry:
    commune: str
    feature_id: str
    kind: DiffKind
    before: FeatureState | None
    after: FeatureState | None


@dataclass(frozen=True)
class VersionDraft:
    dataset: str
    version: int
    published_at: datetime
    added: int
    updated: int
    removed: int
    feature_count: int
    content_hash: str
    first_change_id: int
    last_change_id: int
    entries: tuple[DiffEntry, ...]
    incomplete: int = 0  # features of this version marked incomplete, maintained like feature_count

    @property
    def conforming(self) -> int:
        return self.feature_count - self.incomplete


@dataclass(frozen=True)
class PendingSummary:
    count: int
    oldest_received_at: datetime
    newest_received_at: datetime


def should_cut(
    policy: VersioningPolicy, pending: PendingSummary | None, now: datetime, max_delay_seconds: float
) -> bool:
    """Cut when the dataset has been quiet for the quiet period, when enough changes wait, or when the
    oldest waiting change has waited too long (a steady stream never goes quiet)."""
    if pending is None or pending.count == 0:
        return False
    if pending.count >= policy.max_changes:
        return True
    if (now - pending.newest_received_at).total_seconds() >= policy.quiet_period_seconds:
        return True
    return (now - pending.oldest_received_at).total_seconds() >= max_delay_seconds


def feature_digest(commune: str, feature_id: str, content_hash: str) -> int:
    h = hashlib.sha256(f"{commune}\x1f{feature_id}\x1f{content_hash}".encode())
    return int.from_bytes(h.digest(), "big")


def collapse(changes: list[ReceivedChange]) -> list[DiffEntry]:
    """Net effect per feature of changes given in change_id order: first 'before', last 'after'."""
    first: dict[tuple[str, str], ReceivedChange] = {}
    last: dict[tuple[str, str], ReceivedChange] = {}
    for c in changes:
        key = (c.commune, c.feature_id)
        first.setdefault(key, c)
        last[key] = c
    entries: list[DiffEntry] = []
    for key, f in first.items():
        before, after = f.before, last[key].after
        if before is None and after is None:
            continue  # created then deleted within the version
        if before is None:
            entries.append(DiffEntry(key[0], key[1], DiffKind.ADDED, None, after))
        elif after is None:
            entries.append(DiffEntry(key[0], key[1], DiffKind.REMOVED, before, None))
        elif before.content_hash != after.content_hash:
            entries.append(DiffEntry(key[0], key[1], DiffKind.UPDATED, before, after))
    entries.sort(key=lambda e: (e.commune, e.feature_id))
    return entries


def build_version(state: DatasetState, changes: list[ReceivedChange], now: datetime) -> VersionDraft | None:
    """The next version from ``changes`` (in change_id order); None when their net effect is nil."""
    if not changes:
        return None
    entries = collapse(changes)
    if not entries:
        return None
    acc = int(state.content_hash, 16)
    added = updated = removed = 0
    incomplete = state.incomplete
    for e in entries:
        if e.before is not None:
            acc ^= feature_digest(e.commune, e.feature_id, e.before.content_hash)
            incomplete -= is_incomplete_json(e.before.attributes_json)
        if e.after is not None:
            acc ^= feature_digest(e.commune, e.feature_id, e.after.content_hash)
            incomplete += is_incomplete_json(e.after.attributes_json)
        if e.kind is DiffKind.ADDED:
            added += 1
        elif e.kind is DiffKind.UPDATED:
            updated += 1
        else:
            removed += 1
    return VersionDraft(
        dataset=state.dataset,
        version=state.last_version + 1,
        published_at=now,
        added=added,
        updated=updated,
        removed=removed,
        feature_count=state.feature_count + added - removed,
        content_hash=f"{acc:064x}",
        first_change_id=changes[0].change_id,
        last_change_id=changes[-1].change_id,
        entries=tuple(entries),
        incomplete=incomplete,
    )


def content_hash_of(features: list[tuple[str, str, str]]) -> str:
    """Full recomputation from (commune, feature_id, content_hash) triples: the reference for tests."""
    acc = 0
    for commune, fid, chash in features:
        acc ^= feature_digest(commune, fid, chash)
    return f"{acc:064x}"


FeatureKey = tuple[str, str]  # (commune, feature_id)


def apply_entries(snapshot: dict[FeatureKey, FeatureState], entries: tuple[DiffEntry, ...] | list[DiffEntry]) -> None:
    """Apply one version's diff to a snapshot in place: the reference for "version n = version 1 + diffs 2..n"."""
    for e in entries:
        key = (e.commune, e.feature_id)
        if e.after is None:
            snapshot.pop(key, None)
        else:
            snapshot[key] = e.after
