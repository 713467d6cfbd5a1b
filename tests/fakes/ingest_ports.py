"""In-memory fakes of the ingest service's own ports (services/ingest/service_layer/ports.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.contract import size_limits
from services.contract.api_tokens import StoredToken, format_token, hash_secret
from services.contract.codecs import Codecs
from services.contract.messages import ChangeEvent
from services.ingest.domain.send_report import RecordOutcome, SentRecord
from services.ingest.domain.snapshot_diff import FeatureRef
from services.ingest.service_layer.ports import (
    ConnectorConfig,
    PublishFailed,
    RecordsTooLarge,
    StoredProfile,
    StoredReceipt,
    StoredResponse,
)


class FakeClock:
    def __init__(self, start: datetime = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)) -> None:
        self.t = start
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)
        self.mono += seconds


class InMemoryTokens:
    def __init__(self) -> None:
        self.rows: dict[str, StoredToken] = {}
        self._n = 0

    def issue(self, commune: str | None) -> str:
        self._n += 1
        token_id = f"{self._n:012x}"
        secret = f"{self._n:043d}"
        self.rows[token_id] = StoredToken(token_id, commune, hash_secret(secret), False)
        return format_token(token_id, secret)

    def revoke(self, token: str) -> None:
        token_id = token.split("_")[1]
        t = self.rows[token_id]
        self.rows[token_id] = StoredToken(t.token_id, t.commune, t.secret_sha256, True)

    async def get(self, token_id: str) -> StoredToken | None:
        return self.rows.get(token_id)


class RecordingSink:
    """Keeps what it is given; refuses events over the record size limit as the Kafka publisher does (same
    codec, same limit), before anything is kept."""

    def __init__(self, max_record_bytes: int = size_limits.MAX_RECORD_BYTES) -> None:
        self.events: list[ChangeEvent] = []
        self.fail = False
        self.max_record_bytes = max_record_bytes
        self._codecs = Codecs()

    async def publish(
        self, events: Iterable[ChangeEvent], on_sent: Callable[[int], None] | None = None, window: int = 5000
    ) -> int:
        batch = list(events)
        sizes = {i: len(self._codecs.encode_change_event(ev)) for i, ev in enumerate(batch)}
        too_large = {i: n for i, n in sizes.items() if n > self.max_record_bytes}
        if too_large:
            raise RecordsTooLarge(too_large, self.max_record_bytes)
        if self.fail:
            raise PublishFailed("broker down (fake)")
        self.events.extend(batch)
        if on_sent and batch:
            on_sent(len(batch))
        return len(batch)


class InMemoryIdempotency:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], StoredResponse] = {}

    async def get(self, scope: str, key: str) -> StoredResponse | None:
        return self.rows.get((scope, key))

    async def claim(self, scope: str, key: str, request_sha256: str) -> bool:
        if (scope, key) in self.rows:
            return False
        self.rows[(scope, key)] = StoredResponse(request_sha256, None, None)
        return True

    async def complete(self, scope: str, key: str, status: int, body: dict[str, Any]) -> None:
        self.rows[(scope, key)] = StoredResponse(self.rows[(scope, key)].request_sha256, status, body)

    async def release(self, scope: str, key: str) -> None:
        row = self.rows.get((scope, key))
        if row is not None and row.status is None:
            del self.rows[(scope, key)]


class FixedStatus:
    async def commune_status(self, commune: str, datasets: list[str], recent: int = 20) -> dict[str, Any]:
        return {"commune": commune, "datasets": [], "recent_rejections": []}


@dataclass
class InMemoryConnectors:
    configs: dict[str, ConnectorConfig] = field(default_factory=dict)
    states: dict[str, dict[FeatureRef, str]] = field(default_factory=dict)
    runs: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    locked: set[str] = field(default_factory=set)

    async def get(self, name: str) -> ConnectorConfig | None:
        return self.configs.get(name)

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        if name in self.locked:
            yield False
            return
        self.locked.add(name)
        try:
            yield True
        finally:
            self.locked.discard(name)

    async def state(self, name: str) -> dict[FeatureRef, str]:
        return dict(self.states.get(name, {}))

    async def apply(
        self, name: str, upserts: Mapping[FeatureRef, str], removed: Iterable[FeatureRef], summary: dict[str, Any]
    ) -> None:
        st = self.states.setdefault(name, {})
        st.update(upserts)
        for r in removed:
            st.pop(r, None)
        self.runs.append((name, "applied", summary))

    async def record_run(self, name: str, status: str, summary: dict[str, Any]) -> None:
        self.runs.append((name, status, summary))


class BytesFetcher:
    """Serves snapshots from a dict source -> bytes; a missing source is SnapshotUnavailable."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    async def fetch(self, source: str) -> bytes:
        from services.ingest.service_layer.ports import SnapshotUnavailable

        if source not in self.files:
            raise SnapshotUnavailable(f"no such file {source}")
        return self.files[source]


class InMemoryProfiles:
    """ProfileStore: versions per (commune, dataset, source), in saving order."""

    def __init__(self) -> None:
        self.rows: list[StoredProfile] = []

    async def save(
        self, commune: str, dataset: str, source: str, profile: dict[str, Any], saved_by: str
    ) -> StoredProfile:
        last = max(
            (r.version for r in self.rows if (r.commune, r.dataset, r.source) == (commune, dataset, source)), default=0
        )
        row = StoredProfile(commune, dataset, source, last + 1, dict(profile), saved_by, datetime.now(UTC))
        self.rows.append(row)
        return row

    async def get(self, commune: str, dataset: str, source: str, version: int | None = None) -> StoredProfile | None:
        rows = await self.versions(commune, dataset, source)
        if version is not None:
            rows = [r for r in rows if r.version == version]
        return rows[-1] if rows else None

    async def list_latest(self, commune: str | None = None, dataset: str | None = None) -> list[StoredProfile]:
        latest: dict[tuple[str, str, str], StoredProfile] = {}
        for r in self.rows:
            if (commune is None or r.commune == commune) and (dataset is None or r.dataset == dataset):
                latest[(r.commune, r.dataset, r.source)] = r
        return [latest[k] for k in sorted(latest)]

    async def versions(self, commune: str, dataset: str, source: str) -> list[StoredProfile]:
        return [r for r in self.rows if (r.commune, r.dataset, r.source) == (commune, dataset, source)]


class InMemoryReceipts:
    def __init__(self) -> None:
        self.rows: dict[str, StoredReceipt] = {}

    async def save(self, receipt_id: str, commune: str | None, dataset: str, body: dict[str, Any]) -> None:
        self.rows.setdefault(receipt_id, StoredReceipt(receipt_id, commune, dataset, json.loads(json.dumps(body))))

    async def get(self, receipt_id: str) -> StoredReceipt | None:
        return self.rows.get(receipt_id)


class ScriptedOutcomes:
    """The pipeline's answer per event id, set by the test (absent: pending)."""

    def __init__(self) -> None:
        self.by_event: dict[str, RecordOutcome] = {}

    async def read(self, dataset: str, sent: Sequence[SentRecord]) -> list[RecordOutcome]:
        return [
            replace(self.by_event[s.event_id], row=s.source_row, feature_id=s.feature_id)
            if s.event_id in self.by_event
            else RecordOutcome("pending", s.source_row, s.feature_id)
            for s in sent
        ]
