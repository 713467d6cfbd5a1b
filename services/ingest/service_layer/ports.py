"""The ports the ingest handlers need. Real adapters in ``services/ingest/adapters``; in-memory fakes in
``tests/fakes/ingest_ports.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from services.contract.api_tokens import StoredToken
from services.contract.messages import ChangeEvent
from services.ingest.domain.send_report import RecordOutcome, SentRecord
from services.ingest.domain.snapshot_diff import FeatureRef


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class TokenStore(Protocol):
    async def get(self, token_id: str) -> StoredToken | None: ...


class EventSink(Protocol):
    async def publish(
        self, events: Iterable[ChangeEvent], on_sent: Callable[[int], None] | None = None, window: int = 5000
    ) -> int:
        """Send every event, signed, and return once the broker acknowledged all of them. Raises
        RecordsTooLarge (nothing sent) when an event is over the record size limit, PublishFailed when the
        broker did not acknowledge every event in time (then nothing still buffered is sent later)."""
        ...


@dataclass(frozen=True)
class StoredResponse:
    request_sha256: str
    status: int | None  # None while the first request with this key is still being handled
    body: dict[str, Any] | None


class IdempotencyStore(Protocol):
    async def get(self, scope: str, key: str) -> StoredResponse | None: ...

    async def claim(self, scope: str, key: str, request_sha256: str) -> bool:
        """Reserve the key for this request; False when another request holds it already."""
        ...

    async def complete(self, scope: str, key: str, status: int, body: dict[str, Any]) -> None:
        """Store the answer; StoreUnavailable when the database is down."""
        ...

    async def release(self, scope: str, key: str) -> None:
        """Forget a claim whose request failed (e.g. the broker was down), so the client can retry."""
        ...


@dataclass(frozen=True)
class ConnectorConfig:
    name: str
    commune: str | None  # None: a Métropole connector (commune read per record)
    dataset: str
    source: str  # local path or http(s) URL
    fmt: str | None
    every_seconds: float
    max_delete_share: float
    profile: str | None = None  # the source name of a saved profile (commune, or '*' for a Métropole connector)


class ConnectorStore(Protocol):
    async def get(self, name: str) -> ConnectorConfig | None: ...

    def exclusive(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Hold the connector's run lock (across processes); yields False when another run holds it."""
        ...

    async def state(self, name: str) -> dict[FeatureRef, str]:
        """The last applied snapshot: fingerprint per feature."""
        ...

    async def apply(
        self,
        name: str,
        upserts: Mapping[FeatureRef, str],
        removed: Iterable[FeatureRef],
        summary: dict[str, Any],
    ) -> None:
        """Record the applied snapshot's state and the run, in one transaction."""
        ...

    async def record_run(self, name: str, status: str, summary: dict[str, Any]) -> None:
        """Record a run that changed no state (held, failed, nothing to do)."""
        ...


@dataclass(frozen=True)
class StoredProfile:
    commune: str  # an INSEE code, or '*' for a file that names each record's commune
    dataset: str
    source: str
    version: int
    profile: dict[str, Any]  # the profile document (source_profiles.profile_to_dict)
    saved_by: str
    saved_at: datetime


class ProfileStore(Protocol):
    async def save(
        self, commune: str, dataset: str, source: str, profile: dict[str, Any], saved_by: str
    ) -> StoredProfile: ...

    async def get(
        self, commune: str, dataset: str, source: str, version: int | None = None
    ) -> StoredProfile | None: ...

    async def list_latest(self, commune: str | None = None, dataset: str | None = None) -> list[StoredProfile]: ...

    async def versions(self, commune: str, dataset: str, source: str) -> list[StoredProfile]: ...


class StatusReadModel(Protocol):
    async def commune_status(self, commune: str, datasets: list[str], recent: int = 20) -> dict[str, Any]: ...


class SnapshotFetcher(Protocol):
    async def fetch(self, source: str) -> bytes: ...


class PublishFailed(Exception):
    """The broker did not acknowledge every event (transient): nothing is recorded as done."""


class StoreUnavailable(Exception):
    """A store could not be written (database down); raised by adapters for transient failures."""


class RecordsTooLarge(Exception):
    """Some events are larger, encoded, than the largest record the input path takes (permanent: a retry
    can never succeed). Nothing was sent. ``sizes`` maps the position of each such event in the call to its
    encoded size."""

    def __init__(self, sizes: Mapping[int, int], limit: int) -> None:
        self.sizes = dict(sizes)
        self.limit = limit
        first = min(self.sizes)
        super().__init__(
            f"{len(self.sizes)} record(s) larger than the limit of {limit} bytes per record "
            f"(the first, at position {first}, is {self.sizes[first]} bytes encoded)"
        )


class SnapshotUnavailable(Exception):
    """The source could not be read (file missing, HTTP error, too large): the run fails, nothing changes."""


@dataclass(frozen=True)
class StoredReceipt:
    receipt_id: str
    commune: str | None  # the token's commune (None: admin)
    dataset: str
    body: dict[str, Any]  # the push answer: accepted (index, event_id, feature_id, commune) and refused


class ReceiptStore(Protocol):
    async def save(self, receipt_id: str, commune: str | None, dataset: str, body: dict[str, Any]) -> None: ...

    async def get(self, receipt_id: str) -> StoredReceipt | None: ...


class OutcomeReader(Protocol):
    async def read(self, dataset: str, sent: Sequence[SentRecord]) -> list[RecordOutcome]:
        """One outcome per sent record, in order; ``pending`` where the pipeline has not answered yet."""
        ...
