"""Typed settings of the normaliser; environment variables prefixed ODC_NORMALISE_."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.contract import size_limits


class NormaliseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ODC_NORMALISE_", extra="ignore")

    # The territory served (docs/validation.md "Territory"): ONE deployment setting, ODC_TERRITORY, read by
    # every service and by `odc`. metropole-de-lyon (default), montpellier-mediterranee-metropole, an EPCI
    # SIREN, departement:XX, or the path of a territory file.
    territory: str = Field(default="metropole-de-lyon", validation_alias=AliasChoices("ODC_TERRITORY"))

    kafka_bootstrap: str = "127.0.0.1:19092"
    # SASL/SCRAM-SHA-512 principal and TLS trust (services/infrastructure/kafka_security.py, docs/security.md)
    kafka_username: str = "odc-normalise"
    kafka_password: SecretStr = SecretStr("")
    kafka_security_protocol: str = "SASL_SSL"
    kafka_ssl_cafile: str | None = None  # the broker's CA (PEM); None: the system's trust store
    database_url: SecretStr = SecretStr("postgresql://odc:odc@127.0.0.1:15432/odc")
    group_id: str = "odc-normalise"
    topic_change_events: str = "odc.change-events"
    topic_feature_changes: str = "odc.feature-changes"
    topic_rejected: str = "odc.rejected"
    input_partitions: int = 6
    batch_max_events: int = 1000  # messages per batch
    # and about this many bytes of messages per batch (a bulk message carries up to ~2,500 point events): with
    # 2 MiB the normaliser and its relay peaked at 320 MB on 10,000 bulk parks, with 1 MiB at 298 MB, same rate
    batch_max_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024
    batch_within_seconds: float = 0.2
    # The broker holds a fetch until this many bytes wait or the wait ends. With 1 byte (the client default)
    # a steady trickle makes a fetch per message or two: at 1,000 events/s the broker alone took ~0.6 of a core
    # (docs/performance.md). The wait bounds the latency this adds.
    fetch_min_bytes: int = 65536
    fetch_max_wait_seconds: float = 0.05
    # a record batch of the input topic may expand to at most this many bytes once decompressed; a larger one is
    # refused whole (batch_too_large) and the stream goes on (services/infrastructure/kafka_decompression.py)
    max_decompressed_batch_bytes: Annotated[int, Field(ge=2 * 1024 * 1024)] = size_limits.MAX_DECOMPRESSED_BATCH_BYTES
    relay_interval_seconds: float = 1.0  # the fallback poll: the outboxes' NOTIFY wakes the relay
    # a relayed batch holds at most 2,000 rows and about this many bytes of them (issue #16: the relay child's peak)
    relay_batch_max_bytes: Annotated[int, Field(gt=0)] = 2 * 1024 * 1024
    # glibc's mmap and trim thresholds, fixed at start in the worker and its relay child (malloc_retention.py;
    # issue #16: the peak RSS fell ~25 MB); 0 leaves glibc's dynamic thresholds (to compare)
    malloc_threshold_bytes: Annotated[int, Field(ge=0)] = 128 * 1024
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # Rejections (table rejection) older than this are pruned, once relayed, every prune interval, in
    # batches; each keeps a bounded prefix of the original (services/contract/size_limits.py)
    rejection_retention_days: Annotated[float, Field(gt=0)] = 30.0
    rejection_prune_interval_seconds: Annotated[float, Field(gt=0)] = 3600.0
    rejection_prune_batch_rows: Annotated[int, Field(gt=0)] = 5000
    # Change rows (table feature_change_outbox) applied longer ago than this are pruned, once relayed, at the same
    # interval and batch size: their event ids stay known as processed (the table's delete trigger); what goes is
    # their before/after geometry and attributes, sent long since to the publisher, whose change log keeps them
    change_retention_days: Annotated[float, Field(gt=0)] = 7.0
    readiness_timeout_seconds: float = 1.0  # /readyz checks the broker and the database live, each within this
    log_level: str = "INFO"
    # A batch held longer than this (database down) makes the consumer leave its group; its events are then
    # read again by whoever takes the partitions, and counted as duplicates.
    max_poll_interval_seconds: int = 300
    # The consumer's heartbeats run on the worker's event loop; a batch of large polygons with many neighbours
    # kept it busy past the client's default 10 s in the 100,000-park benchmark (the group dropped the worker
    # and the batch was read again as duplicates). 30 s, heartbeats every 10 s.
    session_timeout_seconds: int = 30
    # Kafka path authorisation (services/contract/event_signature.py): refuse events without a valid
    # per-commune signature. True in production; keys are re-read at most this often.
    require_signed_events: bool = True
    signing_keys_max_age_seconds: float = 5.0
