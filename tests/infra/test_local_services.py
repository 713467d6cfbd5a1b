"""Integration tests for deploy.local: a real Kafka broker and a real PostgreSQL 15 + PostGIS
cluster, each in a tmp dir on free ports (no Docker)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError

from deploy.local import REPO_ROOT
from deploy.local.kafka import KafkaBroker, ensure_kafka_jars
from deploy.local.ports import free_port, port_open
from deploy.local.postgres import PostgresCluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    b = KafkaBroker(tmp_path_factory.mktemp("kafka"), free_port(), free_port())
    try:
        b.start()
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    c = PostgresCluster(tmp_path_factory.mktemp("pg"), free_port())
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _admin(broker: KafkaBroker) -> dict[str, object]:
    """The broker refuses anonymous clients: these tests act as its admin principal."""
    return broker.admin_security().client_kwargs()


async def _create_topic(broker: KafkaBroker, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, **_admin(broker))
    await admin.start()
    try:
        resp = await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        assert [e[1] for e in resp.topic_errors] == [0], resp
        for _ in range(50):
            if name in await admin.list_topics():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"topic {name} not listed")
    finally:
        await admin.close()


# ----------------------------------------------------------------------------------------- kafka


def test_jars_present_and_no_maven_rerun() -> None:
    t0 = time.monotonic()
    libs = ensure_kafka_jars()
    assert time.monotonic() - t0 < 1.0  # already resolved: no mvn run
    assert libs == REPO_ROOT / ".local" / "kafka" / "libs"
    names = {p.name for p in libs.glob("*.jar")}
    assert any(n.startswith("kafka_2.13-4.1.") for n in names)
    assert "slf4j-api-1.7.36.jar" in names
    assert any(n.startswith("log4j-slf4j-impl-") for n in names)


def test_broker_started_and_logging(broker: KafkaBroker) -> None:
    assert broker.is_running()
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    log = broker.log_path.read_text()
    assert "Kafka Server started" in log
    props = broker.properties_path.read_text()
    assert "auto.create.topics.enable=false" in props
    assert "share.coordinator.state.topic.replication.factor=1" in props
    assert (broker.data_dir / "logs" / "server.log").is_file()


async def test_kafka_round_trip(broker: KafkaBroker) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    await _create_topic(broker, topic, 3)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, **_admin(broker), acks="all")
    await producer.start()
    try:
        sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(30)}
        for k, v in sent.items():
            await producer.send_and_wait(topic, v, key=k)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, **_admin(broker), group_id=f"g-{topic}", auto_offset_reset="earliest"
    )
    await consumer.start()
    got: dict[bytes, bytes] = {}
    try:
        deadline = time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    assert m.key is not None and m.value is not None
                    got[m.key] = m.value
    finally:
        await consumer.stop()
    assert got == sent


async def test_auto_create_disabled(broker: KafkaBroker) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, **_admin(broker), request_timeout_ms=3000)
    await producer.start()
    try:
        # no auto-creation: metadata for the topic never arrives, the send fails
        with pytest.raises((UnknownTopicOrPartitionError, KafkaTimeoutError, asyncio.TimeoutError)):
            await asyncio.wait_for(producer.send_and_wait(missing, b"x"), 8)
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, **_admin(broker))
    await admin.start()
    try:
        assert missing not in await admin.list_topics()
    finally:
        await admin.close()


async def test_sync_api_inside_event_loop(broker: KafkaBroker) -> None:
    # start()/round_trip() are sync; they must also work when called from a running loop
    broker.round_trip()


async def test_consumer_group_rebalance(broker: KafkaBroker) -> None:
    topic = f"rb-{uuid.uuid4().hex[:8]}"
    await _create_topic(broker, topic, 4)
    group = f"g-{topic}"

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            **_admin(broker),
            group_id=group,
            heartbeat_interval_ms=300,
            session_timeout_ms=6000,
            auto_offset_reset="earliest",
        )

    async def poll_until(cs: list[AIOKafkaConsumer], pred, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, [sorted(c.assignment()) for c in cs]
            await asyncio.gather(*(c.getmany(timeout_ms=200) for c in cs))

    all_tps = {TopicPartition(topic, p) for p in range(4)}
    a = consumer()
    await a.start()
    b = consumer()
    try:
        await poll_until([a], lambda: a.assignment() == all_tps)
        await b.start()
        await poll_until(
            [a, b],
            lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2,
        )
        assert a.assignment() | b.assignment() == all_tps
        assert not a.assignment() & b.assignment()
        # second consumer leaves -> the first takes everything back
        await b.stop()
        await poll_until([a], lambda: a.assignment() == all_tps)
    finally:
        await b.stop()
        await a.stop()


def test_handles_from_another_process(broker: KafkaBroker, cluster: PostgresCluster) -> None:
    code = (
        "import json,sys; from pathlib import Path;"
        "from deploy.local.kafka import KafkaBroker; from deploy.local.postgres import PostgresCluster;"
        "b=KafkaBroker.from_data_dir(Path(sys.argv[1])); c=PostgresCluster.from_data_dir(Path(sys.argv[2]));"
        "print(json.dumps([b.is_running(), b.bootstrap, c.is_running(), c.dsn]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(broker.data_dir), str(cluster.data_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == [True, broker.bootstrap, True, cluster.dsn]


def test_broker_stop_kill_restart(tmp_path: Path) -> None:
    b = KafkaBroker(tmp_path / "k", free_port(), free_port())
    try:
        b.start()
        b.round_trip()
        pid = b.pid()
        b.kill()
        assert not b.is_running()
        assert not port_open(b.port)
        assert pid is not None
        b.start()  # after SIGKILL: same storage, no reformat
        b.round_trip()
        # a handle built in "another process" stops it
        other = KafkaBroker.from_data_dir(b.data_dir)
        assert other.is_running()
        other.stop()
        assert not other.is_running()
        assert not b.is_running()
        other.stop()  # idempotent
        b.kill()  # idempotent when down
    finally:
        b.kill()


# -------------------------------------------------------------------------------------- postgres


def test_postgis(cluster: PostgresCluster) -> None:
    assert cluster.is_running()
    assert cluster.dsn == f"postgresql://odc:odc@127.0.0.1:{cluster.port}/odc"
    with psycopg.connect(cluster.dsn) as conn:
        (version,) = conn.execute("SELECT postgis_full_version()").fetchone()  # type: ignore[misc]
        assert "POSTGIS=" in version and "PROJ=" in version
        # Lyon (Hôtel de Ville) WGS84 -> Lambert-93 needs working PROJ data
        x, y = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM ST_Transform(ST_SetSRID(ST_MakePoint(4.8357, 45.7676), 4326), 2154) p"
        ).fetchone()  # type: ignore[misc]
        assert 840_000 < x < 850_000 and 6_515_000 < y < 6_525_000
        (listen,) = conn.execute("SHOW listen_addresses").fetchone()  # type: ignore[misc]
        assert listen == "127.0.0.1"
        (sb,) = conn.execute("SHOW shared_buffers").fetchone()  # type: ignore[misc]
        assert sb == "256MB"


def test_postgres_stop_kill_restart(tmp_path: Path) -> None:
    c = PostgresCluster(tmp_path / "p", free_port())
    try:
        c.start()
        with psycopg.connect(c.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int primary key, g geometry(Point, 4326))")
            conn.execute("INSERT INTO t VALUES (1, ST_SetSRID(ST_MakePoint(4.8, 45.7), 4326))")
        c.kill()
        assert not c.is_running()
        assert not port_open(c.port)
        c.start()  # crash recovery
        with psycopg.connect(c.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
        other = PostgresCluster.from_data_dir(c.data_dir)
        assert other.is_running()
        other.stop()
        assert not c.is_running()
        other.stop()  # idempotent
        c.start()  # restart after clean stop
        with psycopg.connect(c.dsn) as conn:
            assert conn.execute("SELECT postgis_full_version()").fetchone() is not None
        c.stop(mode="immediate")
        assert not c.is_running()
    finally:
        c.kill()
