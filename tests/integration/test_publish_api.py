"""Issue #4 on the real stack: versions, the HTTP API, OGC API – Features through a standard client, the
change feed, webhooks to a real HTTP receiver that is down for a while, server-sent events, CloudEvents on
Kafka. Runs after test_pipeline_end_to_end.py on the same pipeline (public_toilets already has versions);
every check is relative to the state the module starts from."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from owslib.ogcapi.features import Features
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from deploy.local.ports import free_port
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import Operation
from services.infrastructure.api_tokens import PostgresTokenStore
from services.infrastructure.database import make_engine
from services.publish.domain.webhooks import standard_secret
from tests.integration.pipeline_harness import TOPICS, Pipeline, toilet_event, wait_for

pytestmark = pytest.mark.integration
DATASET = "public_toilets"
REPO = Path(__file__).resolve().parents[2]
TEST_ENV = {
    "ODC_PUBLISH_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",  # the test receivers listen on 127.0.0.1
    "ODC_PUBLISH_WEBHOOK_BACKOFF_INITIAL_SECONDS": "0.2",
    "ODC_PUBLISH_WEBHOOK_BACKOFF_MAX_SECONDS": "1.0",
    "ODC_PUBLISH_WEBHOOK_MAX_ATTEMPTS": "30",  # >= 14 s of retries: longer than the receiver is down
    "ODC_PUBLISH_NOTIFY_MAX_INLINE_CHANGES": "20",
    "ODC_PUBLISH_SSE_KEEPALIVE_SECONDS": "2",
}


@pytest.fixture(scope="module")
def api(pipeline: Pipeline) -> Iterator[str]:
    """The session's publish service, restarted with test settings (webhooks to loopback, fast retries)."""
    svc = pipeline.services["publish"]
    svc.stop()
    svc.env.update(TEST_ENV)
    svc.start()
    svc.wait_ready(timeout=120)
    yield svc.base_url


@pytest.fixture(scope="module")
def operator(pipeline: Pipeline) -> dict[str, str]:
    """Authorization header of an operator (admin) token: the subscription routes need one."""
    return {"Authorization": f"Bearer {pipeline.operator_token()}"}


def get(url: str, **kw: Any) -> httpx.Response:
    return httpx.get(url, timeout=30, **kw)


def new_ids(n: int) -> list[str]:
    base = 950_000 + uuid.uuid4().int % 40_000
    return [str(base + i) for i in range(n)]


def publish_round(p: Pipeline, events: list[Any]) -> int:
    """Send events, wait until the publisher has recorded every change they caused and cut the version;
    return the latest version."""
    before = p.metric("normalise", "odc_events_received_total")
    p.produce_events(events)
    p.settle(DATASET, before, len(events))
    return p.latest_version(DATASET)


def some_versions(p: Pipeline) -> tuple[list[str], int, int]:
    """Four versions touching the same features: add 3, update 2, remove 1, re-add it and update another."""
    a, b, c = new_ids(3)
    first = p.latest_version(DATASET) + 1
    publish_round(p, [toilet_event(f, seq=1, adresse=f"v1 {f}") for f in (a, b, c)])
    publish_round(p, [toilet_event(a, seq=2, adresse="v2 a"), toilet_event(b, seq=2, adresse="v2 b", lon=4.9)])
    publish_round(p, [toilet_event(c, seq=2, op=Operation.DELETE)])
    last = publish_round(p, [toilet_event(c, seq=3, adresse="back"), toilet_event(a, seq=3, adresse="v3 a")])
    return [a, b, c], first, last


@pytest.fixture(scope="module")
def history(api: str, pipeline: Pipeline) -> tuple[list[str], int, int]:
    return some_versions(pipeline)


def features_by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert doc["type"] == "FeatureCollection"
    out = {f["id"]: f for f in doc["features"]}
    assert len(out) == len(doc["features"]), "duplicate feature ids"
    return out


