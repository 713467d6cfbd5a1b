"""The push API over HTTP with fakes of our own ports (no broker, no database): status codes, JSON errors,
idempotency, rate limiting, and a property test that no input gets a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.entrypoints.api_models import CommuneStatus, ErrorDoc, PushAccepted
from services.ingest.entrypoints.http_app import ApiPorts, build_app
from services.ingest.settings import IngestSettings
from tests.fakes.ingest_ports import FixedStatus, InMemoryIdempotency, InMemoryTokens, RecordingSink

POINT = {"type": "Point", "coordinates": [4.88, 45.77]}
URL = "/v1/datasets/public_toilets/changes"


class Api:
    def __init__(self, **overrides: Any) -> None:
        self.tokens = InMemoryTokens()
        self.sink = RecordingSink()
        self.idem = InMemoryIdempotency()
        s = IngestSettings(max_body_bytes=20_000, max_records_per_request=50, **overrides)
        self.app = build_app(s, ports=ApiPorts(self.tokens, self.idem, self.sink, FixedStatus()))
        self.villeurbanne = self.tokens.issue("69266")
        self.lyon = self.tokens.issue("69123")
        self.admin = self.tokens.issue(None)

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api() -> Iterator[tuple[Api, TestClient]]:
    a = Api()
    with TestClient(a.app) as client:
        yield a, client


def body(*records: dict[str, Any]) -> dict[str, Any]:
    return {"records": list(records)}


def test_accepted_records_are_published_and_refusals_explained(api: tuple[Api, TestClient]) -> None:
    a, client = api
    r = client.post(
        URL,
        json=body(
            {"gid": 1, "adresse": "x", "geometry": POINT}, {"adresse": "no id"}, {"operation": "delete", "gid": 2}
        ),
        headers=a.auth(a.villeurbanne),
    )
    assert r.status_code == 202, r.text
    doc = PushAccepted.model_validate(r.json())
    assert [x.index for x in doc.accepted] == [0, 2] and [x.index for x in doc.refused] == [1]
    assert doc.refused[0].reason == "invalid_envelope"
    assert [e.event_id for e in a.sink.events] == [x.event_id for x in doc.accepted]
    assert {e.commune for e in a.sink.events} == {"69266"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic abc"}, 401),
        ({"Authorization": "Bearer odc_nope"}, 401),
        ({"Authorization": "Bearer odc_0000000000ff_" + "A" * 43}, 401),
    ],
)
def test_missing_malformed_and_unknown_tokens_get_401_and_nothing_is_published(
    api: tuple[Api, TestClient], headers: dict[str, str], status: int
) -> None:
    a, client = api
    r = client.post(URL, json=body({"gid": 1}), headers=headers)
    assert r.status_code == status and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert ErrorDoc.model_validate(r.json()).error == "unauthenticated"
    assert not a.sink.events


def test_a_revoked_token_gets_401(api: tuple[Api, TestClient]) -> None:
    a, client = api
    a.tokens.revoke(a.lyon)
    assert client.post(URL, json=body({"gid": 1}), headers=a.auth(a.lyon)).status_code == 401


def test_a_commune_cannot_write_another_communes_records_403_nothing_published(api: tuple[Api, TestClient]) -> None:
    a, client = api
    r = client.post(
        URL, json=body({"gid": 1, "codinsee": "69266"}, {"gid": 2, "codinsee": "69123"}), headers=a.auth(a.villeurbanne)
    )
    assert r.status_code == 403 and r.json()["error"] == "forbidden_commune"
    assert [x["index"] for x in r.json()["refused"]] == [1]
    assert not a.sink.events
    # the admin token may write both
    r = client.post(
        URL, json=body({"gid": 1, "codinsee": "69266"}, {"gid": 2, "codinsee": "69123"}), headers=a.auth(a.admin)
    )
    assert r.status_code == 202 and {e.commune for e in a.sink.events} == {"69266", "69123"}


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "malformed_body"),
        (b"", 400, "malformed_body"),
        (b"\xff\xfe\x00", 400, "malformed_body"),
        (b"[]", 400, "malformed_body"),
        (b'{"records": 3}', 400, "malformed_body"),
        (b"[" * 100_000, 413, "payload_too_large"),
        (json.dumps(body(*({"gid": i} for i in range(51)))).encode(), 413, "too_many_records"),
    ],
)
def test_bad_bodies_get_clear_json_errors_and_nothing_is_published(
    api: tuple[Api, TestClient], content: bytes, status: int, code: str
) -> None:
    a, client = api
    r = client.post(URL, content=content, headers={**a.auth(a.villeurbanne), "Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (status, code)
    assert r.json()["message"]
    assert not a.sink.events


def test_a_chunked_body_over_the_limit_is_refused_without_content_length(api: tuple[Api, TestClient]) -> None:
    a, client = api

    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b" " * 1000

    r = client.post(URL, content=chunks(), headers=a.auth(a.villeurbanne))
    assert r.status_code == 413 and not a.sink.events


def test_unknown_dataset_is_404(api: tuple[Api, TestClient]) -> None:
    a, client = api
    r = client.post("/v1/datasets/swimming_pools/changes", json=body({"gid": 1}), headers=a.auth(a.villeurbanne))
    assert r.status_code == 404 and "public_toilets" in r.json()["known"]


def test_idempotency_key_replays_the_first_answer_and_refuses_another_body(api: tuple[Api, TestClient]) -> None:
    a, client = api
    h = {**a.auth(a.villeurbanne), "Idempotency-Key": "batch-2026-11-22-1"}
    first = client.post(URL, json=body({"gid": 1, "geometry": POINT}), headers=h)
    again = client.post(URL, json=body({"gid": 1, "geometry": POINT}), headers=h)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert len(a.sink.events) == 1
    other = client.post(URL, json=body({"gid": 2}), headers=h)
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    assert len(a.sink.events) == 1
    # keys are per commune: another commune may use the same key
    assert (
        client.post(
            URL, json=body({"gid": 3}), headers={**a.auth(a.lyon), "Idempotency-Key": h["Idempotency-Key"]}
        ).status_code
        == 202
    )


def test_a_broker_failure_is_503_and_frees_the_idempotency_key(api: tuple[Api, TestClient]) -> None:
    a, client = api
    h = {**a.auth(a.villeurbanne), "Idempotency-Key": "k1"}
    a.sink.fail = True
    r = client.post(URL, json=body({"gid": 1}), headers=h)
    assert r.status_code == 503 and r.headers["Retry-After"]
    a.sink.fail = False
    assert client.post(URL, json=body({"gid": 1}), headers=h).status_code == 202


def test_rate_limit_per_commune_429_with_retry_after() -> None:
    a = Api(rate_limit_records_per_second=1, rate_limit_burst_records=5)
    with TestClient(a.app) as client:
        ok = client.post(URL, json=body(*({"gid": i} for i in range(5))), headers=a.auth(a.villeurbanne))
        assert ok.status_code == 202
        limited = client.post(URL, json=body({"gid": 9}), headers=a.auth(a.villeurbanne))
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"] == "rate_limited"
        # another commune is not affected
        assert client.post(URL, json=body({"gid": 9}), headers=a.auth(a.lyon)).status_code == 202
        assert len(a.sink.events) == 6


def test_status_is_for_the_communes_own_token_or_admin(api: tuple[Api, TestClient]) -> None:
    a, client = api
    ok = client.get("/v1/communes/69266/status", headers=a.auth(a.villeurbanne))
    assert ok.status_code == 200 and CommuneStatus.model_validate(ok.json()).commune == "69266"
    assert client.get("/v1/communes/69123/status", headers=a.auth(a.villeurbanne)).status_code == 403
    assert client.get("/v1/communes/69123/status", headers=a.auth(a.admin)).status_code == 200
    assert client.get("/v1/communes/69123/status").status_code == 401
    bad = client.get("/v1/communes/lyon/status", headers=a.auth(a.admin))
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"


def test_health_and_metrics(api: tuple[Api, TestClient]) -> None:
    a, client = api
    client.post(URL, json=body({"gid": 1}), headers=a.auth(a.villeurbanne))
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200
    text = client.get("/metrics").text
    assert 'odc_ingest_http_requests_total{route="/v1/datasets/{dataset}/changes",status="202"} 1.0' in text


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
RECORD_KEYS = st.sampled_from(
    [
        "gid",
        "codinsee",
        "commune",
        "operation",
        "geometry",
        "sequence",
        "type",
        "properties",
        "id",
        "feature_id",
        "adresse",
    ]
)
RECORDS = st.lists(st.dictionaries(RECORD_KEYS, JSON, max_size=6) | JSON, max_size=6)
BODIES = (
    st.binary(max_size=300)
    | JSON.map(lambda v: json.dumps(v).encode())
    | RECORDS.map(lambda rs: json.dumps({"records": rs}, allow_nan=True).encode())
    | RECORDS.map(lambda rs: json.dumps({"type": "FeatureCollection", "features": rs}).encode())
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=BODIES, dataset=st.sampled_from(["public_toilets", "parks_gardens", "nope", "x" * 101]))
def test_no_input_gets_a_500(api: tuple[Api, TestClient], content: bytes, dataset: str) -> None:
    a, client = api
    before = len(a.sink.events)
    r = client.post(f"/v1/datasets/{dataset}/changes", content=content, headers=a.auth(a.villeurbanne))
    assert r.status_code in {202, 400, 403, 404, 413, 429}, (r.status_code, r.text)
    doc = r.json()
    if r.status_code == 202:
        assert len(a.sink.events) - before == len(doc["accepted"])
        assert all(e.commune == "69266" for e in a.sink.events[before:])
    else:
        assert doc["error"] and len(a.sink.events) == before
