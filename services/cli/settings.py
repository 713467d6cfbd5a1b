"""Typed settings of the ``odc`` command; environment variables prefixed ODC_."""

from __future__ import annotations

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.contract.local_ports import local_ports


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
    # ODC_PORT_BASE: the local stack moved to other ports (services/contract/local_ports.py); the database and
    # service URLs above that are not given explicitly follow it.
    port_base: int | None = None

    @model_validator(mode="after")
    def _follow_port_base(self) -> CliSettings:
        if self.port_base is not None:
            ports = local_ports(self.port_base)
            given = set(self.model_fields_set)
            if "database_url" not in given:
                self.database_url = SecretStr(ports.database_url)
            for name in ("ingest", "normalise", "publish"):
                if f"{name}_url" not in given:
                    setattr(self, f"{name}_url", ports.url(name))
        return self
