"""The push API's /v1/profiles resource and ``?profile=`` on a push, with fakes of our own ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.ingest.entrypoints.http_app import ApiPorts, build_app
from services.ingest.settings import IngestSettings
from tests.fakes.ingest_ports import FixedStatus, InMemoryIdempotency, InMemoryProfiles, InMemoryTokens, RecordingSink

PROFILE = {
    "dataset": "drinking_fountains",
    "fields": [
        {"column": "Identifiant", "field": "id"},
        {"column": "PMR", "field": "accessible_pmr", "values": {"Oui": True, "Non": False}},
    ],
    "geometry": {"kind": "point_text", "columns": ["Coordonnées"], "crs": "EPSG:4326", "order": "latlon"},
    "commune_column": "Code INSEE",
}
BASE = "/v1/profiles/69266/drinking_fountains/sig-export"


class Api:
    def __init__(self) -> None:
        self.tokens = InMemoryTokens()
        self.sink = RecordingSink()
        self.profiles = InMemoryProfiles()
        ports = ApiPorts(self.tokens, InMemoryIdempotency(), self.sink, FixedStatus(), self.profiles)
        self.app = build_app(IngestSettings(), ports=ports)
        self.villeurbanne = {"Authorization": f"Bearer {self.tokens.issue('69266')}"}
        self.lyon = {"Authorization": f"Bearer {self.tokens.issue('69123')}"}
        self.admin = {"Authorization": f"Bearer {self.tokens.issue(None)}"}


@pytest.fixture
def api() -> Iterator[tuple[Api, TestClient]]:
    a = Api()
    with TestClient(a.app) as client:
        yield a, client


def test_each_save_is_a_new_version_listed_and_shown(api: tuple[Api, TestClient]) -> None:
    a, client = api
    first = client.put(BASE, json=PROFILE, headers=a.villeurbanne)
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1 and first.json()["saved_by"] == "69266"
    edited = {**PROFILE, "note": "PMR checked on site"}
    assert client.put(BASE, json=edited, headers=a.villeurbanne).json()["version"] == 2
    latest = client.get(BASE, headers=a.villeurbanne).json()
    assert (
        latest["version"] == 2 and latest["versions"] == [1, 2] and latest["profile"]["note"] == "PMR checked on site"
    )
    v1 = client.get(BASE + "?version=1", headers=a.villeurbanne).json()
    assert "note" not in v1["profile"]
    listed = client.get("/v1/profiles", headers=a.villeurbanne).json()["profiles"]
    assert [(p["source"], p["version"]) for p in listed] == [("sig-export", 2)]
    assert client.get("/v1/profiles", headers=a.lyon).json()["profiles"] == []  # another commune's are not shown


def test_tokens_reach_their_own_commune_only_and_bad_profiles_are_400(api: tuple[Api, TestClient]) -> None:
    a, client = api
    assert client.put(BASE, json=PROFILE, headers=a.lyon).status_code == 403
    assert client.get(BASE, headers=a.lyon).status_code == 403
    assert client.put(BASE, json=PROFILE).status_code == 401
    assert client.put("/v1/profiles/*/drinking_fountains/all", json=PROFILE, headers=a.admin).status_code == 201
    bad = {**PROFILE, "geometry": {"kind": "xy", "columns": ["only-one"]}}
    r = client.put(BASE, json=bad, headers=a.villeurbanne)
    assert r.status_code == 400 and r.json()["error"] == "invalid_profile"
    assert client.put("/v1/profiles/69266/nope/x", json=PROFILE, headers=a.villeurbanne).status_code == 404
    assert client.get("/v1/profiles/69266/drinking_fountains/unknown", headers=a.villeurbanne).status_code == 404


def test_a_push_in_the_commune_layout_uses_the_saved_profile(api: tuple[Api, TestClient]) -> None:
    a, client = api
    client.put(BASE, json=PROFILE, headers=a.villeurbanne)
    record = {"Identifiant": "BF-9", "PMR": "Non", "Code INSEE": "69266", "Coordonnées": "45.77, 4.88", "Kiosque": "A"}
    r = client.post(
        "/v1/datasets/drinking_fountains/changes?profile=sig-export",
        json={"records": [record]},
        headers=a.villeurbanne,
    )
    assert r.status_code == 202, r.text
    (ev,) = a.sink.events
    assert (ev.feature_id, ev.commune, ev.attributes["accessible_pmr"]) == ("BF-9", "69266", False)
    assert ev.attributes["odc:extra"] == '{"Kiosque": "A"}'
    assert ev.geometry is not None and ev.geometry.value == b"POINT (4.88 45.77)"
    missing = client.post(
        "/v1/datasets/drinking_fountains/changes?profile=nope", json={"records": [record]}, headers=a.villeurbanne
    )
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_profile"
