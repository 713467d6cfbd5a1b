"""What the Kafka broker alone spends to receive a steady stream of change events (no service running).

Starts a throwaway broker, creates the input topic, measures the broker's CPU idle, then while the
benchmark's load generator sends real toilet events at ``--rate`` events/s with each ``--linger-ms`` value.
Findings: docs/performance.md. Usage::

    .venv/bin/python -m benchmarks.broker_cost --rate 1000 --linger-ms 5,20,50
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks import pipeline_throughput as pt
from benchmarks.profile_services import tree_cpu_seconds
from benchmarks.stack import BenchStack
from deploy.local.kafka import KafkaBroker
from deploy.local.ports import free_port
from services.contract.codecs import Codecs
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--linger-ms", default="5,20,50")
    args = parser.parse_args()
    stack = BenchStack()
    stack.broker = KafkaBroker(stack.root / "kafka", free_port(), free_port(), heap="1g")
    stack.broker.start(timeout=120)
    try:
        broker = stack.broker
        asyncio.run(ensure_topics(broker.bootstrap, [TopicSpec(pt.INPUT_TOPIC, 6)], security=broker.admin_security()))
        codecs = Codecs()
        values = [
            (e.commune.encode(), codecs.encode_change_event(e), [])
            for e in pt.build_events("public_toilets", args.events, seq=1)
        ]
        asyncio.run(pt.produce(broker, values[:100]))  # connections and JIT warm
        pid = stack.broker.pid()
        assert pid is not None
        time.sleep(3)
        c0, t0 = tree_cpu_seconds(pid), time.monotonic()
        time.sleep(5)
        print(f"broker idle: {(tree_cpu_seconds(pid) - c0) / (time.monotonic() - t0):.2f} core")
        for linger in (int(x) for x in args.linger_ms.split(",")):
            pt.LINGER_MS = linger
            c0, t0 = tree_cpu_seconds(pid), time.monotonic()
            asyncio.run(pt.produce(broker, values, rate=args.rate))
            cores = (tree_cpu_seconds(pid) - c0) / (time.monotonic() - t0)
            print(f"broker receiving {args.rate:.0f} ev/s, linger {linger} ms: {cores:.2f} core")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
