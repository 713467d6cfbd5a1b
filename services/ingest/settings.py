"""Typed settings of the ingest service and of ``odc send`` / ``odc token`` / ``odc connector``;
environment variables prefixed ODC_INGEST_."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.contract import size_limits
from services.contract.local_ports import local_ports


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ODC_INGEST_", extra="ignore")

    # The territory served (docs/validation.md "Territory"): ONE deployment setting, ODC_TERRITORY, read by
    # every service and by `odc`. metropole-de-lyon (default), montpellier-mediterranee-metropole, an EPCI
    # SIREN, departement:XX, or the path of a territory file.
    territory: str = Field(default="metropole-de-lyon", validation_alias=AliasChoices("ODC_TERRITORY"))

    # ODC_PORT_BASE: the local stack moved to other ports (services/contract/local_ports.py); the broker, the
    # database and the web port not given explicitly follow it (`odc send`, `odc key`, `odc connector`...).
    port_base: int | None = Field(default=None, validation_alias=AliasChoices("ODC_PORT_BASE"))
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
    max_body_bytes: int = size_limits.MAX_BODY_BYTES  # 413 above this (OpenDataSoft's push API allows 5 MB)
    max_records_per_request: int = 10_000
    rate_limit_records_per_second: float = 200.0  # per commune, token bucket refilled at this rate ...
    rate_limit_burst_records: float = 20_000.0  # ... holding at most this many records
    idempotency_ttl_hours: float = 24.0
    # the key the API and the connectors sign their events with (an admin key, created on first use)
    service_signing_key_id: str = "odc-ingest-service"

    # `odc send` from a commune's machine: the key file printed by `odc key create` (else the service key)
    signing_key_file: str | None = None

    # size limits that agree end to end (services/contract/size_limits.py): a record whose encoded event is
    # larger is refused with reason record_too_large; the producers (API, connectors, odc send) use this
    # max_request_size, which the broker's message.max.bytes must allow
    max_record_bytes: int = size_limits.MAX_RECORD_BYTES
    producer_max_request_bytes: int = size_limits.PRODUCER_MAX_REQUEST_BYTES
    # the bulk form of odc.change-events (change_event_batch, docs/ingest.md): the API, the connectors and
    # `odc send` send one message per dataset, commune and window of events; false: one message per event
    bulk_send: bool = True

    # outages: the broker must acknowledge a request's records within publish_timeout_seconds, else the
    # request gets 503 + Retry-After and its records are discarded from the producer (docs/ingest.md); a
    # request is answered within answer_timeout_seconds whatever happens (database down included)
    publish_timeout_seconds: Annotated[float, Field(gt=0)] = 3.0
    answer_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    retry_after_seconds: Annotated[int, Field(ge=1)] = 5
    # /readyz: how long the broker and the database checks may take
    readiness_timeout_seconds: Annotated[float, Field(gt=0)] = 1.0
    # `odc send`: how long it keeps retrying while the broker is unreachable before it gives up
    send_retry_seconds: float = 30.0

    # snapshot connectors
    run_connectors: bool = True  # the service runs connectors that are due
    connector_poll_seconds: float = 5.0
    connector_max_delete_share: float = 0.5  # default guard for new connectors
    connector_fetch_timeout_seconds: float = 60.0
    connector_max_snapshot_bytes: int = 200 * 1024 * 1024

    @model_validator(mode="after")
    def _follow_port_base(self) -> IngestSettings:
        if self.port_base is not None:
            ports = local_ports(self.port_base)
            given = set(self.model_fields_set)
            if "kafka_bootstrap" not in given:
                self.kafka_bootstrap = ports.kafka_bootstrap
            if "database_url" not in given:
                self.database_url = SecretStr(ports.database_url)
            if "web_port" not in given:
                self.web_port = ports.ingest
        return self
