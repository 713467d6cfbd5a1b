"""Ports of the publisher's handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol

from services.contract.api_tokens import StoredToken
from services.publish.domain.feature_documents import StoredFeature
from services.publish.domain.version_transaction import VersionWrite
from services.publish.domain.versioning import DatasetState, PendingChanges, PendingSummary, ReceivedChange
from services.publish.domain.webhooks import AttemptResult, DeliveryDecision


class Clock(Protocol):
    def now(self) -> datetime: ...


class PublishUnitOfWork(Protocol):
    async def __aenter__(self) -> PublishUnitOfWork: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def record_changes(self, changes: Sequence[ReceivedChange], received_at: datetime) -> int:
        """Append changes not seen before (idempotent on change_id) to the change log, each at a position after
        every dataset's cut; return how many were new."""
        ...

    async def pending_summaries(self) -> dict[str, PendingSummary]: ...

    async def lock_dataset(self, dataset: str) -> DatasetState:
        """Lock the dataset's version counter and cut position until commit (created at version 0 if new):
        changes recorded meanwhile wait and land after the cut."""
        ...

    async def pending_changes(self, dataset: str, limit: int, max_bytes: int) -> PendingChanges:
        """The first changes after the dataset's cut position, at most ``limit`` of them and, past the first, at
        most ``max_bytes`` in all (``versioning.change_bytes``), in change_id order, and the position of the last
        one."""
        ...

    async def save_version(self, write: VersionWrite) -> None:
        """Write what ``version_transaction.decide_version`` decided: move the dataset's cut position to the end
        of the version's range; with a draft, store the version and its range (its diff is derived from it),
        the dataset's new state, the published features and the notifications (outbox, structured event, one
        delivery per matching webhook subscription)."""
        ...

    async def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> PublishUnitOfWork: ...


# -- webhooks ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedDelivery:
    """The oldest pending delivery of a subscription, locked for one attempt."""

    id: int
    subscription_id: str
    url: str
    secret: str
    event_id: str
    dataset: str
    version: int
    attempts: int
    body: bytes
    previous_secret: str | None = None  # still in force during a rotation's overlap: signed with both
    legacy_signature: bool = False  # registered before Standard Webhooks: the old header too

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.secret,) if self.previous_secret is None else (self.secret, self.previous_secret)


@dataclass(frozen=True)
class NewSubscription:
    id: str
    url: str
    datasets: tuple[str, ...] | None
    secret: str
    description: str
    created_at: datetime


class DeliveryStore(Protocol):
    async def __aenter__(self) -> DeliveryStore: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def due_subscriptions(self, now: datetime, limit: int) -> list[str]:
        """Subscriptions whose oldest pending delivery is due."""
        ...

    async def claim_head(self, subscription_id: str, now: datetime) -> ClaimedDelivery | None:
        """Lock the subscription (skipping it if another worker holds it) and return its oldest pending
        delivery if due: one attempt at a time per subscription, in order."""
        ...

    async def record_attempt(
        self, delivery_id: int, decision: DeliveryDecision, result: AttemptResult, now: datetime
    ) -> None: ...

    async def add_subscription(self, s: NewSubscription) -> None: ...

    async def commit(self) -> None: ...


class DeliveryStoreFactory(Protocol):
    def __call__(self) -> DeliveryStore: ...


class WebhookSender(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult: ...


class AddressResolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]: ...


class TokenStore(Protocol):
    """The API tokens (hashed) shared with the ingest service: operators manage subscriptions with one."""

    async def get(self, token_id: str) -> StoredToken | None: ...


# -- OGC API Part 4: commune edits go through the push API (services/ingest), never into the database ----------
class PushApiUnavailable(Exception):
    """The push API did not answer (refused connection, timeout): the write was not sent."""


@dataclass(frozen=True)
class PushAnswer:
    status: int
    body: object
    retry_after: str | None = None


class PushApi(Protocol):
    """The ingest service's push API: the one write path (token, rate limit, idempotency, signing, receipts)."""

    async def push(self, token: str, dataset: str, record: dict[str, object], idempotency_key: str) -> PushAnswer: ...

    async def receipt(self, token: str, receipt_path: str) -> PushAnswer: ...


class FeatureReader(Protocol):
    """The current published state of one feature."""

    async def item(self, dataset: str, commune: str, feature_id: str) -> StoredFeature | None: ...


class ExportFiles(Protocol):
    """Immutable export documents kept as files, so that they are served with a length and byte ranges without
    being held in memory. ``name`` identifies one document of one version for good (it includes the version's
    content hash); ``produce`` writes it, in chunks, when it is not kept yet."""

    async def file(self, name: str, produce: Callable[[], AsyncIterator[bytes]]) -> Path: ...
