"""The broker authenticates and authorises every client (issue 13, point 2; docs/security.md "Kafka broker").

On the real broker the suite starts (SASL_SSL, SCRAM-SHA-512, StandardAuthorizer, the ACLs and quotas of
deploy/local/kafka_access.py):
- a client without credentials (plaintext or TLS) and a client with a wrong password or an unknown user can
  neither produce, read, describe, create nor delete; the admin then sees that nothing changed;
- a commune's principal can write the input topic and nothing else (not read it, not write another topic,
  not create or delete a topic, not join a consumer group);
- each service principal is refused the topics that are not its own;
- the commune's producer is held to its byte-rate quota; record sizes agree between producers and broker.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)
from aiokafka.protocol.admin import DescribeClientQuotasRequest
from pydantic import SecretStr

from deploy.local.kafka import KafkaBroker
from deploy.local.kafka_access import (
    COMMUNE_PRODUCER_BYTE_RATE,
    COMMUNE_USERS,
    SERVICE_USERS,
    set_producer_quotas,
)
from deploy.local.ports import free_port
from services.contract import size_limits
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics

INPUT = "odc.change-events"
OUTPUTS = ("odc.feature-changes", "odc.rejected", "odc.dataset-versions")
SECRET = "odc.feature-changes"  # a topic holding data nobody outside the pipeline may read
COMMUNE = COMMUNE_USERS[0]
TIMEOUT_MS = 4000

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------------------------ helpers


def _admin_kwargs(broker: KafkaBroker) -> dict[str, Any]:
    return broker.admin_security().client_kwargs()


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker of this module's own (started by the same script as the session's): these tests write junk,
    a flood and a 5 MiB record to odc.change-events, which the pipeline tests on the session broker would
    otherwise read as rejections."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-security"), free_port(), free_port())
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
async def topics(kafka_broker: KafkaBroker) -> None:
    """The pipeline's topics, created by the admin, with one record in the secret one."""
    await ensure_topics(
        kafka_broker.bootstrap,
        [TopicSpec(INPUT, 6), *(TopicSpec(t, 3) for t in OUTPUTS)],
        security=kafka_broker.admin_security(),
    )
    p = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, **_admin_kwargs(kafka_broker))
    await p.start()
    try:
        await p.send_and_wait(SECRET, b"signed feature change", partition=0)
    finally:
        await p.stop()


