"""The AsyncAPI document (issue #15.6) matches the code: the committed docs/asyncapi.json is the served one
for the default settings; its topics are the services' topic settings; its Kafka payloads are the committed
Avro schemas the codecs write (latest version of each); its Kafka and webhook headers are the ones the code
sends; the structured CloudEvent validates against its payload schema; the OGC landing page links it with
rel=hub. (The official AsyncAPI parser validates it: tests/integration/test_asyncapi_parser.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.contract.avro_catalogue import SCHEMA_DIR, SchemaCatalogue
from services.normalise.settings import NormaliseSettings
from services.publish.domain import ogc_features
from services.publish.domain.asyncapi import AVRO_FORMAT, REQUIRED_WEBHOOK_HEADERS, WEBHOOK_HEADERS
from services.publish.domain.notifications import encode_event, structured_event, version_message
from services.publish.domain.webhooks import RetryPolicy
from services.publish.entrypoints import asyncapi_routes
from services.publish.service_layer.webhooks import deliver_due
from services.publish.settings import PublishSettings
from tests.unit.test_publish_documents import small_draft
from tests.unit.test_webhooks import Clock, FakeStore, Receiver, Resolver, world_with

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "docs" / "asyncapi.json"
REGENERATE = (
    "python -c 'import json; from services.publish.entrypoints.asyncapi_routes import document; "
    'print(json.dumps(document("http://127.0.0.1:6067"), ensure_ascii=False, indent=2))\' > docs/asyncapi.json'
)
DEFAULT_BASE = (
    f"http://{PublishSettings.model_fields['web_host'].default}:{PublishSettings.model_fields['web_port'].default}"
)


def committed() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))
    return doc


def test_the_committed_document_is_the_one_served_for_the_default_settings() -> None:
    assert committed() == asyncapi_routes.document(DEFAULT_BASE), f"docs/asyncapi.json is stale: {REGENERATE}"
    client = TestClient(FastAPI(routes=asyncapi_routes.router(DEFAULT_BASE).routes))
    assert client.get("/asyncapi.json").json() == committed()


def test_the_topics_are_the_services_topic_settings() -> None:
    channels = committed()["channels"]
    normalise, publish = NormaliseSettings.model_fields, PublishSettings.model_fields
    assert channels["changeEvents"]["address"] == normalise["topic_change_events"].default
    assert channels["featureChanges"]["address"] == normalise["topic_feature_changes"].default
    assert channels["featureChanges"]["address"] == publish["topic_feature_changes"].default
    assert channels["rejected"]["address"] == normalise["topic_rejected"].default
    assert channels["datasetVersions"]["address"] == publish["topic_notifications"].default


def test_each_topic_carries_the_latest_committed_avro_schema_the_codecs_write() -> None:
    doc, catalogue = committed(), SchemaCatalogue()
    for channel in ("changeEvents", "featureChanges", "rejected", "datasetVersions"):
        ref = doc["channels"][channel]["messages"][f"{channel}Message"]
        message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
        payload = message["payload"]
        assert payload["schemaFormat"] == AVRO_FORMAT
        name = {"changeEvents": "change_event", "featureChanges": "feature_change", "rejected": "rejection"}.get(
            channel, "dataset_version"
        )
        latest = catalogue.latest(name)
        assert payload["schema"] == json.loads(latest.path.read_text(encoding="utf-8")), channel
        fastavro.parse_schema(payload["schema"])  # a valid Avro schema


def test_the_feature_changes_topic_lists_the_batch_form_too() -> None:
    """odc.feature-changes carries FeatureChangeBatch messages (issue #16.3) and older single FeatureChange
    ones: the channel and its operation list both, each with its committed schema."""
    doc, catalogue = committed(), SchemaCatalogue()
    channel = doc["channels"]["featureChanges"]
    assert set(channel["messages"]) == {"featureChangesMessage", "featureChangeBatchMessage"}
    (operation,) = [op for op in doc["operations"].values() if op["channel"]["$ref"] == "#/channels/featureChanges"]
    assert {m["$ref"].rsplit("/", 1)[1] for m in operation["messages"]} == set(channel["messages"])
    batch = doc["components"]["messages"]["featureChangeBatchMessage"]
    latest = catalogue.latest("feature_change_batch")
    assert batch["payload"]["schema"] == json.loads(latest.path.read_text(encoding="utf-8"))
    assert batch["name"] == "FeatureChangeBatch"


def test_the_avro_schemas_are_served_where_dataschema_points() -> None:
    client = TestClient(FastAPI(routes=asyncapi_routes.router(DEFAULT_BASE).routes))
    attrs, _ = version_message(small_draft(), "urn:test", base_url=DEFAULT_BASE, max_inline_changes=3)
    served = client.get(attrs.dataschema.removeprefix(DEFAULT_BASE))
    assert served.status_code == 200
    assert served.json() == json.loads((SCHEMA_DIR / "dataset_version.v3.avsc").read_text(encoding="utf-8"))
    assert client.get("/schemas/avro/nope.avsc").status_code == 404
    assert client.get("/schemas/avro/..%2Fpyproject.toml").status_code == 404


def test_the_kafka_headers_are_the_ones_the_publisher_sends() -> None:
    attrs, _ = version_message(small_draft(), "urn:test", base_url=DEFAULT_BASE, max_inline_changes=3)
    message = committed()["components"]["messages"]["datasetVersionsMessage"]
    assert set(message["headers"]["properties"]) == {k for k, _ in attrs.kafka_headers()}
    assert set(message["headers"]["required"]) == {k for k, _ in attrs.kafka_headers()}


async def test_the_webhook_headers_are_the_ones_a_delivery_carries() -> None:
    w, receiver, clock = world_with(1), Receiver([]), Clock()
    await deliver_due(
        store_factory=lambda: FakeStore(w),
        sender=receiver,
        resolver=Resolver(["93.184.215.14"]),
        clock=clock,
        policy=RetryPolicy(),
        jitter=lambda: 0.5,
        allow_private=False,
        monotonic=lambda: 0.0,
    )
    ((_, _, sent),) = receiver.received
    documented = committed()["components"]["messages"]["versionPublishedWebhook"]["headers"]
    assert set(documented["properties"]) == set(WEBHOOK_HEADERS)
    assert set(sent) | {"X-Odc-Signature"} == set(WEBHOOK_HEADERS)  # the legacy header: old subscriptions only
    assert set(documented["required"]) == set(REQUIRED_WEBHOOK_HEADERS) <= set(sent)


def test_the_webhook_and_sse_payload_validates_against_the_documented_schema() -> None:
    schema = committed()["components"]["messages"]["versionPublished"]["payload"]
    for inline in (0, 10):
        event = json.loads(
            encode_event(structured_event(small_draft(), "urn:t", base_url=DEFAULT_BASE, max_inline_changes=inline))
        )
        jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(event)
    del event["sequence"]
    assert not jsonschema.Draft7Validator(schema).is_valid(event)


def test_the_ogc_landing_page_links_the_document_as_hub() -> None:
    page = ogc_features.landing_page("https://data.example.org/ogc", "https://data.example.org/openapi.json")
    hubs = [lk for lk in page["links"] if lk["rel"] == "hub"]
    assert [lk["href"] for lk in hubs] == ["https://data.example.org/asyncapi.json"]


def test_the_input_topic_lists_the_bulk_form_too() -> None:
    """odc.change-events carries single ChangeEvent messages and ChangeEventBatch (bulk) ones (issue #16.3):
    the channel and its operation list both, each with its committed schema."""
    doc, catalogue = committed(), SchemaCatalogue()
    channel = doc["channels"]["changeEvents"]
    assert set(channel["messages"]) == {"changeEventsMessage", "changeEventBatchMessage"}
    (operation,) = [op for op in doc["operations"].values() if op["channel"]["$ref"] == "#/channels/changeEvents"]
    assert {m["$ref"].rsplit("/", 1)[1] for m in operation["messages"]} == set(channel["messages"])
    bulk = doc["components"]["messages"]["changeEventBatchMessage"]
    latest = catalogue.latest("change_event_batch")
    assert bulk["payload"]["schema"] == json.loads(latest.path.read_text(encoding="utf-8"))
    assert bulk["name"] == "ChangeEventBatch"
