"""The input topic through the standard clients a commune's IT would use, as the commune principal over
SASL_SSL/SCRAM with the broker's CA, sending events signed as `odc send` signs them (docs/ingest.md, "Standard
Kafka clients"):

- the official Java client (kafka-clients 4.1.2) with its default producer settings (idempotent, acks=all,
  batching, murmur2 partitioner), uncompressed and with each codec;
- librdkafka, through confluent-kafka's Python producer (librdkafka 2.16 in its wheel: the C client kcat, Vector
  and the Go and .NET clients are built on; CRC32 partitioner, its own codecs).

Signed events are applied, in sequence order even when two clients put one feature on two partitions; garbage,
null values and unsigned events are rejected with their reason and the stream keeps flowing."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
import zlib
from collections.abc import Callable, Sequence

import pytest
from aiokafka.partitioner import murmur2
from confluent_kafka import Producer

from deploy.local.kafka import KafkaBroker, ensure_kafka_jars
from deploy.local.kafka_access import COMMUNE_USERS
from services.contract.event_signature import SigningKey, sign
from services.infrastructure.database import make_engine
from services.infrastructure.signing_keys import issue_signing_key
from services.ingest.adapters.kafka_event_publisher import bulk_key, event_key
from tests.integration.java_clients import client_properties, compile_client
from tests.integration.pipeline_harness import TOPICS, Pipeline, toilet_event

pytestmark = pytest.mark.integration

COMMUNE = COMMUNE_USERS[0]
CODECS = ("none", "zstd", "lz4", "snappy", "gzip")  # "none": the Java client's default
INPUT_PARTITIONS = 6
GARBAGE = b"\x00not avro\xff"
Header = tuple[str, bytes | None]
Record = tuple[bytes | None, bytes | None, Sequence[Header]]  # key, value, headers


@pytest.fixture(scope="module")
def commune_key(pipeline: Pipeline) -> SigningKey:
    async def go() -> SigningKey:
        engine = make_engine(pipeline.db.dsn, pool_size=1)
        try:
            return (await issue_signing_key(engine, "69266", "standard Kafka clients")).as_signing_key()
        finally:
            await engine.dispose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def java_send(
    kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Sequence[Record], str], list[tuple[int, int]]]:
    """Compile StdinProducer.java once; the returned function sends records with it, compressed with a codec, as
    the commune, and returns each record's (partition, offset)."""
    libs, out = ensure_kafka_jars(), tmp_path_factory.mktemp("java")
    jars = [next(libs.glob(f"{name}-*.jar")) for name in ("kafka-clients", "slf4j-api", "zstd-jni", "lz4-java")]
    jars.append(next(libs.glob("snappy-java-*.jar")))
    java = compile_client("StdinProducer.java", jars[:1], out)

    def send(records: Sequence[Record], codec: str) -> list[tuple[int, int]]:
        def hexa(b: bytes | None) -> str:
            return "-" if b is None else b.hex()

        compression = "" if codec == "none" else f"compression.type={codec}\n"
        settings = client_properties(kafka_broker, COMMUNE, out / f"{codec}.properties", compression)
        lines = [" ".join([hexa(k), hexa(v), *(f"{n}:{hexa(x)}" for n, x in hs)]) for k, v, hs in records]
        done = subprocess.run(
            [java, "-cp", ":".join(map(str, [*jars, out])), "StdinProducer", str(settings), TOPICS["input"]],
            input="\n".join(lines),
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (done.stdout, done.stderr[-2000:])
        return [(int(p), int(o)) for p, o in (line.split() for line in done.stdout.splitlines())]

    return send


def librdkafka_send(broker: KafkaBroker, records: Sequence[Record], codec: str = "zstd") -> list[tuple[int, int]]:
    """librdkafka's producer with its defaults (CRC32 "consistent_random" partitioner, not idempotent), compressed
    with ``codec``, as the commune; each record's (partition, offset)."""
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": COMMUNE,
            "sasl.password": broker.access.passwords[COMMUNE],
            "ssl.ca.location": str(broker.access.ca_file),
            "compression.type": codec,
        }
    )
    delivered: dict[int, tuple[int, int] | str] = {}
    for i, (key, value, headers) in enumerate(records):

        def report(err: object, msg: object, i: int = i) -> None:
            delivered[i] = str(err) if err is not None else (msg.partition(), msg.offset())  # type: ignore[attr-defined]

        producer.produce(TOPICS["input"], value=value, key=key, headers=list(headers), on_delivery=report)
    assert producer.flush(30) == 0, "librdkafka could not deliver within 30 s"
    out = [delivered[i] for i in range(len(records))]
    assert all(isinstance(d, tuple) for d in out), out
    return out  # type: ignore[return-value]


def signed(values: Sequence[bytes], key: SigningKey) -> list[list[Header]]:
    return [list(sign(v, key)) for v in values]


def stored(p: Pipeline, feature_id: str) -> tuple[int, str] | None:
    rows = p.sql(
        "SELECT sequence, attributes->>'adresse' FROM canonical_feature "
        "WHERE dataset = 'public_toilets' AND commune = '69266' AND feature_id = %s AND NOT deleted",
        feature_id,
    )
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


