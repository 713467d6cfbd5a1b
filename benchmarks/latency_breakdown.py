"""Where a change's time goes at a steady rate: send → applied → relayed → received → version → notification.

Starts a throwaway stack, warms it with a bulk run, then sends toilets at ``--rate`` events/s for
``--seconds`` and reads each stage's timestamp from the tables (normaliser's ``applied_at``, the publisher's
``received_at``, the version's ``published_at``, the notification outbox's
``sent_at``; PostgreSQL's ``now()`` is the transaction's start; the "committed" stages are the commit times of
the rows' writers, with ``track_commit_timestamp``). Since normalise 0006 the feature-change relay
keeps a cursor and writes no time per row, so "relayed to Kafka" is read from the topic instead: each message's
timestamp on odc.feature-changes (CreateTime, set by the relay's producer when it sends). Also prints how
long after falling due (oldest change received + max delay) each version was cut, the CPU each process tree used
during the steady stage and the top PostgreSQL statements. Findings: docs/performance.md. Usage::

    .venv/bin/python -m benchmarks.latency_breakdown --rate 1000 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import time
from dataclasses import replace

import psycopg
from aiokafka import AIOKafkaConsumer

from benchmarks import pipeline_throughput as pt
from benchmarks.profile_services import PY_SPY, ROOT, cpu_roots, summarise, tree_cpu_seconds
from benchmarks.stack import BenchStack
from deploy.local.kafka import KafkaBroker
from services.contract.codecs import Codecs

FEATURE_CHANGES_TOPIC = "odc.feature-changes"
PROFILES = ROOT / "build/profiles"
STAGES = (
    "applied (normaliser)",
    "committed (normaliser)",
    "relayed to Kafka",
    "received (publisher)",
    "committed (publisher)",
    "version cut",
    "notification relayed",
)


async def relayed_times(broker: KafkaBroker, event_ids: set[str]) -> dict[str, float]:
    """Each event's feature-change message timestamp (s since the epoch) on odc.feature-changes: when the
    normaliser's relay sent it (the producer's CreateTime). Reads the topic from the start, once."""
    codecs = Codecs()
    consumer = AIOKafkaConsumer(
        FEATURE_CHANGES_TOPIC,
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **broker.admin_security().client_kwargs(),
    )
    await consumer.start()
    found: dict[str, float] = {}
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=2000, max_records=5000)
            if not batch:
                return found
            for records in batch.values():
                for r in records:
                    for change in codecs.decode_feature_changes(r.value):
                        if change.event_id in event_ids:
                            found.setdefault(change.event_id, r.timestamp / 1000)
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-up", type=int, default=5000, help="bulk events sent first")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-delay", default="0.25", help="publisher max delay (s)")
    parser.add_argument("--cut-interval", default="0.2", help="publisher cut check interval (s)")
    parser.add_argument(
        "--profile", default="", help="services to record with py-spy during the steady stage, e.g. normalise,publish"
    )
    args = parser.parse_args()
    stack = BenchStack()
    env = {"ODC_PUBLISH_MAX_DELAY_SECONDS": args.max_delay, "ODC_PUBLISH_CUT_INTERVAL_SECONDS": args.cut_interval}
    stack.start(
        extra_env=env,
        pg_settings={
            "shared_preload_libraries": "'pg_stat_statements'",
            "pg_stat_statements.track": "all",
            "track_commit_timestamp": "on",  # the "committed" stages: each row's writer's commit time
        },
    )
    try:
        assert stack.db is not None and stack.broker is not None
        with psycopg.connect(stack.db.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        print("warm-up:", pt.run_throughput(stack, "public_toilets", args.warm_up), flush=True)
        n = int(args.rate * args.seconds)
        events = [
            replace(e, feature_id=f"{e.feature_id}-steady")
            for e in pt.build_events("public_toilets", n, seq=time.time_ns() // 1000)
        ]
        values = pt.signed_values(stack, events)
        stack.sql("SELECT pg_stat_statements_reset() IS NULL")
        roots = cpu_roots(stack)
        cpu0 = {k: tree_cpu_seconds(p) for k, p in roots.items()}
        me0 = resource.getrusage(resource.RUSAGE_SELF)
        wall_offset = time.time() - time.monotonic()
        spies = {
            name: subprocess.Popen(
                [
                    str(PY_SPY),
                    "record",
                    "--pid",
                    str(stack.services[name].pid()),
                    "--subprocesses",
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(PROFILES / f"steady-{name}.txt"),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for name in filter(None, args.profile.split(","))
        }
        PROFILES.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        sent = asyncio.run(pt.produce(stack.broker, values, rate=args.rate))
        elapsed = time.monotonic() - t0
        me1 = resource.getrusage(resource.RUSAGE_SELF)
        cores = {k: (tree_cpu_seconds(p) - cpu0[k]) / elapsed for k, p in roots.items()}
        cores["load generator"] = (me1.ru_utime + me1.ru_stime - me0.ru_utime - me0.ru_stime) / elapsed
        print(f"CPU during the steady {elapsed:.1f} s, in cores:", {k: round(v, 2) for k, v in cores.items()})
        for name, spy in spies.items():
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy.wait(timeout=60)
            print(summarise(PROFILES / f"steady-{name}.txt", 25))
        time.sleep(10)
        ids = [e.event_id for e in events]
        relayed = asyncio.run(relayed_times(stack.broker, set(ids)))
        rows = stack.sql(
            "SELECT o.event_id, extract(epoch from o.applied_at), "
            "extract(epoch from pg_xact_commit_timestamp(o.xmin)), NULL, "  # relayed: read from the topic below
            "extract(epoch from c.received_at), extract(epoch from (SELECT pg_xact_commit_timestamp(ce.xmin) "
            "FROM change_log_entry ce WHERE ce.change_id = c.change_id)), "
            "extract(epoch from v.published_at), extract(epoch from nb.sent_at) "
            "FROM feature_change_outbox o JOIN change_log c ON c.change_id = o.change_id "
            "JOIN dataset_version v ON v.dataset = c.dataset AND v.version = c.version "
            "JOIN notification_outbox nb ON nb.dataset = v.dataset AND nb.version = v.version "
            "WHERE o.event_id = ANY(%s)",
            ids,
        )
        sent_wall = {e: wall_offset + t for e, t in zip(ids, sent, strict=True)}
        rows = [(*r[:3], relayed.get(str(r[0])), *r[4:]) for r in rows]
        print(f"{len(rows)} of {n} events reached a notification; time since sent:")
        for i, name in enumerate(STAGES):
            d = sorted(float(r[i + 1]) - sent_wall[str(r[0])] for r in rows if r[i + 1] is not None)  # type: ignore[arg-type]
            if d:
                p99 = d[min(len(d) - 1, int(0.99 * len(d)))]
                print(f"  {name:22s} p50 {statistics.median(d) * 1000:6.0f} ms   p99 {p99 * 1000:6.0f} ms")
        late = [
            float(r[0]) * 1000  # type: ignore[arg-type]
            for r in stack.sql(
                "SELECT extract(epoch from v.published_at - min(c.received_at)) - %s FROM change_log c "
                "JOIN dataset_version v ON v.dataset = c.dataset AND v.version = c.version "
                "WHERE c.change_id IN (SELECT change_id FROM feature_change_outbox WHERE event_id = ANY(%s)) "
                "GROUP BY v.version, v.published_at",
                float(args.max_delay),
                ids,
            )
        ]
        if late:  # when the cutter acted after the version fell due (its oldest change's receipt + max delay)
            print(f"  {len(late)} versions cut, p50 {statistics.median(late):.0f} ms after falling due")
        print("PostgreSQL statements by total time during the steady stage:")
        for calls, total, mean, query in stack.sql(
            "SELECT calls, total_exec_time, mean_exec_time, regexp_replace(query, '\\s+', ' ', 'g') "
            "FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12"
        ):
            print(f"  {calls:6d} calls {float(total) / 1000:6.2f} s  mean {float(mean):6.2f} ms  {str(query)[:100]}")  # type: ignore[arg-type]
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
