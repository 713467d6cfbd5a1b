"""How clients authenticate to the broker, and the ACL plan the local scripts apply (no broker needed; the
real broker's refusals are in tests/integration/test_broker_security.py)."""

from __future__ import annotations

import ssl

import pytest
from pydantic import SecretStr

from deploy.local.kafka_access import (
    ADMIN,
    CHANGE_EVENTS,
    COMMUNE_USERS,
    OP_CREATE,
    OP_READ,
    OP_WRITE,
    RESOURCE_GROUP,
    RESOURCE_TOPIC,
    SERVICE_USERS,
    SUPER_USERS,
    acl_bindings,
    producer_quotas,
)
from services.contract import size_limits
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.ingest.settings import IngestSettings
from services.normalise.settings import NormaliseSettings
from services.publish.settings import PublishSettings


def test_client_kwargs_carry_scram_credentials_and_a_verifying_tls_context() -> None:
    sec = KafkaClientSecurity("odc-ingest", SecretStr("s3cret"), "SASL_SSL", None)
    kw = sec.client_kwargs()
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("odc-ingest", "s3cret")
    ctx = kw["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert sec.producer_kwargs()["max_request_size"] == size_limits.PRODUCER_MAX_REQUEST_BYTES
    assert "s3cret" not in repr(sec)


def test_sasl_plaintext_has_no_tls_context() -> None:
    kw = KafkaClientSecurity("odc-publish", SecretStr("x"), "SASL_PLAINTEXT").client_kwargs()
    assert kw["security_protocol"] == "SASL_PLAINTEXT" and kw["ssl_context"] is None


@pytest.mark.parametrize(
    ("user", "password", "protocol"),
    [
        ("", "x", "SASL_SSL"),
        ("odc-ingest", "", "SASL_SSL"),
        ("odc-ingest", "x", "PLAINTEXT"),
        ("odc-ingest", "x", "SSL"),
    ],
)
def test_no_client_without_a_user_a_password_and_sasl(user: str, password: str, protocol: str) -> None:
    with pytest.raises(ValueError):
        KafkaClientSecurity(user, SecretStr(password), protocol)


@pytest.mark.parametrize(
    ("cls", "user"),
    [(IngestSettings, "odc-ingest"), (NormaliseSettings, "odc-normalise"), (PublishSettings, "odc-publish")],
)
def test_each_service_defaults_to_its_own_principal(cls: type, user: str) -> None:
    s = cls(kafka_password=SecretStr("p"))
    sec = KafkaClientSecurity.from_settings(s)
    assert (sec.username, sec.security_protocol) == (user, "SASL_SSL")
    assert SERVICE_USERS[cls.__name__.removesuffix("Settings").lower()] == user


def test_the_commune_principal_may_only_write_the_input_topic() -> None:
    for commune in COMMUNE_USERS:
        grants = {(b.resource_type, b.resource_name, b.operation) for b in acl_bindings() if b.principal == commune}
        assert grants == {(RESOURCE_TOPIC, CHANGE_EVENTS, OP_WRITE)}
        assert commune not in SUPER_USERS
    assert producer_quotas() == {c: 1024.0 * 1024 for c in COMMUNE_USERS}


def test_services_get_only_read_write_create_on_their_topics_and_their_groups() -> None:
    allowed_ops = {OP_READ, OP_WRITE, OP_CREATE}
    for b in acl_bindings():
        assert b.operation in allowed_ops, f"{b} (no principal but the admin may delete, alter or describe configs)"
        assert b.resource_type in (RESOURCE_TOPIC, RESOURCE_GROUP), str(b)
    for service, user in SERVICE_USERS.items():
        assert user not in SUPER_USERS
        groups = {b.resource_name for b in acl_bindings() if b.principal == user and b.resource_type == RESOURCE_GROUP}
        assert groups <= {f"odc-{service}"}, groups
    read_input = {b.principal for b in acl_bindings() if (b.resource_name, b.operation) == (CHANGE_EVENTS, OP_READ)}
    assert read_input == {SERVICE_USERS["normalise"]}  # signature headers and all: only the normaliser reads them
    assert ADMIN in SUPER_USERS
