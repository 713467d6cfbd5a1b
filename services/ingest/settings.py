"""Typed settings of the ingest service and of ``odc send`` / ``odc token`` / ``odc connector``;
environment variables prefixed ODC_INGEST_."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ODC_INGEST_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:19092"
    # SASL/SCRAM-SHA-512 principal and TLS trust (services/infrastructure/kafka_security.py, docs/security.md)
    # (`odc send` on a commune's machine uses the same settings with that commune's own Kafka user)
    kafka_username: str = "odc-ingest"
    kafka_password: SecretStr = SecretStr("")
    kafka_security_protocol: str = "SASL_SSL"
    kafka_ssl_cafile: str | None = None  # the broker's CA (PEM); None: the system's trust store
    database_url: SecretStr = SecretStr("postgresql://odc:odc@127.0.0.1:15432/odc")
    topic_change_events: str = "odc.change-events"
    input_partitions: int = 6
    web_host: str = "127.0.0.1"
    web_port: int = 6065
    log_level: str = "INFO"

    # HTTP push API
    max_body_bytes: int = 5 * 1024 * 1024  # 413 above this (OpenDataSoft's push API allows 5 MB)
    max_records_per_request: int = 10_000
    rate_limit_records_per_second: float = 200.0  # per commune, token bucket refilled at this rate ...
    rate_limit_burst_records: float = 20_000.0  # ... holding at most this many records
    idempotency_ttl_hours: float = 24.0
    # the key the API and the connectors sign their events with (an admin key, created on first use)
    service_signing_key_id: str = "odc-ingest-service"

    # `odc send` from a commune's machine: the key file printed by `odc key create` (else the service key)
    signing_key_file: str | None = None

    # snapshot connectors
    run_connectors: bool = True  # the service runs connectors that are due
    connector_poll_seconds: float = 5.0
    connector_max_delete_share: float = 0.5  # default guard for new connectors
    connector_fetch_timeout_seconds: float = 60.0
    connector_max_snapshot_bytes: int = 200 * 1024 * 1024
