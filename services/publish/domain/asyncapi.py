"""The AsyncAPI 3.0 document (issue #15.6): the Kafka topics with their Avro schemas, the webhooks (Standard
Webhooks headers) and the server-sent event stream. Pure: built from the names the code uses (topics,
headers, CloudEvent attributes) and the Avro schemas handed in, so the document cannot drift from the code;
``docs/asyncapi.json`` is this document for the default settings (a test compares them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from services.publish.domain.notifications import EVENT_TYPE, SEQUENCE_DIGITS, STRUCTURED_CONTENT_TYPE
from services.publish.domain.webhooks import (
    SIGNATURE_HEADER,
    WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER,
)

AVRO_FORMAT = "application/vnd.apache.avro;version=1.9.0"
ASYNCAPI_PATH = "/asyncapi.json"

# channel id -> (Avro schema file, what flows on it, the operation of odc on it); the topic names are passed in
TOPICS: dict[str, tuple[str, str, str]] = {
    "changeEvents": (
        "change_event.v2.avsc",
        "Change events of the communes (signed), the pipeline's input: one feature added, updated or removed.",
        "receive",
    ),
    "featureChanges": (
        "feature_change.v1.avsc",
        "Validated, normalised and deduplicated feature changes (internal, between normalise and publish).",
        "send",
    ),
    "rejected": (
        "rejection.v2.avsc",
        "Change events refused (undecodable, invalid, unknown dataset...), with the reason and the original bytes.",
        "send",
    ),
    "datasetVersions": (
        "dataset_version.v3.avsc",
        "One CloudEvent (binary content mode) per published dataset version; the key is the dataset.",
        "send",
    ),
}
# channel id -> further messages it carries: (message id, Avro schema file, summary)
EXTRA_MESSAGES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "changeEvents": (
        (
            "changeEventBatchMessage",
            "change_event_batch.v1.avsc",
            "The bulk form: many change events of one dataset and one commune as one message, signed as a whole "
            "(what odc send, the push API and the connectors send since issue #16.3); each event is handled as if "
            "it had come alone. The single ChangeEvent form above stays valid.",
        ),
    ),
    "featureChanges": (
        (
            "featureChangeBatchMessage",
            "feature_change_batch.v1.avsc",
            "The feature changes of one dataset as one message (what normalise sends since issue #16.3); "
            "the single FeatureChange form above stays readable.",
        ),
    ),
}
# Kafka headers of a dataset-version message (CloudEvents Kafka binding, binary mode)
KAFKA_CE_HEADERS = (
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_subject",
    "ce_time",
    "ce_dataschema",
    "ce_partitionkey",
    "ce_sequence",
    "content-type",
)
WEBHOOK_HEADERS = {
    WEBHOOK_ID_HEADER: "Standard Webhooks: the message id, the version's CloudEvent id (dedupe on it)",
    WEBHOOK_TIMESTAMP_HEADER: "Standard Webhooks: unix seconds when signed (refuse it outside your tolerance)",
    WEBHOOK_SIGNATURE_HEADER: "Standard Webhooks: space-separated v1,<base64 HMAC-SHA256 of id.timestamp.body>, "
    "one per secret in force (two during a rotation)",
    "Content-Type": "application/cloudevents+json; charset=utf-8 (CloudEvents structured mode)",
    "X-Odc-Event-Id": "The CloudEvent id again",
    "X-Odc-Delivery-Id": "This delivery (one per subscription and version)",
    "X-Odc-Delivery-Attempt": "1 for the first attempt, then 2, 3... on retries",
    "User-Agent": "odc-webhooks/1",
    SIGNATURE_HEADER: "Legacy, only for subscriptions registered before Standard Webhooks (one release): "
    "t=<unix seconds>,v1=<hex HMAC-SHA256 of t.body>",
}
REQUIRED_WEBHOOK_HEADERS = [WEBHOOK_ID_HEADER, WEBHOOK_TIMESTAMP_HEADER, WEBHOOK_SIGNATURE_HEADER, "Content-Type"]


def _string(description: str) -> dict[str, str]:
    return {"type": "string", "description": description}


def structured_cloudevent_schema() -> dict[str, Any]:
    """JSON Schema of the structured CloudEvent of a version (webhooks and server-sent events)."""
    return {
        "type": "object",
        "required": [
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "datacontenttype",
            "dataschema",
            "partitionkey",
            "sequence",
            "data",
        ],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": _string("<dataset>:v<version>, stable across channels and redeliveries"),
            "source": _string("the publisher (ODC_PUBLISH_EVENT_SOURCE)"),
            "type": {"const": EVENT_TYPE},
            "subject": _string("the dataset"),
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "dataschema": {"type": "string", "format": "uri", "description": "the Avro schema of the record"},
            "partitionkey": _string("CloudEvents partitioning extension: the dataset"),
            "sequence": {
                "type": "string",
                "pattern": f"^[0-9]{{{SEQUENCE_DIGITS}}}$",
                "description": "CloudEvents sequence extension: the version, zero-padded (sorts as text)",
            },
            "data": {
                "type": "object",
                "required": ["dataset", "version", "published_at", "added", "updated", "removed", "feature_count"],
                "properties": {
                    "dataset": {"type": "string"},
                    "version": {"type": "integer", "minimum": 1},
                    "published_at": {"type": "string", "format": "date-time"},
                    "added": {"type": "integer"},
                    "updated": {"type": "integer"},
                    "removed": {"type": "integer"},
                    "feature_count": {"type": "integer"},
                    "content_hash": {"type": "string"},
                    "links": {"type": "object", "additionalProperties": {"type": "string", "format": "uri"}},
                    "changes_included": {"type": "boolean"},
                    "changes": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
    }


def asyncapi_document(
    base_url: str, topics: Mapping[str, str], avro_schemas: Mapping[str, Any], kafka_bootstrap: str
) -> dict[str, Any]:
    """``topics``: channel id (``TOPICS``) -> Kafka topic name; ``avro_schemas``: file name -> parsed schema."""
    base = urlsplit(base_url.rstrip("/"))
    api_server = {
        "host": base.netloc,
        "pathname": base.path or "/",
        "protocol": base.scheme,
        "description": "The publish API: server-sent events, subscriptions, this document, the Avro schemas",
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel, (schema_file, description, action) in TOPICS.items():
        avro = avro_schemas[schema_file]
        message = f"{channel}Message"
        messages[message] = {
            "name": avro["name"],
            "title": avro["name"],
            "summary": description,
            "contentType": "application/avro",
            "payload": {"schemaFormat": AVRO_FORMAT, "schema": avro},
            "bindings": {"kafka": {"key": {"type": "string", "description": "the partition key"}}},
        }
        if channel == "datasetVersions":
            messages[message]["headers"] = {
                "type": "object",
                "required": list(KAFKA_CE_HEADERS),
                "properties": {h: {"type": "string"} for h in KAFKA_CE_HEADERS},
            }
        ids = [message]
        for extra, extra_file, extra_summary in EXTRA_MESSAGES.get(channel, ()):
            extra_avro = avro_schemas[extra_file]
            messages[extra] = {
                **messages[message],
                "name": extra_avro["name"],
                "title": extra_avro["name"],
                "summary": extra_summary,
                "payload": {"schemaFormat": AVRO_FORMAT, "schema": extra_avro},
            }
            ids.append(extra)
        channels[channel] = {
            "address": topics[channel],
            "description": description,
            "servers": [{"$ref": "#/servers/kafka"}],
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in ids},
            "bindings": {"kafka": {"topic": topics[channel]}},
        }
        operations[f"{action}{channel[0].upper()}{channel[1:]}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in ids],
        }
    messages["versionPublished"] = {
        "name": "VersionPublished",
        "title": "A dataset version was published (CloudEvent, structured mode)",
        "contentType": STRUCTURED_CONTENT_TYPE,
        "payload": structured_cloudevent_schema(),
    }
    messages["versionPublishedWebhook"] = {
        **messages["versionPublished"],
        "headers": {
            "type": "object",
            "required": REQUIRED_WEBHOOK_HEADERS,
            "properties": {h: _string(d) for h, d in WEBHOOK_HEADERS.items()},
        },
    }
    channels["webhook"] = {
        "address": "{subscriberUrl}",
        "title": "Webhooks (Standard Webhooks)",
        "description": "POSTed to each subscription's URL, in version order, retried with backoff. Answer 2xx to "
        "acknowledge; 410 Gone disables the subscription. Register with POST /subscriptions (operator token).",
        "parameters": {"subscriberUrl": {"description": "the URL registered with the subscription"}},
        "servers": [{"$ref": "#/servers/subscriber"}],
        "messages": {"versionPublishedWebhook": {"$ref": "#/components/messages/versionPublishedWebhook"}},
    }
    channels["versionEvents"] = {
        "address": "/datasets/{dataset}/events",
        "title": "Server-sent events",
        "description": "text/event-stream: one event named 'version' per published version, its id the version "
        "number (resume with Last-Event-ID), its data the structured CloudEvent.",
        "parameters": {"dataset": {"description": "a dataset id"}},
        "servers": [{"$ref": "#/servers/publishApi"}],
        "messages": {"versionPublished": {"$ref": "#/components/messages/versionPublished"}},
    }
    operations["sendWebhook"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/webhook"},
        "messages": [{"$ref": "#/channels/webhook/messages/versionPublishedWebhook"}],
    }
    operations["sendVersionEvents"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/versionEvents"},
        "messages": [{"$ref": "#/channels/versionEvents/messages/versionPublished"}],
        "bindings": {"http": {"method": "GET"}},
    }
    return {
        "asyncapi": "3.0.0",
        "id": "urn:odc:asyncapi",
        "info": {
            "title": "odc — change notifications",
            "version": "1.0.0",
            "description": "The Kafka topics of the OpenData des communes pipeline (Avro, single-object "
            "encoding), and the dataset-version notifications as webhooks and server-sent events.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": kafka_bootstrap,
                "protocol": "kafka",
                "description": "The Kafka cluster (ODC_*_KAFKA_BOOTSTRAP)",
            },
            "publishApi": api_server,
            "subscriber": {
                "host": "{host}",
                "protocol": "https",
                "description": "A webhook subscriber's receiver",
                "variables": {"host": {"description": "the host of the subscription's URL"}},
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
