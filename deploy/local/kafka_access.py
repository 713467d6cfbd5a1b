"""Who may do what on the local Kafka broker: the principals, their generated passwords, the broker's TLS
certificate, the ACLs and the per-principal quotas (docs/security.md, "Kafka broker").

- :func:`load_or_create_access` generates, once per broker data dir, a random password for every principal
  and a self-signed TLS certificate (``keytool``, from the JDK the broker runs on), and keeps them in
  ``<data_dir>/access/`` (directory 0700, files 0600). The SCRAM users are written into the broker's storage
  at format time (``kafka-storage format --add-scram``), so the file must outlive the broker's data.
- :func:`provision_access` (run by :class:`deploy.local.kafka.KafkaBroker` as the admin principal once the
  broker answers) creates the ACLs of :func:`acl_bindings` and the quotas of :func:`producer_quotas`; both
  are idempotent, so every start re-applies them.

aiokafka's admin client has no ACL or quota calls; it has the protocol structs of CreateAcls (v1), and the
AlterClientQuotas v0 request is declared below in the same way (KIP-546 schema).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from services.infrastructure.kafka_security import KafkaClientSecurity

# -- principals -----------------------------------------------------------------------------------------

ADMIN = "odc-admin"  # provisioning: topics, ACLs, quotas (a super user)
BROKER = "odc-broker"  # the broker's own inter-broker connections (a super user)
CONTROLLER = "odc-controller"  # broker -> KRaft controller, SASL/PLAIN on the loopback controller listener
SERVICE_USERS = {"ingest": "odc-ingest", "normalise": "odc-normalise", "publish": "odc-publish"}
# `odc send` from a commune's machine: may only write the input topic, and is rate limited
COMMUNE_USERS = ("odc-commune",)
SCRAM_USERS = (ADMIN, BROKER, *SERVICE_USERS.values(), *COMMUNE_USERS)
SUPER_USERS = (ADMIN, BROKER, CONTROLLER)

# Topics and groups (the services' default settings; docs/architecture.md lists them)
CHANGE_EVENTS = "odc.change-events"
FEATURE_CHANGES = "odc.feature-changes"
REJECTED = "odc.rejected"
DATASET_VERSIONS = "odc.dataset-versions"
NORMALISE_GROUP = "odc-normalise"
PUBLISH_GROUP = "odc-publish"

# A commune's producer may send this many bytes per second; above it the broker delays its requests.
# 1 MiB/s is ~1,000 typical records/s (5x the push API's 200 records/s per commune) and lets a 5 MiB record
# through after a pause.
COMMUNE_PRODUCER_BYTE_RATE = 1024 * 1024

# -- ACL wire codes (org.apache.kafka.common.acl / resource) ---------------------------------------------

RESOURCE_TOPIC, RESOURCE_GROUP, RESOURCE_CLUSTER = 2, 3, 4
PATTERN_LITERAL, PATTERN_PREFIXED = 3, 4
OP_READ, OP_WRITE, OP_CREATE, OP_DESCRIBE = 3, 4, 5, 8
PERMISSION_ALLOW = 3
_RESOURCE_NAMES = {RESOURCE_TOPIC: "topic", RESOURCE_GROUP: "group", RESOURCE_CLUSTER: "cluster"}
_OP_NAMES = {OP_READ: "read", OP_WRITE: "write", OP_CREATE: "create", OP_DESCRIBE: "describe"}


@dataclass(frozen=True)
class AclBinding:
    principal: str  # user name, without "User:"
    resource_type: int
    resource_name: str
    operation: int
    pattern: int = PATTERN_LITERAL

    def __str__(self) -> str:
        return (
            f"User:{self.principal} may {_OP_NAMES[self.operation]} "
            f"{_RESOURCE_NAMES[self.resource_type]} {self.resource_name}{'*' if self.pattern == PATTERN_PREFIXED else ''}"
        )


def _topic(user: str, topic: str, *ops: int) -> list[AclBinding]:
    return [AclBinding(user, RESOURCE_TOPIC, topic, op) for op in ops]


def acl_bindings() -> list[AclBinding]:
    """Each service's operations and nothing more. Kafka lets READ or WRITE on a topic imply DESCRIBE.

    Services create the topics they use at start-up (partition counts in their settings), hence CREATE on
    exactly those topics; no principal but the admin may delete a topic or touch ACLs.
    """
    ingest, normalise, publish = SERVICE_USERS["ingest"], SERVICE_USERS["normalise"], SERVICE_USERS["publish"]
    out: list[AclBinding] = []
    out += _topic(ingest, CHANGE_EVENTS, OP_WRITE, OP_CREATE)  # push API and snapshot connectors
    out += _topic(normalise, CHANGE_EVENTS, OP_READ, OP_CREATE)
    out += _topic(normalise, FEATURE_CHANGES, OP_WRITE, OP_CREATE)
    out += _topic(normalise, REJECTED, OP_WRITE, OP_CREATE)
    # consumer groups by prefix: a second worker, or a replay under its own group (odc-normalise-replay)
    out.append(AclBinding(normalise, RESOURCE_GROUP, NORMALISE_GROUP, OP_READ, PATTERN_PREFIXED))
    out += _topic(publish, FEATURE_CHANGES, OP_READ, OP_CREATE)
    out += _topic(publish, DATASET_VERSIONS, OP_WRITE, OP_CREATE)
    out.append(AclBinding(publish, RESOURCE_GROUP, PUBLISH_GROUP, OP_READ, PATTERN_PREFIXED))
    for commune in COMMUNE_USERS:
        out += _topic(commune, CHANGE_EVENTS, OP_WRITE)
    return out


def producer_quotas() -> dict[str, float]:
    """producer_byte_rate per principal (bytes/s)."""
    return {commune: float(COMMUNE_PRODUCER_BYTE_RATE) for commune in COMMUNE_USERS}


# -- credentials and certificate --------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaAccess:
    """The generated secrets of one broker: every principal's password and the TLS key store."""

    directory: Path
    passwords: dict[str, str] = field(repr=False)
    keystore_password: str = field(repr=False)

    @property
    def keystore(self) -> Path:
        return self.directory / "broker.p12"

    @property
    def ca_file(self) -> Path:
        """The broker's self-signed certificate, which clients trust (PEM)."""
        return self.directory / "ca.pem"

    def security(self, user: str) -> KafkaClientSecurity:
        return KafkaClientSecurity(user, SecretStr(self.passwords[user]), "SASL_SSL", str(self.ca_file))

    def admin(self) -> KafkaClientSecurity:
        return self.security(ADMIN)

    def client_kwargs(self, user: str) -> dict[str, Any]:
        return self.security(user).client_kwargs()

    def env(self, prefix: str, user: str) -> dict[str, str]:
        """The settings of a client acting as ``user``: ``<prefix>KAFKA_USERNAME`` etc. (prefix ``ODC_INGEST_``)."""
        return {
            f"{prefix}KAFKA_USERNAME": user,
            f"{prefix}KAFKA_PASSWORD": self.passwords[user],
            f"{prefix}KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            f"{prefix}KAFKA_SSL_CAFILE": str(self.ca_file),
        }

    def settings_kwargs(self, user: str) -> dict[str, Any]:
        """The same as keyword arguments of a service's settings class (``IngestSettings(**...)``)."""
        return {
            "kafka_username": user,
            "kafka_password": SecretStr(self.passwords[user]),
            "kafka_security_protocol": "SASL_SSL",
            "kafka_ssl_cafile": str(self.ca_file),
        }

    def service_env(self, service: str) -> dict[str, str]:
        return self.env(f"ODC_{service.upper()}_", SERVICE_USERS[service])