async def _admin_view(broker: KafkaBroker) -> tuple[set[str], dict[TopicPartition, int]]:
    """Topics and every partition's end offset, as the admin sees them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, **_admin_kwargs(broker))
    await admin.start()
    try:
        names = {t for t in await admin.list_topics() if not t.startswith("__")}
    finally:
        await admin.close()
    c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, **_admin_kwargs(broker))
    await c.start()
    try:
        parts = [TopicPartition(t, p) for t in sorted(names) for p in (c.partitions_for_topic(t) or set())]
        if not parts:
            await c._client.force_metadata_update()
            parts = [TopicPartition(t, p) for t in sorted(names) for p in (c.partitions_for_topic(t) or set())]
        ends = await c.end_offsets(parts)
    finally:
        await c.stop()
    return names, ends


def _intruders(broker: KafkaBroker) -> dict[str, dict[str, Any]]:
    ca = broker.access.ca_file
    tls_only = KafkaClientSecurity(COMMUNE, SecretStr("x"), "SASL_SSL", str(ca)).ssl_context()
    return {
        "anonymous plaintext": {"security_protocol": "PLAINTEXT"},
        "anonymous TLS": {"security_protocol": "SSL", "ssl_context": tls_only},
        "wrong password": KafkaClientSecurity(
            COMMUNE, SecretStr("not-the-password"), "SASL_SSL", str(ca)
        ).client_kwargs(),
        "wrong admin password": KafkaClientSecurity(
            "odc-admin", SecretStr("guess"), "SASL_SSL", str(ca)
        ).client_kwargs(),
        "unknown user": KafkaClientSecurity("mallory", SecretStr("mallory"), "SASL_SSL", str(ca)).client_kwargs(),
    }


async def _produce(broker: KafkaBroker, kw: dict[str, Any], topic: str = INPUT) -> None:
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_MS, **kw)
    await p.start()
    try:
        await p.send_and_wait(topic, b"junk from outside", partition=0)
    finally:
        await p.stop()


async def _read(broker: KafkaBroker, kw: dict[str, Any], topic: str = SECRET) -> None:
    c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, request_timeout_ms=TIMEOUT_MS, **kw)
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        await c.getone()
    finally:
        await c.stop()


async def _admin_call(broker: KafkaBroker, kw: dict[str, Any], call: Callable[[AIOKafkaAdminClient], Any]) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_MS, **kw)
    await admin.start()
    try:
        return await call(admin)
    finally:
        await admin.close()


async def _describe(broker: KafkaBroker, kw: dict[str, Any]) -> Any:
    return await _admin_call(broker, kw, lambda a: a.list_topics())


async def _create(broker: KafkaBroker, kw: dict[str, Any], name: str) -> Any:
    return await _admin_call(broker, kw, lambda a: a.create_topics([NewTopic(name, 1, 1)]))


async def _delete(broker: KafkaBroker, kw: dict[str, Any], name: str = SECRET) -> Any:
    return await _admin_call(broker, kw, lambda a: a.delete_topics([name]))


async def _refused(coro: Coroutine[Any, Any, Any], timeout: float = 30) -> BaseException:
    """The operation raises (the broker closed, refused or never answered the connection), or gets nowhere
    before ``timeout`` (reading a topic the principal may not even see: the client waits for its metadata)."""
    try:
        result = await asyncio.wait_for(coro, timeout)
    except (TimeoutError, KafkaError, OSError) as e:
        return e
    raise AssertionError(f"the broker let the operation through: {result!r}")


# ----------------------------------------------------------------------------------- no valid credentials


@pytest.mark.parametrize(
    "who", ["anonymous plaintext", "anonymous TLS", "wrong password", "wrong admin password", "unknown user"]
)
async def test_a_client_without_valid_credentials_can_do_nothing(
    kafka_broker: KafkaBroker, topics: None, who: str
) -> None:
    kw = _intruders(kafka_broker)[who]
    before = await _admin_view(kafka_broker)
    new_topic = f"intruder-{uuid.uuid4().hex[:8]}"

    await _refused(_produce(kafka_broker, kw))
    await _refused(_read(kafka_broker, kw))
    await _refused(_describe(kafka_broker, kw))
    await _refused(_create(kafka_broker, kw, new_topic))
    await _refused(_delete(kafka_broker, kw))

    names, ends = await _admin_view(kafka_broker)
    assert new_topic not in names, "a topic was created"
    assert before[0] <= names, f"a topic was deleted: {before[0] - names}"
    grown = {
        tp: (before[1][tp], ends[tp])
        for tp in before[1]
        if ends.get(tp) != before[1][tp] and tp.topic != "_odc_readiness_probe"
    }
    assert not grown, f"records were written: {grown}"


# -------------------------------------------------------------------------------------- a commune principal


async def test_a_commune_can_write_the_input_topic_and_nothing_else(kafka_broker: KafkaBroker, topics: None) -> None:
    kw = kafka_broker.security(COMMUNE).producer_kwargs()

    # it may write the input topic: the record is there, as the admin reads it
    marker = uuid.uuid4().bytes
    p = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, enable_idempotence=True, acks="all", **kw)
    await p.start()
    try:
        md = await p.send_and_wait(INPUT, marker, partition=1)
    finally:
        await p.stop()
    c = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=None, **_admin_kwargs(kafka_broker))
    await c.start()
    try:
        tp = TopicPartition(INPUT, 1)
        c.assign([tp])
        c.seek(tp, md.offset)
        assert (await asyncio.wait_for(c.getone(), 20)).value == marker
    finally:
        await c.stop()

    # ... but not read it back, nor read the pipeline's other topics
    err = await _refused(_read(kafka_broker, kafka_broker.security(COMMUNE).client_kwargs(), INPUT))
    assert isinstance(err, TopicAuthorizationFailedError), err
    err = await _refused(_read(kafka_broker, kafka_broker.security(COMMUNE).client_kwargs(), SECRET), timeout=5)
    assert isinstance(err, TopicAuthorizationFailedError | asyncio.TimeoutError), err

    # ... nor join a consumer group
    g = AIOKafkaConsumer(
        INPUT,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id="odc-normalise",
        request_timeout_ms=TIMEOUT_MS,
        **kafka_broker.security(COMMUNE).client_kwargs(),
    )
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await asyncio.wait_for(g.start(), 30)
            await asyncio.wait_for(g.getone(), 30)
    finally:
        await g.stop()

    # ... nor write another topic
    for topic in OUTPUTS:
        err = await _refused(_produce(kafka_broker, kw, topic), timeout=6)
        assert isinstance(err, TopicAuthorizationFailedError | asyncio.TimeoutError), (topic, err)

    # ... it sees only the topic it may write
    assert set(await _describe(kafka_broker, kafka_broker.security(COMMUNE).client_kwargs())) == {INPUT}

    # ... and may neither create nor delete a topic (the broker answers TOPIC_AUTHORIZATION_FAILED, 29)
    new_topic = f"commune-{uuid.uuid4().hex[:8]}"
    created = await _create(kafka_broker, kafka_broker.security(COMMUNE).client_kwargs(), new_topic)
    assert [e[1] for e in created.topic_errors] == [TopicAuthorizationFailedError.errno]
    for victim in (INPUT, SECRET):
        deleted = await _delete(kafka_broker, kafka_broker.security(COMMUNE).client_kwargs(), victim)
        assert [e[1] for e in deleted.topic_error_codes] == [TopicAuthorizationFailedError.errno]
    names, _ = await _admin_view(kafka_broker)
    assert new_topic not in names and {INPUT, SECRET} <= names


# ------------------------------------------------------------------------------------ service principals

# (principal, a topic it must not write, a topic it must not read)
FORBIDDEN = [
    (SERVICE_USERS["ingest"], "odc.feature-changes", "odc.change-events"),
    (SERVICE_USERS["normalise"], "odc.dataset-versions", "odc.dataset-versions"),
    (SERVICE_USERS["publish"], "odc.change-events", "odc.change-events"),
]


@pytest.mark.parametrize(("user", "no_write", "no_read"), FORBIDDEN)
async def test_a_service_principal_is_refused_what_is_not_its_job(
    kafka_broker: KafkaBroker, topics: None, user: str, no_write: str, no_read: str
) -> None:
    kw = kafka_broker.security(user).producer_kwargs()
    err = await _refused(_produce(kafka_broker, kw, no_write), timeout=6)
    assert isinstance(err, TopicAuthorizationFailedError | asyncio.TimeoutError), err
    err = await _refused(_read(kafka_broker, kafka_broker.security(user).client_kwargs(), no_read), timeout=5)
    assert isinstance(err, TopicAuthorizationFailedError | asyncio.TimeoutError), err
    deleted = await _delete(kafka_broker, kafka_broker.security(user).client_kwargs(), no_write)
    assert [e[1] for e in deleted.topic_error_codes] == [TopicAuthorizationFailedError.errno]


# ------------------------------------------------------------------------------------------- quotas, sizes


async def _quota_of(broker: KafkaBroker, user: str) -> dict[str, float]:
    async def call(admin: AIOKafkaAdminClient) -> Any:
        return await admin._send_request(DescribeClientQuotasRequest([("user", 0, user)], True))

    resp = await _admin_call(broker, _admin_kwargs(broker), call)
    assert resp.error_code == 0, resp
    return {name: value for _entity, values in resp.entries for name, value in values}


@pytest.fixture
async def lowered_commune_quota(kafka_broker: KafkaBroker) -> AsyncIterator[float]:
    """The commune's quota lowered for one test (restored after), so throttling shows in seconds, not minutes."""
    low = 64 * 1024.0

    async def set_rate(rate: float) -> None:
        await _admin_call(kafka_broker, _admin_kwargs(kafka_broker), lambda a: set_producer_quotas(a, {COMMUNE: rate}))

    await set_rate(low)
    try:
        yield low
    finally:
        await set_rate(float(COMMUNE_PRODUCER_BYTE_RATE))


