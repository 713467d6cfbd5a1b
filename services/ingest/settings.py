"""Typed settings of the ingest service and of ``odc send`` / ``odc token`` / ``odc connector``;
environment variables prefixed ODC_INGEST_."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
