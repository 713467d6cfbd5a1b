"""Ports of the publisher's handlers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol

from services.publish.domain.versioning import DatasetState, PendingSummary, ReceivedChange, VersionDraft


class Clock(Protocol):
    def now(self) -> datetime: ...


class PublishUnitOfWork(Protocol):
    async def __aenter__(self) -> PublishUnitOfWork: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def record_changes(self, changes: Sequence[ReceivedChange], received_at: datetime) -> int:
        """Store changes not seen before (idempotent on change_id); return how many were new."""
        ...

    async def pending_summaries(self) -> dict[str, PendingSummary]: ...

    async def lock_dataset(self, dataset: str) -> DatasetState:
        """Lock the dataset's version counter until commit (created at version 0 if new)."""
        ...

    async def pending_changes(self, dataset: str, limit: int) -> list[ReceivedChange]: ...

    async def save_version(
        self, draft: VersionDraft | None, state: DatasetState, change_ids: Sequence[int], source: str
    ) -> None:
        """Store the version, its diff and its notification (outbox); mark the changes as included.
        With ``draft`` None the changes had no net effect: they are marked absorbed, nothing is published."""
        ...

    async def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> PublishUnitOfWork: ...