# -- versions and snapshots ----------------------------------------------------------------------------


def test_snapshot_at_every_version_equals_version_1_plus_the_diffs(api: str, history: Any) -> None:
    _, _, last = history
    url = f"{api}/datasets/{DATASET}"
    state = features_by_id(get(f"{url}/versions/1/features.geojson").json())
    for n in range(1, last + 1):
        if n > 1:
            diff = get(f"{url}/versions/{n}/diff").json()
            assert diff["version"] == n and len(diff["changes"]) == diff["added"] + diff["updated"] + diff["removed"]
            for ch in diff["changes"]:
                if ch["kind"] == "removed":
                    assert ch["after"] is None and ch["before"]["id"] == ch["id"]
                    del state[ch["id"]]
                else:
                    assert ch["after"]["id"] == ch["id"]
                    state[ch["id"]] = ch["after"]
        snapshot = get(f"{url}/versions/{n}/features.geojson").json()
        meta = get(f"{url}/versions/{n}").json()
        assert features_by_id(snapshot) == state, f"version {n} differs from version 1 + diffs 2..{n}"
        assert len(state) == meta["feature_count"] == snapshot["numberMatched"]


def test_versions_carry_the_row_level_diff_with_before_and_after(api: str, history: Any) -> None:
    (a, b, c), first, last = history
    url = f"{api}/datasets/{DATASET}/versions"
    kinds = {n: {ch["id"]: ch for ch in get(f"{url}/{n}/diff").json()["changes"]} for n in range(first, last + 1)}
    ida, idb, idc = (f"69266:{f}" for f in (a, b, c))
    assert {k: v["kind"] for k, v in kinds[first].items()} == {ida: "added", idb: "added", idc: "added"}
    upd = kinds[first + 1][idb]
    assert upd["kind"] == "updated"
    assert upd["before"]["properties"]["adresse"] == f"v1 {b}" and upd["after"]["properties"]["adresse"] == "v2 b"
    assert upd["before"]["geometry"]["coordinates"] == [4.88, 45.77]
    assert upd["after"]["geometry"]["coordinates"] == [4.9, 45.77]
    removed = kinds[first + 2][idc]
    assert removed["kind"] == "removed" and removed["before"]["properties"]["adresse"] == f"v1 {c}"
    assert kinds[last][idc]["kind"] == "added"
    listing = get(f"{url}?after={first - 1}&limit=2").json()
    assert [v["version"] for v in listing["versions"]] == [first, first + 1]
    assert listing["next"] and [v["version"] for v in get(listing["next"]).json()["versions"]] == [first + 2, last]