def _keytool() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "keytool").exists():
        return str(Path(java_home) / "bin" / "keytool")
    tool = shutil.which("keytool")
    if tool is None:
        raise RuntimeError("no 'keytool' on PATH (it comes with the JDK the broker runs on)")
    return tool


def _make_certificate(directory: Path, store_password: str) -> None:
    """A self-signed EC certificate for 127.0.0.1 / localhost / kafka (docker-compose's host name), marked as
    a CA so clients can use it as their trust anchor."""
    keystore, pem = directory / "broker.p12", directory / "ca.pem"
    for p in (keystore, pem):
        p.unlink(missing_ok=True)
    common = ["-keystore", str(keystore), "-storetype", "PKCS12", "-storepass", store_password, "-alias", "broker"]
    steps = [
        [
            "-genkeypair",
            *common,
            "-keyalg",
            "EC",
            "-groupname",
            "secp256r1",
            "-dname",
            "CN=odc local Kafka broker",
            "-ext",
            "SAN=ip:127.0.0.1,dns:localhost,dns:kafka",
            "-ext",
            "bc:c",
            "-validity",
            "3650",
        ],
        ["-exportcert", *common, "-rfc", "-file", str(pem)],
    ]
    for args in steps:
        proc = subprocess.run([_keytool(), *args], check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"keytool {args[0]} failed: {proc.stdout}{proc.stderr}")
    for p in (keystore, pem):
        p.chmod(0o600)


