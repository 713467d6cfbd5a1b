"""Typed settings of the publisher; environment variables prefixed ODC_PUBLISH_."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PublishSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ODC_PUBLISH_", extra="ignore")

    # The territory served (docs/validation.md "Territory"): ONE deployment setting, ODC_TERRITORY, read by
    # every service and by `odc`. metropole-de-lyon (default), montpellier-mediterranee-metropole, an EPCI
    # SIREN, departement:XX, or the path of a territory file.
    territory: str = Field(default="metropole-de-lyon", validation_alias=AliasChoices("ODC_TERRITORY"))

    kafka_bootstrap: str = "127.0.0.1:19092"
    # SASL/SCRAM-SHA-512 principal and TLS trust (services/infrastructure/kafka_security.py, docs/security.md)
    kafka_username: str = "odc-publish"
    kafka_password: SecretStr = SecretStr("")
    kafka_security_protocol: str = "SASL_SSL"
    kafka_ssl_cafile: str | None = None  # the broker's CA (PEM); None: the system's trust store
    database_url: SecretStr = SecretStr("postgresql://odc:odc@127.0.0.1:15432/odc")
    group_id: str = "odc-publish"
    topic_feature_changes: str = "odc.feature-changes"
    topic_notifications: str = "odc.dataset-versions"
    batch_max_events: int = 2000  # messages per batch (a feature-change message carries up to ~1 MB of changes)
    # and about this many bytes of them: ~7,000 point changes per transaction, whatever the messages hold
    batch_max_bytes: Annotated[int, Field(gt=0)] = 4 * 1024 * 1024
    batch_within_seconds: float = 0.2
    # The broker holds a fetch until this many bytes wait or the wait ends. The publisher's input is one message
    # per normaliser batch and dataset (issue #16.3), not per event, so a fetch per message costs the broker
    # little; waiting for 64 kB held each change up to the whole fetch wait at light load (issue #16, third
    # session, docs/performance.md).
    fetch_min_bytes: int = 1
    fetch_max_wait_seconds: float = 0.05
    cut_interval_seconds: float = 0.2
    # A version holds at most its policy's max_changes and, past its first change, about this many bytes of
    # geometry and attributes (before and after): the cut builds the version in memory, and 20,000 large polygons
    # would take gigabytes. The rest goes into the next version, cut at once.
    version_max_bytes: Annotated[int, Field(gt=0)] = 8 * 1024 * 1024
    max_delay_seconds: float = 10.0
    relay_interval_seconds: float = 1.0  # the fallback poll: NOTIFY and the cutter wake the relay
    event_source: str = "urn:odc:publish"
    # One HTTP server (uvicorn, run inside the worker process) serves the API, /metrics, /healthz, /readyz.
    web_host: str = "127.0.0.1"
    web_port: int = 6067
    readiness_timeout_seconds: float = 1.0  # /readyz checks the broker and the database live, each within this
    # Base of the links put in notifications and documents (what subscribers can reach); default
    # http://127.0.0.1:<web_port>.
    public_base_url: str = ""
    # Notifications inline every changed feature (before and after) when a version has at most this many.
    notify_max_inline_changes: int = 100
    webhook_max_attempts: int = 12
    webhook_backoff_initial_seconds: float = 1.0
    webhook_backoff_max_seconds: float = 600.0
    webhook_timeout_seconds: float = 10.0
    webhook_interval_seconds: float = 0.25
    # Loopback/private/link-local webhook targets are refused unless this is set (tests, closed networks).
    webhook_allow_private_targets: bool = False
    # Standard Webhooks secret rotation: the previous secret keeps signing (a second signature) this long.
    webhook_secret_rotation_overlap_seconds: float = 86400.0
    # OGC API – Features Part 4 (commune edits): each write is sent to the ingest service's push API with the
    # caller's token. ingest_url is where this service reaches it; ingest_public_url where clients follow a
    # write's receipt (default: ingest_url). An edit waits this long for the stream's decision, then answers 202.
    ingest_url: str = "http://127.0.0.1:6065"
    ingest_public_url: str = ""
    edit_wait_seconds: float = 5.0
    sse_poll_seconds: float = 0.5
    sse_keepalive_seconds: float = 15.0
    log_level: str = "INFO"
    # The contact point (vCard) of every dataset in the DCAT catalogue, shown by data.gouv.fr to the datasets' users
    # (it keeps a contact point only with an e-mail). The defaults are the Métropole de Lyon's open-data portal.
    dcat_contact_name: str = "Métropole de Lyon — OpenData des communes"
    dcat_contact_email: str = "opendata@grandlyon.com"
    dcat_contact_url: str = "https://data.grandlyon.com"
    # GeoJSON/CSV exports are written once per version to files and served from them (length, byte ranges):
    # the directory ("" = a fresh temporary one per process) and its bound, least recently used files removed first
    export_cache_dir: str = ""
    export_cache_max_bytes: int = 2 << 30

    def base_url(self) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = "127.0.0.1" if self.web_host in ("0.0.0.0", "::", "") else self.web_host
        return f"http://{host}:{self.web_port}"