def test_version_resources_have_strong_etags_and_are_immutable(api: str, history: Any) -> None:
    _, first, _ = history
    for suffix in ("", "/diff", "/features.geojson", "/features.csv"):
        url = f"{api}/datasets/{DATASET}/versions/{first}{suffix}"
        r = get(url)
        assert r.status_code == 200
        tag = r.headers["etag"]
        assert tag.startswith('"') and not tag.startswith("W/")
        assert "immutable" in r.headers["cache-control"]
        again = get(url, headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
    assert get(f"{api}/datasets/{DATASET}/versions/999999").status_code == 404
    assert get(f"{api}/datasets/no_such_dataset/versions/1").status_code == 404


def test_csv_is_in_the_schema_column_layout(api: str, history: Any) -> None:
    _, _, last = history
    definition = DatasetCatalogue.load().get(DATASET)
    assert definition is not None
    r = get(f"{api}/datasets/{DATASET}/features.csv", follow_redirects=True)
    assert r.status_code == 200 and r.url.path.endswith(f"/versions/{last}/features.csv")
    lines = r.text.splitlines()
    import csv

    rows = list(csv.reader(lines))
    expected = list(definition.field_names) + (["WKT"] if definition.national_schema is None else [])
    assert rows[0] == expected
    assert len(rows) - 1 == get(f"{api}/datasets/{DATASET}/versions/{last}").json()["feature_count"]
    geometry = rows[0].index("WKT") if "WKT" in rows[0] else None
    if geometry is not None:
        assert all(row[geometry].startswith("POINT") for row in rows[1:])


def test_feature_history_shows_every_published_change(api: str, history: Any) -> None:
    (_, _, c), first, last = history
    doc = get(f"{api}/datasets/{DATASET}/features/69266:{c}/history").json()
    assert [(h["version"], h["kind"]) for h in doc["history"]] == [
        (first, "added"),
        (first + 2, "removed"),
        (last, "added"),
    ]
    assert doc["history"][1]["before"]["properties"]["adresse"] == f"v1 {c}"
    assert get(f"{api}/datasets/{DATASET}/features/69266:nope-{c}/history").status_code == 404


def test_changes_since_returns_each_change_exactly_once_across_pages(api: str, history: Any) -> None:
    _, first, last = history
    base = f"{api}/datasets/{DATASET}"
    expected = []
    for n in range(1, last + 1):
        expected += [(n, ch["id"], ch["kind"]) for ch in get(f"{base}/versions/{n}/diff").json()["changes"]]
    for since, limit in ((0, 97), (first - 1, 2), (first, 1)):
        seen: list[tuple[int, str, str]] = []
        page = get(f"{base}/changes?since={since}&limit={limit}").json()
        pages = 1
        while page["next"]:
            assert page["next_since"] is None and len(page["changes"]) == limit
            seen += [(c["version"], c["id"], c["kind"]) for c in page["changes"]]
            page = get(page["next"]).json()
            pages += 1
        seen += [(c["version"], c["id"], c["kind"]) for c in page["changes"]]
        want = [e for e in expected if e[0] > since]
        assert seen == want, f"since={since} limit={limit}"
        assert len(set(seen)) == len(seen)
        assert page["next_since"] == last
        assert pages >= len(want) // limit
    assert get(f"{base}/changes?since={last}").json() == {
        "dataset": DATASET,
        "since": last,
        "changes": [],
        "next": None,
        "next_since": last,
    }
    assert get(f"{base}/changes?cursor=not-a-cursor").status_code == 400


# -- OGC API – Features through a standard client ------------------------------------------------------


def test_ogc_api_features_client_lists_collections_and_pages_through_items(api: str, history: Any) -> None:
    (_, b, _), _, last = history
    ogc = Features(f"{api}/ogc")
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in ogc.conformance()["conformsTo"]
    assert set(ogc.feature_collections()) >= {DATASET, "parks_gardens"}
    expected = get(f"{api}/datasets/{DATASET}/versions/{last}").json()["feature_count"]
    collection = ogc.collection(DATASET)
    assert collection["id"] == DATASET and len(collection["extent"]["spatial"]["bbox"][0]) == 4

    ids: list[str] = []
    offset = 0
    while True:
        page = ogc.collection_items(DATASET, limit=100, offset=offset)
        assert page["numberMatched"] == expected
        ids += [f["id"] for f in page["features"]]
        if not any(lk["rel"] == "next" for lk in page["links"]):
            break
        offset += 100
    assert len(ids) == expected == len(set(ids))

    # the next links alone walk the same pages
    linked: list[str] = []
    url: str | None = f"{api}/ogc/collections/{DATASET}/items?limit=150"
    while url:
        page = get(url).json()
        linked += [f["id"] for f in page["features"]]
        url = next((lk["href"] for lk in page["links"] if lk["rel"] == "next"), None)
    assert linked == ids

    box = ogc.collection_items(DATASET, bbox=[4.895, 45.76, 4.905, 45.78], limit=1000)
    assert 0 < box["numberReturned"] < expected  # b was moved to 4.9; a and c are at 4.88
    assert f"69266.{b}" in {f["id"] for f in box["features"]}  # OGC ids are URL-safe: <commune>.<feature_id>
    for f in box["features"]:
        lon, lat = f["geometry"]["coordinates"]
        assert 4.895 <= lon <= 4.905 and 45.76 <= lat <= 45.78
    one = ogc.collection_item(DATASET, ids[0])
    assert one["id"] == ids[0] and one["type"] == "Feature"
    assert get(f"{api}/ogc/collections/{DATASET}/items?limit=0").status_code == 400
    assert get(f"{api}/ogc/collections/{DATASET}/items?bbox=1,2,3").status_code == 400


# -- notifications -------------------------------------------------------------------------------------


def test_kafka_cloudevents_arrive_in_order_with_links_and_small_diffs_inline(
    api: str, history: Any, pipeline: Pipeline
) -> None:
    (_, _, c), first, last = history
    notes = wait_for(
        "every version on Kafka",
        lambda: (n := pipeline.version_notifications(DATASET)) and n[-1][1].version >= last and n,
    )
    assert [d.version for _, d in notes] == list(range(1, len(notes) + 1))
    assert len({h["ce_id"] for h, _ in notes}) == len(notes)
    headers, removal = notes[first + 2 - 1]
    assert headers["ce_id"] == f"{DATASET}:v{first + 2}"
    assert headers["ce_dataschema"].endswith("dataset_version.v3.avsc")
    assert removal.changes_included and removal.removed == 1
    (change,) = removal.changes
    assert change.kind == "removed" and change.after is None and change.before is not None
    assert json.loads(change.before.attributes_json)["adresse"] == f"v1 {c}"
    assert {lk.rel for lk in removal.links} >= {"self", "diff", "geojson", "csv", "changes"}
    assert get(next(lk.href for lk in removal.links if lk.rel == "diff")).status_code == 200


def test_kafka_messages_parse_with_the_cloudevents_sdk_with_partitionkey_sequence_and_dataschema(
    api: str, history: Any, pipeline: Pipeline
) -> None:
    """Issue #15.5: the binary-mode Kafka messages read back with the official SDK carry the extensions; the
    dataschema is an absolute URI that serves the Avro schema."""
    records = [r for r in pipeline.read_topic(TOPICS["versions"]) if r.key == DATASET.encode()]
    assert records and any(r.value for r in records)
    for r in records[-3:]:
        headers = {k: v for k, v in r.headers}
        assert headers["ce_partitionkey"] == DATASET.encode()  # the header itself, not only the key
        event = from_binary(KafkaMessage(headers, r.key, r.value), JSONFormat())
        version = int(event.get_id().rsplit(":v", 1)[1])
        assert event.get_extension("partitionkey") == DATASET
        assert event.get_extension("sequence") == f"{version:020d}"
        assert event.get_dataschema() == f"{api}/schemas/avro/dataset_version.v3.avsc"
    served = get(dict(records[-1].headers)["ce_dataschema"].decode())
    assert served.status_code == 200
    assert served.json() == json.loads((REPO / "schemas/avro/dataset_version.v3.avsc").read_text(encoding="utf-8"))
    sequences = [dict(r.headers)["ce_sequence"].decode() for r in records]
    assert sequences == sorted(sequences)  # text order is version order


def test_the_asyncapi_document_is_served_and_linked_from_the_ogc_landing_page(api: str) -> None:
    (hub,) = [lk for lk in get(f"{api}/ogc").json()["links"] if lk["rel"] == "hub"]
    doc = get(hub["href"]).json()
    assert doc["asyncapi"] == "3.0.0" and doc["channels"]["datasetVersions"]["address"] == TOPICS["versions"]
    assert doc["servers"]["publishApi"]["host"] == api.split("://", 1)[1]


def test_a_big_version_carries_links_but_no_inline_features(api: str, history: Any, pipeline: Pipeline) -> None:
    ids = new_ids(25)  # > ODC_PUBLISH_NOTIFY_MAX_INLINE_CHANGES
    v = publish_round(pipeline, [toilet_event(f, seq=1) for f in ids])
    _, data = wait_for(
        "the big version on Kafka",
        lambda: next((n for n in pipeline.version_notifications(DATASET) if n[1].version == v), None),
    )
    assert data.added == 25 and not data.changes_included and data.changes == ()
    assert {lk.rel for lk in data.links} >= {"diff"}


def test_sse_stream_resumes_from_last_event_id_and_follows_new_versions(
    api: str, history: Any, pipeline: Pipeline
) -> None:
    latest = pipeline.latest_version(DATASET)
    got: list[tuple[str, dict[str, Any]]] = []
    fid = new_ids(1)[0]
    with httpx.stream(
        "GET", f"{api}/datasets/{DATASET}/events", headers={"Last-Event-ID": str(latest - 2)}, timeout=60
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        sent_new = False
        for line in r.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(":")
                event[key] = value.strip()
            elif line == "" and "data" in event:
                got.append((event["id"], json.loads(event["data"])))
                event = {}
                if len(got) == 2 and not sent_new:
                    sent_new = True
                    publish_round(pipeline, [toilet_event(fid, seq=1)])
                if len(got) == 3:
                    break
    assert [int(i) for i, _ in got] == [latest - 1, latest, latest + 1]
    for i, ce in got:
        assert ce["specversion"] == "1.0" and ce["id"] == f"{DATASET}:v{i}" and ce["data"]["version"] == int(i)
    parsed = JSONFormat().read(None, json.dumps(got[-1][1]).encode())  # the CloudEvents SDK reads the SSE data
    assert parsed.get_extension("partitionkey") == DATASET and parsed.get_extension("sequence") == f"{latest + 1:020d}"
    assert parsed.get_dataschema() == f"{api}/schemas/avro/dataset_version.v3.avsc"
    (added,) = got[-1][1]["data"]["changes"]
    assert added["kind"] == "added" and added["id"] == f"69266:{fid}" and added["before"] is None


# -- webhooks ------------------------------------------------------------------------------------------


def subscribe(api: str, url: str, secret: str, operator: dict[str, str]) -> str:
    r = httpx.post(
        f"{api}/subscriptions",
        json={"url": url, "datasets": [DATASET], "secret": secret},
        headers=operator,
        timeout=30,
    )
    assert r.status_code == 201, r.text
    assert r.json()["secret"] == secret
    return str(r.json()["id"])


def test_webhook_receiver_down_for_a_while_gets_every_version_once_back_in_order_signed(
    api: str, history: Any, pipeline: Pipeline, operator: dict[str, str]
) -> None:
    secret = standard_secret(os.urandom(32))
    receiver = HTTPServer(host="127.0.0.1", port=free_port())
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    sub = subscribe(api, receiver.url_for("/hook"), secret, operator)  # the receiver is not listening yet: down
    start = pipeline.latest_version(DATASET)
    ids = new_ids(3)
    for i, fid in enumerate(ids):
        publish_round(pipeline, [toilet_event(fid, seq=1, adresse=f"round {i}")])
    expected = list(range(start + 1, start + 4))
    state = wait_for(
        "failed attempts while the receiver is down",
        lambda: (s := get(f"{api}/subscriptions/{sub}", headers=operator).json())["last_attempt"]["error"] and s,
    )
    assert state["deliveries"]["delivered"] == 0 and state["deliveries"]["pending"] == 3
    receiver.start()
    try:
        wait_for(
            "every delivery to succeed",
            lambda: get(f"{api}/subscriptions/{sub}", headers=operator).json()["deliveries"]["delivered"] == 3,
            timeout=60,
        )
        bodies = []
        for request, response in receiver.log:
            body = request.get_data()
            assert response.status_code == 200
            headers = dict(request.headers)
            Webhook(secret).verify(body, headers)  # Standard Webhooks, the official library
            with pytest.raises(WebhookVerificationError):
                Webhook(standard_secret(os.urandom(32))).verify(body, headers)
            assert "X-Odc-Signature" not in request.headers  # registered after Standard Webhooks: no legacy header
            assert request.headers["webhook-id"] == json.loads(body)["id"]
            assert request.headers["Content-Type"].startswith("application/cloudevents+json")
            bodies.append(json.loads(body))
            event = JSONFormat().read(None, body)  # the CloudEvents SDK reads the webhook body
            assert event.get_extension("partitionkey") == DATASET
            assert event.get_extension("sequence") == f"{json.loads(body)['data']['version']:020d}"
            assert event.get_dataschema() == f"{api}/schemas/avro/dataset_version.v3.avsc"
    finally:
        receiver.stop()
        httpx.delete(f"{api}/subscriptions/{sub}", headers=operator, timeout=30)
    assert [b["data"]["version"] for b in bodies] == expected  # in order, once each
    assert [b["id"] for b in bodies] == [f"{DATASET}:v{v}" for v in expected]
    assert [b["data"]["changes"][0]["after"]["properties"]["adresse"] for b in bodies] == [
        f"round {i}" for i in range(3)
    ]
    final = get(f"{api}/subscriptions/{sub}", headers=operator).json()
    assert final["deliveries"] == {"pending": 0, "delivered": 3, "dead": 0} and not final["active"]
    assert final["last_delivered_event"] == f"{DATASET}:v{start + 3}"
    assert "secret" not in final


def test_rotation_through_the_api_signs_with_both_secrets_and_a_410_disables_the_subscription(
    api: str, history: Any, pipeline: Pipeline, operator: dict[str, str]
) -> None:
    """Issue #15.4 through the publish API on the real stack: rotate-secret, then a delivery verifies with
    both secrets (standardwebhooks); the receiver's 410 Gone disables the subscription (shown in its state,
    counted): nothing is sent or queued for it (a version published meanwhile is not), and after enable the
    delivery the 410 answered arrives."""
    first = standard_secret(os.urandom(32))
    receiver = HTTPServer(host="127.0.0.1", port=free_port())
    receiver.expect_ordered_request("/hook", method="POST").respond_with_data("ok")
    receiver.expect_ordered_request("/hook", method="POST").respond_with_data("gone", status=410)
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    receiver.start()
    try:
        sub = subscribe(api, receiver.url_for("/hook"), first, operator)
        rotated = httpx.post(f"{api}/subscriptions/{sub}/rotate-secret", headers=operator, timeout=30).json()
        second = rotated["secret"]
        assert second.startswith("whsec_") and second != first and rotated["previous_secret_valid_until"]
        refused = httpx.post(f"{api}/subscriptions/{sub}/rotate-secret", timeout=30)
        assert refused.status_code == 401  # operator only
        disabled_before = pipeline.metric("publish", "odc_webhook_attempts_total", outcome="disabled")
        publish_round(pipeline, [toilet_event(new_ids(1)[0], seq=1)])
        wait_for("the first delivery", lambda: len(receiver.log) >= 1, timeout=60)
        request, _ = receiver.log[0]
        body, headers = request.get_data(), dict(request.headers)
        assert len(headers["Webhook-Signature"].split(" ")) == 2
        assert Webhook(first).verify(body, headers) == Webhook(second).verify(body, headers)

        gone_version = publish_round(pipeline, [toilet_event(new_ids(1)[0], seq=1)])
        state = wait_for(
            "the subscription to be disabled by the 410",
            lambda: (s := get(f"{api}/subscriptions/{sub}", headers=operator).json())["disabled"] and s,
            timeout=60,
        )
        assert state["active"] is False and "410" in state["disabled"]["reason"]
        assert state["deliveries"]["pending"] == 1 and state["last_attempt"]["status"] == 410
        assert pipeline.metric("publish", "odc_webhook_attempts_total", outcome="disabled") == disabled_before + 1
        publish_round(pipeline, [toilet_event(new_ids(1)[0], seq=1)])
        time.sleep(1.0)  # the webhook loop polls every 0.25 s: a delivery to a disabled subscription would show
        assert len(receiver.log) == 2
        assert get(f"{api}/subscriptions/{sub}", headers=operator).json()["deliveries"]["pending"] == 1

        assert httpx.post(f"{api}/subscriptions/{sub}/enable", headers=operator, timeout=30).status_code == 200
        wait_for(
            "the kept delivery",
            lambda: get(f"{api}/subscriptions/{sub}", headers=operator).json()["deliveries"]["delivered"] == 2,
            timeout=60,
        )
        request, _ = receiver.log[2]
        assert Webhook(second).verify(request.get_data(), dict(request.headers))["data"]["version"] == gone_version
        assert get(f"{api}/subscriptions/{sub}", headers=operator).json()["disabled"] is None
    finally:
        receiver.stop()
        httpx.delete(f"{api}/subscriptions/{sub}", headers=operator, timeout=30)


def test_a_receiver_that_keeps_failing_is_dead_lettered_visible_and_replayable(
    api: str, history: Any, pipeline: Pipeline, operator: dict[str, str]
) -> None:
    receiver = HTTPServer(host="127.0.0.1", port=free_port())
    receiver.expect_request("/hook", method="POST").respond_with_data("nope", status=500)
    receiver.start()
    try:
        sub = subscribe(api, receiver.url_for("/hook"), standard_secret(os.urandom(24)), operator)
        dead_before = pipeline.metric("publish", "odc_webhook_attempts_total", outcome="dead")
        publish_round(pipeline, [toilet_event(new_ids(1)[0], seq=1)])
        state = wait_for(
            "the delivery to be dead-lettered",
            lambda: (s := get(f"{api}/subscriptions/{sub}", headers=operator).json())["deliveries"]["dead"] == 1 and s,
            timeout=60,
        )
        assert state["last_attempt"]["status"] == 500
        assert len(receiver.log) == int(TEST_ENV["ODC_PUBLISH_WEBHOOK_MAX_ATTEMPTS"])
        (dead,) = get(f"{api}/subscriptions/{sub}/deliveries?state=dead", headers=operator).json()["deliveries"]
        assert dead["attempts"] == int(TEST_ENV["ODC_PUBLISH_WEBHOOK_MAX_ATTEMPTS"]) and dead["last_status"] == 500
        assert pipeline.metric("publish", "odc_webhook_attempts_total", outcome="dead") == dead_before + 1
        assert pipeline.metric("publish", "odc_webhook_deliveries_dead") >= 1

        # the CLI shows it too (the token from ODC_TOKEN); without a token it is refused
        env = {**os.environ, "ODC_PUBLISH_URL": api, "ODC_TOKEN": operator["Authorization"].split()[1]}
        out = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "subscriptions", "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
            check=True,
        )
        mine = next(s for s in json.loads(out.stdout)["subscriptions"] if s["id"] == sub)
        assert mine["deliveries"]["dead"] == 1
        refused = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "subscriptions", "--token", "odc_0123456789ab_" + "A" * 43],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        assert refused.returncode == 2 and "unknown" in refused.stderr

        # replay once the receiver is fixed
        receiver.clear_all_handlers()
        receiver.expect_request("/hook", method="POST").respond_with_data("ok")
        assert httpx.post(f"{api}/subscriptions/{sub}/redeliver", timeout=30).status_code == 401
        assert httpx.post(f"{api}/subscriptions/{sub}/redeliver", headers=operator, timeout=30).json() == {
            "requeued": 1
        }
        wait_for(
            "the replayed delivery",
            lambda: get(f"{api}/subscriptions/{sub}", headers=operator).json()["deliveries"]["delivered"] == 1,
        )
    finally:
        receiver.stop()
        httpx.delete(f"{api}/subscriptions/{sub}", headers=operator, timeout=30)


