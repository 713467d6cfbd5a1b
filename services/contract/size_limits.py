"""The size limits of the input path, in one place, so that they agree end to end (docs/security.md).

A record refused for its size is refused at once with a reason naming the limit (413 or a per-record
refusal), never a 503 "retry later" that could never succeed. Each limit is larger than the one before it:

    push API body (5 MiB)  >=  one record, encoded (1,000,000 B)
    one record + key + signature headers + batch overhead  <=  producer max_request_size (1 MiB)
    producer max_request_size  <=  broker message.max.bytes (Kafka's default, 1,048,588 B)
    broker message.max.bytes (a batch, compressed)  <<  the batch decompressed (32 MiB at most, normaliser)

The settings of the ingest service default to these numbers (ODC_INGEST_MAX_BODY_BYTES, ..._MAX_RECORD_BYTES,
..._PRODUCER_MAX_REQUEST_BYTES); change them together, with the broker's ``message.max.bytes``.
"""

from __future__ import annotations

MAX_BODY_BYTES = 5 * 1024 * 1024
"""The push API refuses a larger body with 413 (OpenDataSoft's push API allows 5 MB)."""

MAX_RECORD_BYTES = 1_000_000
"""The largest change event, as its encoded Avro value; a larger record is refused (``record_too_large``)."""

PRODUCER_MAX_REQUEST_BYTES = 1024 * 1024
"""aiokafka's ``max_request_size`` for the ingest service, connectors and ``odc send``: one record of
MAX_RECORD_BYTES plus its key (~120 B), signature headers (~110 B) and batch overhead (~70 B) fits."""

BROKER_MESSAGE_MAX_BYTES = 1_048_588
"""The broker's ``message.max.bytes`` (Kafka's default) must be at least PRODUCER_MAX_REQUEST_BYTES."""

REJECTION_ORIGINAL_PREFIX_BYTES = 16 * 1024
"""A rejection keeps this many bytes of the original message, with the SHA-256 and size of the whole."""

INTERNAL_MESSAGE_MAX_BYTES = MAX_RECORD_BYTES
"""The largest value a relay builds when it groups outbox rows in one message (a FeatureChangeBatch on
odc.feature-changes): a larger group is split in several messages, so that value + key + batch overhead stays
under PRODUCER_MAX_REQUEST_BYTES, the relays' ``max_request_size``."""

MAX_DECOMPRESSED_BATCH_BYTES = 32 * 1024 * 1024
"""The most a record batch on the input topic may expand to when the normaliser decompresses it; a larger batch
is refused whole with its offsets (``batch_too_large``; services/infrastructure/kafka_decompression.py). The broker
bounds a batch only compressed (BROKER_MESSAGE_MAX_BYTES): without this a few KiB could expand to gigabytes."""
