"""What compressing the batches costs and saves on an odc topic: the broker's CPU to take them in and hand them
out, and the producer's and consumer's CPU (issue #16, fifth session).

Starts a throwaway broker (SASL_SSL, as every odc client reaches it), then for each codec: a topic of its own,
``--messages`` real values produced (a FeatureChangeBatch of ``--per-message`` public-toilet changes, as the
normaliser's relay sends on odc.feature-changes; or, with ``--input``, the bulk change events ``odc send`` sends
on odc.change-events), then consumed by one consumer from the start. CPU seconds of the broker (its process
tree) and of this process (produce, consume), best of ``--repeat``, per change. Usage::

    .venv/bin/python -m benchmarks.topic_compression --codecs none,lz4,zstd
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks import pipeline_throughput as pt
from benchmarks.profile_services import tree_cpu_seconds
from benchmarks.stack import BenchStack
from deploy.local.kafka import KafkaBroker
from deploy.local.ports import free_port
from services.contract.codecs import Codecs
from services.contract.messages import ChangeKind, FeatureChange, FeatureState
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics


def batch_values(per_message: int, messages: int, input_form: bool) -> list[bytes]:
    codecs = Codecs()
    events = pt.build_events("public_toilets", per_message * messages, seq=1)
    now = datetime.now(UTC)
    out = []
    for m in range(messages):
        part = events[m * per_message : (m + 1) * per_message]
        if input_form:
            out.append(codecs.encode_change_event_batch(part[0].dataset, part[0].commune, part))
            continue
        changes = [
            FeatureChange(
                m * per_message + i,
                e.event_id,
                e.dataset,
                e.commune,
                e.feature_id,
                ChangeKind.CREATED,
                1,
                e.occurred_at,
                now,
                None,
                FeatureState(
                    e.geometry.value.decode() if e.geometry else None,
                    json.dumps(e.attributes, ensure_ascii=False),
                    f"{i:064x}",
                ),
            )
            for i, e in enumerate(part)
        ]
        out.append(codecs.encode_feature_change_batch("public_toilets", changes))
    return out


async def run_codec(broker: KafkaBroker, topic: str, codec: str, values: list[bytes]) -> dict[str, float]:
    security = broker.admin_security()
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, 1)], security=security)
    pid = broker.pid()
    assert pid is not None
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=0,
        max_batch_size=1 << 20,
        compression_type=None if codec == "none" else codec,
        **security.producer_kwargs(),
    )
    await producer.start()
    try:
        b0, p0 = tree_cpu_seconds(pid), time.process_time()
        for v in values:  # as the relay sends: each batch acknowledged before the next
            await producer.send_and_wait(topic, v, key=b"public_toilets")
        produce_cpu, broker_in = time.process_time() - p0, tree_cpu_seconds(pid) - b0
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=8 << 20,
        max_partition_fetch_bytes=4 << 20,
        **security.client_kwargs(),
    )
    await consumer.start()
    try:
        b0, p0 = tree_cpu_seconds(pid), time.process_time()
        got = 0
        while got < len(values):
            batch = await consumer.getmany(timeout_ms=1000)
            got += sum(len(msgs) for msgs in batch.values())
        consume_cpu, broker_out = time.process_time() - p0, tree_cpu_seconds(pid) - b0
    finally:
        await consumer.stop()
    return {"produce": produce_cpu, "consume": consume_cpu, "broker_in": broker_in, "broker_out": broker_out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codecs", default="none,lz4,zstd")
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--per-message", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--input", action="store_true", help="bulk change events (odc.change-events) instead")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    values = batch_values(args.per_message, args.messages, args.input)
    changes = args.per_message * args.messages
    print(f"{len(values)} messages of {sum(map(len, values)) / len(values) / 1024:.0f} KiB, {changes} changes")
    stack = BenchStack()
    stack.broker = KafkaBroker(stack.root / "kafka", free_port(), free_port(), heap="1g")
    stack.broker.start(timeout=120)
    results: dict[str, Any] = {}
    try:
        asyncio.run(run_codec(stack.broker, "warm-up", "none", values[:5]))
        for n in range(args.repeat):
            for codec in args.codecs.split(","):
                r = asyncio.run(run_codec(stack.broker, f"t-{codec}-{n}", codec, values))
                best = results.setdefault(codec, r)
                for k, v in r.items():
                    best[k] = min(best[k], v)
        for codec, r in results.items():
            per = {k: round(v / changes * 1e6, 1) for k, v in r.items()}
            print(f"  {codec:>5}: µs per change {per}, all four {round(sum(per.values()), 1)}")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