def load_or_create_access(data_dir: Path) -> KafkaAccess:
    """The broker's secrets in ``<data_dir>/access/``, generated on first use (0700 dir, 0600 files)."""
    directory = Path(data_dir).resolve() / "access"
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / "credentials.json"
    users = (*SCRAM_USERS, CONTROLLER)
    if path.is_file():
        stored = json.loads(path.read_text())
        passwords = stored["passwords"]
        if all(u in passwords for u in users) and (directory / "broker.p12").is_file():
            return KafkaAccess(directory, passwords, stored["keystore_password"])
    passwords = {u: secrets.token_urlsafe(24) for u in users}
    store_password = secrets.token_urlsafe(24)
    _make_certificate(directory, store_password)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"passwords": passwords, "keystore_password": store_password}, f, indent=2)
        f.write("\n")
    path.chmod(0o600)
    return KafkaAccess(directory, passwords, store_password)


# -- provisioning over the admin API -----------------------------------------------------------------------


def _alter_client_quotas_request(quotas: dict[str, float]) -> Any:
    from aiokafka.protocol.api import Request, RequestStruct, Response
    from aiokafka.protocol.types import Array, Boolean, Float64, Int16, Int32, Schema, String

    class AlterClientQuotasResponse_v0(Response):
        API_KEY = 49
        API_VERSION = 0
        SCHEMA = Schema(
            ("throttle_time_ms", Int32),
            (
                "entries",
                Array(
                    ("error_code", Int16),
                    ("error_message", String("utf-8")),
                    ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
                ),
            ),
        )

    class AlterClientQuotasRequest_v0(RequestStruct):
        API_KEY = 49
        API_VERSION = 0
        RESPONSE_TYPE = AlterClientQuotasResponse_v0
        SCHEMA = Schema(
            (
                "entries",
                Array(
                    ("entity", Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))),
                    ("ops", Array(("key", String("utf-8")), ("value", Float64), ("remove", Boolean))),
                ),
            ),
            ("validate_only", Boolean),
        )

    class AlterClientQuotasRequest(Request[AlterClientQuotasRequest_v0]):
        API_KEY = 49

        def build(self, request_struct_class: type[AlterClientQuotasRequest_v0]) -> AlterClientQuotasRequest_v0:
            entries = [([("user", user)], [("producer_byte_rate", rate, False)]) for user, rate in quotas.items()]
            return request_struct_class(entries, False)

    return AlterClientQuotasRequest()


def _check(errors: Iterable[tuple[int, str | None]], what: str) -> None:
    bad = [(code, msg) for code, msg in errors if code != 0]
    if bad:
        raise RuntimeError(f"{what} failed: {bad}")


async def create_acls(admin: Any, bindings: Iterable[AclBinding]) -> None:
    """CreateAcls through an started AIOKafkaAdminClient (creating an existing binding is a no-op)."""
    from aiokafka.protocol.admin import CreateAclsRequest

    for b in bindings:
        req = CreateAclsRequest(
            b.resource_type, b.resource_name, b.pattern, f"User:{b.principal}", "*", b.operation, PERMISSION_ALLOW
        )
        resp = await admin._send_request(req)  # aiokafka has the request struct but no public call
        _check([(r[0], r[1]) for r in resp.creation_responses], f"CreateAcls({b})")


async def set_producer_quotas(admin: Any, quotas: dict[str, float]) -> None:
    if not quotas:
        return
    resp = await admin._send_request(_alter_client_quotas_request(quotas))
    _check([(e[0], e[1]) for e in resp.entries], f"AlterClientQuotas({quotas})")


async def provision_access(bootstrap: str, access: KafkaAccess, *, timeout_ms: int = 10_000) -> None:
    """Apply :func:`acl_bindings` and :func:`producer_quotas` as the admin principal."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **access.admin().client_kwargs()
    )
    await admin.start()
    try:
        await create_acls(admin, acl_bindings())
        await set_producer_quotas(admin, producer_quotas())
    finally:
        await admin.close()


__all__ = [
    "ADMIN",
    "COMMUNE_USERS",
    "SERVICE_USERS",
    "AclBinding",
    "KafkaAccess",
    "acl_bindings",
    "load_or_create_access",
    "producer_quotas",
    "provision_access",
]
