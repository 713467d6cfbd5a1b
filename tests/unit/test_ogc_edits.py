"""OGC API Part 4 edits, the pure decisions and the use case with fakes of its two ports (the push API and the
published feature): RFC 7396 merge patch (the RFC's own examples), strong If-Match (RFC 9110), the record
sent for each operation, and the answer for each outcome. The real path is tests/integration/test_ogc_api_edits.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.contract.api_tokens import Principal
from services.contract.datasets.catalogue import DatasetCatalogue
from services.publish.domain import ogc_edits
from services.publish.domain.feature_documents import StoredFeature
from services.publish.domain.ogc_edits import BadEdit
from services.publish.service_layer.edit_features import EditContext, EditRequest, edit_feature
from services.publish.service_layer.ports import PushAnswer, PushApiUnavailable

CATALOGUE = DatasetCatalogue.load()
TOILETS = CATALOGUE.get("public_toilets")
SUBSIDIES = CATALOGUE.get("subsidies")
LYON, VILLEURBANNE = "69123", "69266"


# RFC 7396 appendix A, every example
@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_is_rfc_7396(target: Any, patch: Any, result: Any) -> None:
    assert ogc_edits.merge_patch(target, patch) == result


def test_if_match_is_the_strong_comparison() -> None:
    tag = ogc_edits.feature_etag('{"type":"Point","coordinates":[4.8,45.7]}', '{"gid":1}')
    assert tag.startswith('"') and tag.endswith('"')
    assert ogc_edits.if_match_holds(None, tag) and ogc_edits.if_match_holds(None, None)
    assert ogc_edits.if_match_holds(tag, tag) and ogc_edits.if_match_holds(f'"x", {tag}', tag)
    assert not ogc_edits.if_match_holds(f"W/{tag}", tag)  # a weak tag never matches strongly
    assert not ogc_edits.if_match_holds('"stale"', tag)
    assert ogc_edits.if_match_holds("*", tag) and not ogc_edits.if_match_holds("*", None)
    assert not ogc_edits.if_match_holds(tag, None)
    assert tag != ogc_edits.feature_etag('{"type":"Point","coordinates":[4.8,45.7]}', '{"gid":2}')


def test_the_record_sent_drops_the_services_members_and_carries_the_path_id_and_commune() -> None:
    assert TOILETS is not None
    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [4.8, 45.7]},
               "properties": {"adresse": "1 rue X", "odc:missing": ["x"], "odc:same_place_as": []}}  # fmt: skip
    record = ogc_edits.upsert_record(feature, TOILETS, LYON, "123")
    assert record["commune"] == LYON and record["id"] == "123"
    assert record["properties"] == {"adresse": "1 rue X", TOILETS.identity_field: 123}  # gid is an integer field
    with pytest.raises(BadEdit) as bad:
        ogc_edits.upsert_record({**feature, "properties": {TOILETS.identity_field: 999}}, TOILETS, LYON, "123")
    assert bad.value.status == 400 and "does not change" in str(bad.value)


def test_a_created_features_id_is_the_bodys_or_a_fresh_one_of_the_fields_type() -> None:
    assert TOILETS is not None and SUBSIDIES is not None
    fresh = "8c6b0c0e-7a0f-4b1e-9d6a-1d2a3b4c5d6e"
    assert ogc_edits.new_feature_id(TOILETS, {"properties": {"gid": 42}}, fresh) == "42"
    made = ogc_edits.new_feature_id(TOILETS, {"properties": {}}, fresh)
    assert made is not None and made.isdigit() and len(made) <= 12  # gid is an integer
    assert ogc_edits.new_feature_id(SUBSIDIES, {"properties": {}}, fresh) is None  # composite: the push API derives it


def test_a_composite_identity_cannot_change_by_replace() -> None:
    assert SUBSIDIES is not None and len(SUBSIDIES.identity_fields) > 1
    current = {name: f"v{i}" for i, name in enumerate(SUBSIDIES.identity_fields)}
    ogc_edits.identity_kept(SUBSIDIES, current, dict(current))
    with pytest.raises(BadEdit):
        ogc_edits.identity_kept(SUBSIDIES, current, {**current, SUBSIDIES.identity_fields[0]: "other"})


def test_the_answer_follows_the_streams_decision() -> None:
    assert ogc_edits.answer_of_outcome("create", "conforming", "/v1/receipts/r").status == 201
    assert ogc_edits.answer_of_outcome("replace", "incomplete", "/v1/receipts/r").status == 200
    assert ogc_edits.answer_of_outcome("delete", "conforming", "/v1/receipts/r").status == 204
    pending = ogc_edits.answer_of_outcome("update", None, "/v1/receipts/r")
    assert pending.status == 202 and pending.follow == "/v1/receipts/r"
    refused = ogc_edits.answer_of_outcome("create", "refused", "/r", [{"rule": "pattern", "message": "bad gid"}])
    assert refused.status == 422 and "bad gid" in (refused.description or "")


# ----------------------------------------------------------------------------- the use case, with fakes
@dataclass
class FakePushApi:
    levels: list[str] = field(default_factory=lambda: ["pending", "conforming"])
    sent: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False

    async def push(self, token: str, dataset: str, record: dict[str, Any], idempotency_key: str) -> PushAnswer:
        if self.down:
            raise PushApiUnavailable("ConnectError")
        self.sent.append(record)
        commune = record.get("commune") or LYON
        fid = str(record.get("id"))
        accepted = [{"index": 0, "event_id": "e1", "feature_id": fid, "commune": commune, "operation": "upsert"}]
        return PushAnswer(202, {"accepted": accepted, "refused": [], "receipt_url": "/v1/receipts/r1"})

    async def receipt(self, token: str, receipt_path: str) -> PushAnswer:
        level = self.levels.pop(0) if len(self.levels) > 1 else self.levels[0]
        return PushAnswer(200, {"records": [{"index": 0, "level": level, "problems": []}]})


@dataclass
class FakeFeatures:
    stored: dict[tuple[str, str], StoredFeature] = field(default_factory=dict)

    async def item(self, dataset: str, commune: str, feature_id: str) -> StoredFeature | None:
        return self.stored.get((commune, feature_id))


def ctx(api: FakePushApi, features: FakeFeatures, wait: float = 5.0) -> EditContext:
    clock = {"t": 0.0}

    async def sleep(s: float) -> None:
        clock["t"] += s

    return EditContext(api, features, sleep, lambda: clock["t"], lambda: "8c6b0c0e-7a0f-4b1e-9d6a-1d2a3b4c5d6e", wait)


LYON_TOKEN = Principal("t1", LYON)
LYON_TOILET = StoredFeature(LYON, "7", '{"type":"Point","coordinates":[4.84,45.76]}', '{"gid":7,"adresse":"A"}')


def run(req: EditRequest, api: FakePushApi, features: FakeFeatures, wait: float = 5.0) -> Any:
    return asyncio.run(edit_feature(req, ctx(api, features, wait)))


def test_a_patch_is_merged_into_the_current_feature_and_sent_whole() -> None:
    assert TOILETS is not None
    api, features = FakePushApi(), FakeFeatures({(LYON, "7"): LYON_TOILET})
    tag = ogc_edits.feature_etag(LYON_TOILET.geometry_geojson, LYON_TOILET.attributes_json)
    req = EditRequest("update", TOILETS, LYON_TOKEN, "tok", LYON, "7", {"properties": {"adresse": "B"}}, tag)
    result = run(req, api, features)
    assert result.answer.status == 200 and (result.commune, result.feature_id) == (LYON, "7")
    (sent,) = api.sent
    assert sent["properties"] == {"gid": 7, "adresse": "B"} and sent["geometry"]["coordinates"] == [4.84, 45.76]


def test_a_stale_etag_is_412_and_nothing_is_sent() -> None:
    assert TOILETS is not None
    api, features = FakePushApi(), FakeFeatures({(LYON, "7"): LYON_TOILET})
    req = EditRequest("update", TOILETS, LYON_TOKEN, "tok", LYON, "7", {"properties": {"adresse": "B"}}, '"old"')
    assert run(req, api, features).answer.status == 412 and api.sent == []


def test_another_communes_feature_is_403_and_nothing_is_sent() -> None:
    assert TOILETS is not None
    api, features = FakePushApi(), FakeFeatures({(LYON, "7"): LYON_TOILET})
    req = EditRequest("delete", TOILETS, Principal("t2", VILLEURBANNE), "tok", LYON, "7")
    assert run(req, api, features).answer.status == 403 and api.sent == []


def test_a_create_answers_201_once_accepted_and_202_when_the_wait_ends_first() -> None:
    assert TOILETS is not None
    body = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [4.8, 45.7]}, "properties": {"gid": 8}}
    req = EditRequest("create", TOILETS, LYON_TOKEN, "tok", body=body)
    done = run(req, FakePushApi(), FakeFeatures())
    assert done.answer.status == 201 and (done.commune, done.feature_id) == (LYON, "8")
    slow = run(req, FakePushApi(levels=["pending"]), FakeFeatures(), wait=1.0)
    assert slow.answer.status == 202 and slow.answer.follow == "/v1/receipts/r1"
    exists = run(req, FakePushApi(), FakeFeatures({(LYON, "8"): LYON_TOILET}))
    assert exists.answer.status == 409


def test_the_push_api_down_is_503_with_retry_after() -> None:
    assert TOILETS is not None
    body = {"type": "Feature", "geometry": None, "properties": {"gid": 9}}
    result = run(EditRequest("create", TOILETS, LYON_TOKEN, "tok", body=body), FakePushApi(down=True), FakeFeatures())
    assert result.answer.status == 503 and result.retry_after


def test_a_body_that_is_not_a_feature_is_400() -> None:
    assert TOILETS is not None
    for body in ([], {"type": "FeatureCollection"}, {"type": "Feature", "properties": "x"}):
        result = run(EditRequest("create", TOILETS, LYON_TOKEN, "tok", body=body), FakePushApi(), FakeFeatures())
        assert result.answer.status == 400, body
    with pytest.raises(BadEdit) as bad:
        ogc_edits.parse_json_body(b"{}", "text/plain", ogc_edits.FEATURE_TYPES)
    assert bad.value.status == 415
    with pytest.raises(BadEdit):
        ogc_edits.parse_json_body(b"{not json", "application/geo+json", ogc_edits.FEATURE_TYPES)
