"""The push API's receipt: each record's outcome readable later (GET /v1/receipts/{id}), with fakes of the
ingest's own ports."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.ingest.domain.send_report import Problem, RecordOutcome
from services.ingest.entrypoints.http_app import ApiPorts, build_app
from services.ingest.settings import IngestSettings
from tests.fakes.ingest_ports import (
    FixedStatus,
    InMemoryIdempotency,
    InMemoryReceipts,
    InMemoryTokens,
    RecordingSink,
    ScriptedOutcomes,
)

URL = "/v1/datasets/public_toilets/changes"
POINT = {"type": "Point", "coordinates": [4.88, 45.77]}


class Api:
    def __init__(self) -> None:
        self.tokens = InMemoryTokens()
        self.sink = RecordingSink()
        self.outcomes = ScriptedOutcomes()
        ports = ApiPorts(
            self.tokens,
            InMemoryIdempotency(),
            self.sink,
            FixedStatus(),
            receipts=InMemoryReceipts(),
            outcomes=self.outcomes,
        )
        self.app = build_app(IngestSettings(), ports=ports)
        self.lyon = self.tokens.issue("69123")
        self.villeurbanne = self.tokens.issue("69266")
        self.admin = self.tokens.issue(None)

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api() -> Iterator[tuple[Api, TestClient]]:
    a = Api()
    with TestClient(a.app) as client:
        yield a, client


def push(a: Api, client: TestClient, *records: dict[str, Any]) -> dict[str, Any]:
    r = client.post(URL, json={"records": list(records)}, headers=a.auth(a.lyon))
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def test_the_receipt_gives_each_records_outcome_as_the_pipeline_answers(api: tuple[Api, TestClient]) -> None:
    a, client = api
    doc = push(
        a,
        client,
        {"gid": 1, "geometry": POINT},
        {"adresse": "no id"},  # refused at the door
        {"gid": 3, "geometry": POINT},
        {"gid": 4, "geometry": POINT},
    )
    assert doc["receipt_url"] == f"/v1/receipts/{doc['receipt_id']}"
    first = client.get(doc["receipt_url"], headers=a.auth(a.lyon)).json()
    assert first["counts"] == {"conforming": 0, "incomplete": 0, "refused": 1, "pending": 3}
    assert first["complete"] is False
    ev = {e.feature_id: e.event_id for e in a.sink.events}
    a.outcomes.by_event[ev["1"]] = RecordOutcome("conforming")
    a.outcomes.by_event[ev["3"]] = RecordOutcome("incomplete", problems=(Problem("required", "x: required", "x"),))
    a.outcomes.by_event[ev["4"]] = RecordOutcome("refused", problems=(Problem("out_of_area", "outside", "geometry"),))
    later = client.get(doc["receipt_url"], headers=a.auth(a.lyon)).json()
    assert later["counts"] == {"conforming": 1, "incomplete": 1, "refused": 2, "pending": 0}
    assert later["complete"] is True
    levels = [(r["index"], r["level"]) for r in later["records"]]
    assert levels == [(0, "conforming"), (1, "refused"), (2, "incomplete"), (3, "refused")]
    assert later["records"][3]["problems"][0]["rule"] == "out_of_area"


@pytest.mark.parametrize(("who", "status"), [("lyon", 200), ("admin", 200), ("villeurbanne", 404)])
def test_a_receipt_is_read_by_its_sender_or_an_admin_only(api: tuple[Api, TestClient], who: str, status: int) -> None:
    a, client = api
    doc = push(a, client, {"gid": 1, "geometry": POINT})
    assert client.get(doc["receipt_url"], headers=a.auth(getattr(a, who))).status_code == status
    assert client.get("/v1/receipts/nope", headers=a.auth(a.admin)).status_code == 404
