"""The push API's honest answers, with fakes of our own ports: a too-large record is refused at once with a
reason naming the limit (never a 503); a broker that does not take the records, a database that is down and
a dependency that does not answer are 503 + Retry-After within the answer deadline, never a hang or a 500;
with an Idempotency-Key a retry after a 503 carries the same event ids (applied once by the normaliser)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa_exc

from services.contract import size_limits
from services.contract.api_tokens import StoredToken
from services.contract.messages import ChangeEvent
from services.ingest.entrypoints.http_app import ApiPorts, build_app
from services.ingest.service_layer.ports import StoreUnavailable
from services.ingest.settings import IngestSettings
from tests.fakes.ingest_ports import FixedStatus, InMemoryIdempotency, InMemoryTokens, RecordingSink

URL = "/v1/datasets/public_toilets/changes"
POINT = {"type": "Point", "coordinates": [4.88, 45.77]}


def client_for(sink: Any = None, tokens: Any = None, **overrides: Any) -> tuple[TestClient, InMemoryTokens, Any]:
    real_tokens = InMemoryTokens()
    sink = sink or RecordingSink()
    settings = IngestSettings(**{"answer_timeout_seconds": 1.0, "retry_after_seconds": 7, **overrides})
    app = build_app(settings, ports=ApiPorts(tokens or real_tokens, InMemoryIdempotency(), sink, FixedStatus()))
    return TestClient(app), real_tokens, sink


def test_the_size_limits_agree_end_to_end() -> None:
    s = IngestSettings()
    assert s.max_body_bytes == size_limits.MAX_BODY_BYTES
    assert s.max_record_bytes == size_limits.MAX_RECORD_BYTES < s.max_body_bytes
    # one record of the largest size, its key, signature headers and batch overhead fit one producer request
    assert s.max_record_bytes + 32 * 1024 <= s.producer_max_request_bytes == size_limits.PRODUCER_MAX_REQUEST_BYTES
    assert s.producer_max_request_bytes <= size_limits.BROKER_MESSAGE_MAX_BYTES


def test_a_3_mb_attribute_under_the_body_limit_is_refused_at_once_naming_the_limit_and_the_rest_flows() -> None:
    client, tokens, sink = client_for()
    token = tokens.issue("69266")
    big = {"gid": 1, "adresse": "x" * 3_000_000, "geometry": POINT}
    small = {"gid": 2, "adresse": "Place Lazare Goujon", "geometry": POINT}
    with client:
        r = client.post(URL, json={"records": [big, small]}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 202, r.text
    doc = r.json()
    assert [a["index"] for a in doc["accepted"]] == [1]
    [refused] = doc["refused"]
    assert refused["index"] == 0 and refused["reason"] == "record_too_large" and refused["feature_id"] == "1"
    assert str(size_limits.MAX_RECORD_BYTES) in refused["message"]
    assert [e.feature_id for e in sink.events] == ["2"]


def test_a_broker_that_does_not_take_the_records_is_503_with_retry_after() -> None:
    sink = RecordingSink()
    sink.fail = True
    client, tokens, _ = client_for(sink)
    token = tokens.issue("69266")
    with client:
        r = client.post(
            URL, json={"records": [{"gid": 1, "geometry": POINT}]}, headers={"Authorization": f"Bearer {token}"}
        )
    assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    assert r.json()["error"] == "broker_unavailable" and sink.events == []


class DownTokens:
    async def get(self, token_id: str) -> StoredToken | None:
        raise sa_exc.OperationalError("SELECT", {}, psycopg.OperationalError("connection refused"))


class HungTokens:
    async def get(self, token_id: str) -> StoredToken | None:
        await asyncio.sleep(60)
        return None


@pytest.mark.parametrize(
    ("tokens", "error"), [(DownTokens(), "database_unavailable"), (HungTokens(), "service_unavailable")]
)
def test_a_database_down_or_not_answering_is_503_with_retry_after_not_a_500_or_a_hang(tokens: Any, error: str) -> None:
    client, real, sink = client_for(tokens=tokens)
    token = real.issue("69266")
    with client:
        started = time.monotonic()
        r = client.post(
            URL, json={"records": [{"gid": 1, "geometry": POINT}]}, headers={"Authorization": f"Bearer {token}"}
        )
        elapsed = time.monotonic() - started
        status = client.get("/v1/communes/69266/status", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503 and r.headers["Retry-After"] == "7" and r.json()["error"] == error
    assert status.status_code == 503 and status.json()["error"] == error
    assert elapsed < 30  # not a hang (the fake would hold it 60 s); the bound itself is the setting, 1 s here
    assert sink.events == []


class FlakySink(RecordingSink):
    """Fails the first call (the broker did not acknowledge in time), then takes the records."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    async def publish(
        self, events: Iterable[ChangeEvent], on_sent: Callable[[int], None] | None = None, window: int = 5000
    ) -> int:
        batch = list(events)
        self.calls.append([e.event_id for e in batch])
        self.fail = len(self.calls) == 1
        return await super().publish(batch, on_sent, window)


def test_with_an_idempotency_key_a_retry_after_a_503_carries_the_same_event_ids() -> None:
    sink = FlakySink()
    client, tokens, _ = client_for(sink)
    headers = {"Authorization": f"Bearer {tokens.issue('69266')}", "Idempotency-Key": "export-1"}
    records = {"records": [{"gid": 1, "geometry": POINT}, {"gid": 2, "geometry": POINT}]}
    with client:
        first = client.post(URL, json=records, headers=headers)
        second = client.post(URL, json=records, headers=headers)
        other = client.post(URL, json=records, headers={**headers, "Idempotency-Key": "export-2"})
    assert first.status_code == 503 and second.status_code == 202 and other.status_code == 202
    assert sink.calls[0] == sink.calls[1]  # the same ids: whatever the broker took of the first is applied once
    assert set(sink.calls[2]).isdisjoint(sink.calls[0])  # another key, other ids
    assert [a["event_id"] for a in second.json()["accepted"]] == sink.calls[1]


class CompleteFailsIdempotency(InMemoryIdempotency):
    async def complete(self, scope: str, key: str, status: int, body: dict[str, Any]) -> None:
        raise StoreUnavailable("database down (fake)")


def test_records_acknowledged_before_the_database_failed_are_answered_202_not_503() -> None:
    tokens, sink = InMemoryTokens(), RecordingSink()
    app = build_app(IngestSettings(), ports=ApiPorts(tokens, CompleteFailsIdempotency(), sink, FixedStatus()))
    headers = {"Authorization": f"Bearer {tokens.issue('69266')}", "Idempotency-Key": "k"}
    with TestClient(app) as client:
        r = client.post(URL, json={"records": [{"gid": 1, "geometry": POINT}]}, headers=headers)
    assert r.status_code == 202 and r.headers["Idempotency-Stored"] == "false"
    assert [e.event_id for e in sink.events] == [a["event_id"] for a in r.json()["accepted"]]