def test_subscriptions_refuse_unknown_datasets_and_bad_urls(api: str, operator: dict[str, str]) -> None:
    for body in (
        {"url": "http://127.0.0.1:9/x", "datasets": ["nope"]},
        {"url": "ftp://example.org/x"},
        {"url": "http://127.0.0.1:9/x", "secret": "short"},
    ):
        r = httpx.post(f"{api}/subscriptions", json=body, headers=operator, timeout=30)
        assert r.status_code == 422, body


def test_subscription_management_needs_an_operator_token_checked_in_postgresql(
    api: str, pipeline: Pipeline, operator: dict[str, str]
) -> None:
    body = {"url": "http://127.0.0.1:9/x", "datasets": [DATASET]}
    before = pipeline.sql("SELECT count(*) FROM webhook_subscription")[0][0]
    assert httpx.post(f"{api}/subscriptions", json=body, timeout=30).status_code == 401
    assert get(f"{api}/subscriptions").status_code == 401
    # a commune's push token is a valid token, but not an operator's
    commune = {"Authorization": f"Bearer {_commune_token(pipeline)}"}
    r = httpx.post(f"{api}/subscriptions", json=body, headers=commune, timeout=30)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert pipeline.sql("SELECT count(*) FROM webhook_subscription")[0][0] == before
    # a revoked operator token stops working at once
    revoked = pipeline.operator_token("revoked at once")
    pipeline.sql("UPDATE api_token SET revoked_at = now() WHERE token_id = %s RETURNING 1", revoked.split("_")[1])
    assert get(f"{api}/subscriptions", headers={"Authorization": f"Bearer {revoked}"}).status_code == 401
    assert get(f"{api}/subscriptions", headers=operator).status_code == 200
    # reading open data needs no token
    assert get(f"{api}/datasets/{DATASET}/versions").status_code == 200


