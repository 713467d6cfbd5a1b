"""In-memory fake of the publisher's unit of work (our own port, service_layer/ports.PublishUnitOfWork), for
unit tests of the handlers. tests/integration/test_publish_store_contract.py runs the same contract against it
and the PostgreSQL adapter, so the fake cannot drift."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType

from services.contract.messages import FeatureState
from services.publish.domain.version_transaction import VersionNotice, VersionWrite
from services.publish.domain.versioning import (
    EMPTY_HASH,
    DatasetState,
    DiffEntry,
    PendingChanges,
    PendingSummary,
    ReceivedChange,
    VersionDraft,
    change_bytes,
)


@dataclass
class LoggedChange:
    change: ReceivedChange
    received_at: datetime
    position: int  # in the change log, after every cut (one counter for every dataset, as the sequence)
    version: int | None = None  # the version whose range holds it (PostgreSQL: the change_log view's answer)


@dataclass
class PublishData:
    changes: dict[int, LoggedChange] = field(default_factory=dict)
    last_position: int = 0
    states: dict[str, DatasetState] = field(default_factory=dict)
    versions: dict[tuple[str, int], VersionDraft] = field(default_factory=dict)
    published: dict[str, dict[tuple[str, str], tuple[FeatureState, int]]] = field(default_factory=dict)
    notices: dict[tuple[str, int], VersionNotice] = field(default_factory=dict)


class InMemoryPublishStore:
    def __init__(self) -> None:
        self.data = PublishData()

    def diff(self, dataset: str, version: int) -> list[DiffEntry]:
        draft = self.data.versions.get((dataset, version))
        return [] if draft is None else list(draft.entries)


class InMemoryPublishUnitOfWork:
    """A transaction is a working copy of the store's data, swapped in on commit."""

    def __init__(self, store: InMemoryPublishStore) -> None:
        self.store = store
        self._work: PublishData | None = None

    async def __aenter__(self) -> InMemoryPublishUnitOfWork:
        self._work = copy.deepcopy(self.store.data)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._work = None

    @property
    def work(self) -> PublishData:
        assert self._work is not None, "use the unit of work as an async context manager"
        return self._work

    async def record_changes(self, changes: Sequence[ReceivedChange], received_at: datetime) -> int:
        new = 0
        for c in changes:
            if c.change_id not in self.work.changes:
                self.work.last_position += 1
                self.work.changes[c.change_id] = LoggedChange(c, received_at, self.work.last_position)
                new += 1
        return new

    def _cut_position(self, dataset: str) -> int:
        state = self.work.states.get(dataset)
        return 0 if state is None else state.cut_position

    async def pending_summaries(self) -> dict[str, PendingSummary]:
        """The oldest waiting change is the first after the cut position, as in the PostgreSQL store."""
        out: dict[str, PendingSummary] = {}
        for logged in sorted(self.work.changes.values(), key=lambda c: c.position):
            if logged.position <= self._cut_position(logged.change.dataset):
                continue
            d, t = logged.change.dataset, logged.received_at
            s = out.get(d)
            out[d] = (
                PendingSummary(1, t, t)
                if s is None
                else PendingSummary(s.count + 1, s.oldest_received_at, max(s.newest_received_at, t))
            )
        return out

    async def lock_dataset(self, dataset: str) -> DatasetState:
        return self.work.states.setdefault(dataset, DatasetState(dataset, 0, 0, EMPTY_HASH, 0))

    async def pending_changes(self, dataset: str, limit: int, max_bytes: int) -> PendingChanges:
        cut = self._cut_position(dataset)
        first = sorted(
            (c for c in self.work.changes.values() if c.position > cut and c.change.dataset == dataset),
            key=lambda c: c.position,
        )[:limit]
        total = 0
        for i, c in enumerate(first):
            total += change_bytes(c.change)
            if i and total > max_bytes:
                first = first[:i]
                break
        return PendingChanges(
            tuple(c.change for c in sorted(first, key=lambda c: c.change.change_id)),
            max((c.position for c in first), default=cut),
        )

    async def save_version(self, write: VersionWrite) -> None:
        for c in self.work.changes.values():
            if c.change.dataset == write.dataset and write.first_position <= c.position <= write.last_position:
                c.version = write.marked_version
        self.work.states[write.dataset] = write.state_after
        draft, notice = write.draft, write.notice
        if draft is None or notice is None:
            return
        key = (draft.dataset, draft.version)
        if key in self.work.versions or key in self.work.notices:
            raise ValueError(f"version {key} already exists")  # the real tables' primary keys
        self.work.versions[key] = draft
        published = self.work.published.setdefault(draft.dataset, {})
        for e in draft.entries:
            if e.after is None:
                published.pop((e.commune, e.feature_id), None)
            else:
                published[(e.commune, e.feature_id)] = (e.after, draft.version)
        self.work.notices[key] = notice

    async def commit(self) -> None:
        self.store.data = self.work
        self._work = copy.deepcopy(self.work)
