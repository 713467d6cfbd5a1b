"""Typed settings of the publisher; environment variables prefixed ODC_PUBLISH_."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PublishSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ODC_PUBLISH_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:19092"
    database_url: SecretStr = SecretStr("postgresql://odc:odc@127.0.0.1:15432/odc")
    group_id: str = "odc-publish"
    topic_feature_changes: str = "odc.feature-changes"
    topic_notifications: str = "odc.dataset-versions"
    batch_max_events: int = 2000
    batch_within_seconds: float = 0.2
    cut_interval_seconds: float = 0.2
    max_delay_seconds: float = 10.0
    relay_interval_seconds: float = 0.05
    event_source: str = "urn:odc:publish"
    web_host: str = "127.0.0.1"
    web_port: int = 6067
    log_level: str = "INFO"
    state_dir: str = ".local/state"  # faust's own working files (no tables are used)
