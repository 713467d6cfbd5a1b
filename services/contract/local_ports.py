"""The ports of the local stack (`make run`), from ONE setting: ``ODC_PORT_BASE``.

Unset, the stack uses its historical ports (Kafka 19092 and its controller 19093, PostgreSQL 15432, the
ingest, normaliser and publisher web ports 6065, 6066, 6067, the local supervisor's metrics 6068). Set to N, it
uses N, N+1, ... N+6 in that order,
and `make run`, `make status` and every `odc` command (its settings read the same variable) follow it.
A setting given explicitly (e.g. ``ODC_PUBLISH_URL``) still wins over the one derived from the base.
"""

from __future__ import annotations

from dataclasses import dataclass

PORT_BASE_VARIABLE = "ODC_PORT_BASE"
PORTS_USED = 7


@dataclass(frozen=True)
class LocalPorts:
    kafka: int
    kafka_controller: int
    postgres: int
    ingest: int
    normalise: int
    publish: int
    supervisor: int

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka}"

    @property
    def database_url(self) -> str:
        """The local cluster's app role and database (deploy/local/postgres.py: odc/odc, database odc)."""
        return f"postgresql://odc:odc@127.0.0.1:{self.postgres}/odc"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.web(service)}"

    def web(self, service: str) -> int:
        return {"ingest": self.ingest, "normalise": self.normalise, "publish": self.publish}[service]


DEFAULT_PORTS = LocalPorts(
    kafka=19092, kafka_controller=19093, postgres=15432, ingest=6065, normalise=6066, publish=6067, supervisor=6068
)


def local_ports(base: int | None) -> LocalPorts:
    """The local stack's ports for ``ODC_PORT_BASE`` (None: the historical defaults)."""
    if base is None:
        return DEFAULT_PORTS
    if not 1024 <= base <= 65535 - PORTS_USED:
        raise ValueError(f"{PORT_BASE_VARIABLE}={base}: must be between 1024 and {65535 - PORTS_USED}")
    return LocalPorts(*(base + i for i in range(PORTS_USED)))
