"""Typed settings of the ingest service and of ``odc send``; environment variables prefixed ODC_INGEST_."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ODC_INGEST_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:19092"
    topic_change_events: str = "odc.change-events"
    input_partitions: int = 6
    web_host: str = "127.0.0.1"
    web_port: int = 6065
    log_level: str = "INFO"