def _commune_token(p: Pipeline) -> str:
    async def go() -> str:
        engine = make_engine(p.db.dsn, pool_size=1)
        try:
            return (await PostgresTokenStore(engine).issue("69266", "commune, not operator"))[1]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_odc_subscribe_registers_a_webhook(api: str, operator: dict[str, str]) -> None:
    env = {**os.environ, "ODC_PUBLISH_URL": api}
    token = operator["Authorization"].split()[1]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "subscribe",
            "http://127.0.0.1:9/hook",
            "--dataset",
            DATASET,
            "--json",
            "--token",
            token,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    created = json.loads(out.stdout)
    assert created["datasets"] == [DATASET] and created["secret"].startswith("whsec_")
    assert get(f"{api}/subscriptions/{created['id']}", headers=operator).json()["url"] == "http://127.0.0.1:9/hook"
    httpx.delete(f"{api}/subscriptions/{created['id']}", headers=operator, timeout=30)
    without = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "subscribe", "http://127.0.0.1:9/hook"],
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if k != "ODC_TOKEN"},
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert without.returncode == 2 and "operator token" in without.stderr


# -- OpenAPI, metrics (DCAT: test_dcat_and_exports.py) -----------------------------------------------


def test_served_openapi_document_is_the_committed_one(api: str) -> None:
    committed = json.loads((REPO / "docs" / "openapi" / "publish.json").read_text(encoding="utf-8"))
    assert get(f"{api}/openapi.json").json() == committed


def test_health_metrics_and_datasets_list_are_served_by_the_same_port(api: str, history: Any) -> None:
    assert get(f"{api}/healthz").json()["status"] == "ok"
    assert get(f"{api}/readyz").status_code == 200
    text = get(f"{api}/metrics").text
    assert "odc_versions_published_total" in text and "odc_api_requests_total" in text
    datasets = {d["id"]: d for d in get(f"{api}/datasets").json()["datasets"]}
    assert datasets[DATASET]["latest_version"] >= history[2]
