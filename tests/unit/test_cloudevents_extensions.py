"""CloudEvents extensions (issue #15.5) read back with the official CloudEvents SDK: the Kafka message in
binary mode and the structured JSON of webhooks and server-sent events carry ``partitionkey`` (the dataset),
``sequence`` (the version, zero-padded so text order is version order) and an absolute ``dataschema``."""

from __future__ import annotations

from urllib.parse import urlsplit

from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from services.contract.codecs import Codecs
from services.publish.domain.notifications import (
    encode_event,
    sequence,
    structured_event,
    version_message,
)
from tests.unit.test_publish_documents import small_draft

BASE = "https://data.example.org/publish"


def test_the_kafka_message_parses_with_the_sdk_and_carries_the_extensions() -> None:
    attrs, data = version_message(small_draft(), "urn:test", base_url=BASE, max_inline_changes=3)
    headers = dict((k, v) for k, v in attrs.kafka_headers())
    assert headers["ce_partitionkey"] == b"public_toilets" and headers["ce_sequence"] == b"0" * 19 + b"5"
    payload = Codecs().encode_dataset_version(data)
    event = from_binary(KafkaMessage(headers, None, payload), JSONFormat())  # no key: the header alone
    assert event.get_id() == "public_toilets:v5" and event.get_subject() == "public_toilets"
    assert event.get_extension("partitionkey") == "public_toilets"
    assert event.get_extension("sequence") == "00000000000000000005"
    assert event.get_dataschema() == f"{BASE}/schemas/avro/dataset_version.v3.avsc"
    assert urlsplit(event.get_dataschema() or "").scheme == "https"
    assert event.get_datacontenttype() == "application/avro"


def test_the_structured_event_parses_with_the_sdk_and_carries_the_same_attributes() -> None:
    attrs, _ = version_message(small_draft(), "urn:test", base_url=BASE, max_inline_changes=3)
    body = encode_event(structured_event(small_draft(), "urn:test", base_url=BASE, max_inline_changes=3))
    event = JSONFormat().read(None, body)
    assert event.get_id() == attrs.id
    assert event.get_extension("partitionkey") == attrs.partitionkey == "public_toilets"
    assert event.get_extension("sequence") == attrs.sequence
    assert event.get_dataschema() == attrs.dataschema
    data = event.get_data()
    assert isinstance(data, dict) and data["version"] == 5


def test_sequence_sorts_as_text_in_version_order() -> None:
    versions = [1, 2, 9, 10, 99, 100, 12345, 2**63 - 1]
    assert sorted(sequence(v) for v in versions) == [sequence(v) for v in versions]
    assert {len(sequence(v)) for v in versions} == {20}