async def test_the_scripts_give_each_commune_a_producer_quota(kafka_broker: KafkaBroker) -> None:
    assert await _quota_of(kafka_broker, COMMUNE) == {"producer_byte_rate": float(COMMUNE_PRODUCER_BYTE_RATE)}
    for service_user in SERVICE_USERS.values():
        assert await _quota_of(kafka_broker, service_user) == {}  # the pipeline itself is not throttled


async def test_a_communes_flood_is_throttled_by_the_broker(
    kafka_broker: KafkaBroker, topics: None, lowered_commune_quota: float
) -> None:
    """Kafka measures a principal's rate over an ~10 s window and, above the quota, delays its next requests
    (KIP-219). 1 MiB at 64 KiB/s is over the quota once ~640 KiB went in; what remains is held back for
    about ``1 MiB / 64 KiB/s - 10 s = 6 s``. Unthrottled, 1 MiB over loopback takes well under a second, and
    a slow machine only adds time: the bound below can fail only if nobody throttles. The quota counts bytes as
    sent, after the producer's compression (zstd for every odc producer): random bytes, which do not shrink."""
    total, chunk = 1024 * 1024, 32 * 1024
    p = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap,
        acks="all",
        linger_ms=0,
        request_timeout_ms=60_000,
        **kafka_broker.security(COMMUNE).producer_kwargs(),
    )
    await p.start()
    try:
        started = time.monotonic()
        for _ in range(total // chunk):
            await p.send_and_wait(INPUT, os.urandom(chunk), partition=2)
        await p.send_and_wait(INPUT, b"last", partition=2)  # waits out the throttle of the request before it
        took = time.monotonic() - started
    finally:
        await p.stop()
    assert took >= 3.0, f"1 MiB at a 64 KiB/s quota went through in {took:.2f} s: the broker did not throttle"


async def test_record_sizes_agree_between_producers_and_broker(kafka_broker: KafkaBroker, topics: None) -> None:
    """services/contract/size_limits.py on the real broker: the largest record (1,000,000 B) fits one request
    of every odc producer; above the producers' max_request_size the producer refuses at once; a producer
    configured beyond it is refused by the broker's message.max.bytes."""
    largest = size_limits.MAX_RECORD_BYTES
    limit = size_limits.PRODUCER_MAX_REQUEST_BYTES
    ingest = kafka_broker.security(SERVICE_USERS["ingest"]).producer_kwargs()
    assert ingest["max_request_size"] == limit
    props = kafka_broker.server_properties()
    assert int(props["message.max.bytes"]) == size_limits.BROKER_MESSAGE_MAX_BYTES >= limit

    p = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all", request_timeout_ms=60_000, **ingest)
    await p.start()
    try:
        md = await p.send_and_wait(INPUT, b"r" * largest, key=b"k" * 120, partition=3)
        assert md.offset >= 0
        with pytest.raises(MessageSizeTooLargeError):
            await p.send_and_wait(INPUT, b"r" * (limit + 1), partition=3)
    finally:
        await p.stop()

    big = {**_admin_kwargs(kafka_broker), "max_request_size": 4 * limit}
    q = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all", request_timeout_ms=60_000, **big)
    await q.start()
    try:
        with pytest.raises(KafkaError):  # RecordTooLarge / MessageSizeTooLarge from the broker
            await q.send_and_wait(INPUT, b"r" * (size_limits.BROKER_MESSAGE_MAX_BYTES + 1024), partition=3)
    finally:
        await q.stop()


def test_the_generated_secrets_are_readable_by_their_owner_only(kafka_broker: KafkaBroker) -> None:
    access = kafka_broker.access.directory
    assert access.stat().st_mode & 0o777 == 0o700
    for f in (access / "credentials.json", access / "broker.p12", access / "ca.pem", kafka_broker.properties_path):
        assert f.stat().st_mode & 0o777 == 0o600, f"{f} is readable by others"
    props = kafka_broker.properties_path.read_text()
    assert "allow.everyone.if.no.acl.found=false" in props and "PLAINTEXT:PLAINTEXT" not in props
    assert "CLIENT:SASL_SSL" in props


async def test_ensure_topics_says_at_once_when_the_principal_may_not_create(
    kafka_broker: KafkaBroker, topics: None
) -> None:
    """`odc send` as a commune finds the input topic without creating it; a topic it may not create is an
    error naming the user, not a minute of retries."""
    commune = kafka_broker.security(COMMUNE)
    await ensure_topics(kafka_broker.bootstrap, [TopicSpec(INPUT, 6)], security=commune)  # exists: nothing to do
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="may not create"):
        await ensure_topics(kafka_broker.bootstrap, [TopicSpec(f"c-{uuid.uuid4().hex[:8]}", 1)], security=commune)
    assert time.monotonic() - started < 30  # the retry deadline is 60 s: an ACL refusal is not retried
