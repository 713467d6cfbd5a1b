"""Typed settings of the ``odc`` command; environment variables prefixed ODC_."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CliSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ODC_", extra="ignore")

    # The territory served (docs/validation.md "Territory"), the same ODC_TERRITORY the services read.
    territory: str = "metropole-de-lyon"

    database_url: SecretStr = SecretStr("postgresql://odc:odc@127.0.0.1:15432/odc")
    ingest_url: str = "http://127.0.0.1:6065"
    normalise_url: str = "http://127.0.0.1:6066"
    publish_url: str = "http://127.0.0.1:6067"
    # Operator (admin) token for the publish API's subscription routes (`odc token create --admin`).
    token: SecretStr | None = None