def test_the_java_client_with_default_settings_and_every_codec(
    pipeline: Pipeline,
    commune_key: SigningKey,
    java_send: Callable[[Sequence[Record], str], list[tuple[int, int]]],
) -> None:
    base = 700_000 + uuid.uuid4().int % 10_000 * 10_000
    before = pipeline.metric("normalise", "odc_events_received_total")
    # first what must be refused: garbage, a null value (a Kafka tombstone), an unsigned event, no key at all
    unsigned = toilet_event(str(base + 9_999), seq=1)
    bad = java_send(
        [
            (b"k", GARBAGE, signed([GARBAGE], commune_key)[0]),
            (b"k", None, []),
            (event_key(unsigned), pipeline.codecs.encode_change_event(unsigned), []),
        ],
        "none",
    )
    expected: dict[str, tuple[int, str]] = {}
    for i, codec in enumerate(CODECS):  # then each codec: a feature's two events, a bulk message, a keyless event
        single = [toilet_event(str(base + i), seq=s, adresse=f"java {codec} {s}") for s in (1, 2)]
        in_bulk = toilet_event(str(base + 5 + i), seq=1, adresse=f"java bulk {codec}")
        bulk = pipeline.codecs.encode_change_event_batch("public_toilets", "69266", [in_bulk])
        values = [pipeline.codecs.encode_change_event(e) for e in single]
        headers = signed([*values, bulk], commune_key)
        keyless = toilet_event(f"{base + i}-nokey", seq=1, adresse=f"java keyless {codec}")
        keyless_value = pipeline.codecs.encode_change_event(keyless)
        java_send(
            [
                (event_key(single[0]), values[0], headers[0]),
                (event_key(single[1]), values[1], headers[1]),
                (bulk_key("public_toilets", "69266"), bulk, headers[2]),
                (None, keyless_value, signed([keyless_value], commune_key)[0]),
            ],
            codec,
        )
        expected |= {
            single[0].feature_id: (2, f"java {codec} 2"),
            in_bulk.feature_id: (1, f"java bulk {codec}"),
            keyless.feature_id: (1, f"java keyless {codec}"),
        }
    pipeline.settle("public_toilets", before, 3 + 4 * len(CODECS))
    assert {f: stored(pipeline, f) for f in expected} == expected
    reasons = [refused[0] if (refused := pipeline.rejection_at(*at)) else None for at in bad]
    assert reasons == ["undecodable", "undecodable", "unauthenticated"]
    assert stored(pipeline, unsigned.feature_id) is None


def test_librdkafka_with_every_codec_and_the_same_feature_on_two_partitions(
    pipeline: Pipeline, kafka_broker: KafkaBroker, commune_key: SigningKey
) -> None:
    # a feature whose key CRC32 (librdkafka) and murmur2 (aiokafka, the push API, the Java client) put apart
    fid = next(
        f
        for f in (str(800_000 + uuid.uuid4().int % 100_000 + n) for n in range(50))
        if zlib.crc32(k := f"public_toilets/69266/{f}".encode()) % INPUT_PARTITIONS
        != (murmur2(k) & 0x7FFFFFFF) % INPUT_PARTITIONS
    )
    key = f"public_toilets/69266/{fid}".encode()
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.produce_events([toilet_event(fid, seq=3, adresse="aiokafka 3")], key=commune_key)
    garbage = GARBAGE + uuid.uuid4().bytes
    pipeline.produce([garbage], [key])  # its rejection tells the partition murmur2 chose
    (crc_at,) = librdkafka_send(kafka_broker, [(key, garbage, [])])  # ... and librdkafka's
    assert crc_at[0] == zlib.crc32(key) % INPUT_PARTITIONS
    pipeline.settle("public_toilets", before, 3)

    older = pipeline.codecs.encode_change_event(toilet_event(fid, seq=2, adresse="librdkafka 2, older"))
    newer = pipeline.codecs.encode_change_event(toilet_event(fid, seq=4, adresse="librdkafka 4"))
    librdkafka_send(kafka_broker, [(key, older, signed([older], commune_key)[0])])
    librdkafka_send(kafka_broker, [(key, newer, signed([newer], commune_key)[0])])
    expected = {fid: (4, "librdkafka 4")}  # the older event, on the other partition, ends stale
    for codec in CODECS:
        keyless = toilet_event(f"{fid}-{codec}", seq=1, adresse=f"librdkafka {codec}")
        v = pipeline.codecs.encode_change_event(keyless)
        librdkafka_send(kafka_broker, [(None, v, [*signed([v], commune_key)[0], ("x-empty", None)])], codec)
        expected[keyless.feature_id] = (1, f"librdkafka {codec}")
    pipeline.settle("public_toilets", before, 5 + len(CODECS))
    assert {f: stored(pipeline, f) for f in expected} == expected
    partitions = pipeline.sql(
        "SELECT source_partition FROM rejection WHERE reason = 'undecodable' AND original = %s", garbage
    )
    assert sorted(p for (p,) in partitions) == sorted(
        [zlib.crc32(key) % INPUT_PARTITIONS, (murmur2(key) & 0x7FFFFFFF) % INPUT_PARTITIONS]
    )
