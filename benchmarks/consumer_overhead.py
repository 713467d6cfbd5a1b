"""What consuming alone costs: faust ``take_events`` (as the services use it) against a plain aiokafka
``getmany`` loop, on the same topic, doing nothing with the messages. Evidence for docs/performance.md:
the per-event CPU of the stream library sets a ceiling on the whole pipeline.

    .venv/bin/python -m benchmarks.consumer_overhead --events 50000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from deploy.local.kafka import KafkaBroker
from deploy.local.ports import free_port

TOPIC = "bench.consumer-overhead"
ROOT = Path(__file__).resolve().parents[1]


async def produce(broker: KafkaBroker, n: int, size: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    bootstrap, auth = broker.bootstrap, broker.admin_security().client_kwargs()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **auth)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=6, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20, **auth)
    await producer.start()
    try:
        value = os.urandom(size)
        futures = [await producer.send(TOPIC, value=value, key=str(i).encode()) for i in range(n)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def aiokafka_consume(broker: KafkaBroker, n: int) -> tuple[float, float]:
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=broker.bootstrap, group_id="bench-aiokafka", auto_offset_reset="earliest",
        enable_auto_commit=False, **broker.admin_security().client_kwargs(),
    )  # fmt: skip
    await consumer.start()
    try:
        seen, cpu0, t0 = 0, time.process_time(), time.perf_counter()
        while seen < n:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            seen += sum(len(v) for v in batches.values())
            if batches:
                await consumer.commit()
        return time.process_time() - cpu0, time.perf_counter() - t0
    finally:
        await consumer.stop()


FAUST_WORKER = """
import os, sys, time, faust
import ssl
bootstrap, n, out = os.environ["B"], int(os.environ["N"]), os.environ["OUT"]
creds = faust.SASLCredentials(username=os.environ["U"], password=os.environ["P"], mechanism="SCRAM-SHA-512",
    ssl_context=ssl.create_default_context(cafile=os.environ["CA"]))
app = faust.App("bench-faust", broker=f"kafka://{bootstrap}", broker_credentials=creds, store="memory://",
    value_serializer="raw",
    key_serializer="raw", consumer_auto_offset_reset="earliest", web_enabled=False, datadir=out + ".d",
    broker_commit_interval=1.0)
topic = app.topic("__TOPIC__", value_serializer="raw", key_serializer="raw")
state = {"seen": 0, "cpu0": None, "t0": None}

@app.agent(topic, concurrency=1)
async def consume(stream):
    async for events in stream.take_events(1000, within=0.2):
        if state["cpu0"] is None:
            state["cpu0"], state["t0"] = time.process_time(), time.perf_counter()
        state["seen"] += len(events)
        if state["seen"] >= n:
            with open(out, "w") as f:
                f.write(f"{time.process_time() - state['cpu0']} {time.perf_counter() - state['t0']}")
            os._exit(0)

app.main()
""".replace("__TOPIC__", TOPIC)


def faust_consume(broker: KafkaBroker, n: int) -> tuple[float, float]:
    admin = broker.admin_security()
    work = Path(tempfile.mkdtemp(prefix="odc-faust-bench-"))
    script, out = work / "worker.py", work / "result.txt"
    script.write_text(FAUST_WORKER)
    proc = subprocess.run(
        [sys.executable, str(script), "worker", "-l", "warn"],
        cwd=work, capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "B": broker.bootstrap, "N": str(n), "OUT": str(out), "U": admin.username,
             "P": admin.password.get_secret_value(), "CA": str(admin.ssl_cafile)},
    )  # fmt: skip
    if not out.exists():
        raise RuntimeError(f"faust worker failed: {proc.stderr[-2000:]}")
    cpu, wall = (float(x) for x in out.read_text().split())
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=400, help="bytes per message (a change event is ~400)")
    args = parser.parse_args()
    broker = KafkaBroker(Path(tempfile.mkdtemp(prefix="odc-bench-")) / "kafka", free_port(), free_port(), heap="1g")
    broker.start(timeout=120)
    try:
        asyncio.run(produce(broker, args.events, args.size))
        a_cpu, a_wall = asyncio.run(aiokafka_consume(broker, args.events))
        f_cpu, f_wall = faust_consume(broker, args.events)
    finally:
        broker.stop()
    n = args.events
    print("| consumer | CPU per event | events/s (wall) |\n|---|---|---|")
    print(f"| aiokafka getmany (1,000 per batch) | {1e6 * a_cpu / n:.0f} us | {n / a_wall:,.0f} |")
    print(f"| faust take_events(1000, within=0.2) | {1e6 * f_cpu / n:.0f} us | {n / f_wall:,.0f} |")


if __name__ == "__main__":
    main()
