"""Profile the services while they ingest a throughput run (issue #7: profile before optimising).

Starts a throwaway real stack, sends N signed events of one dataset, and records each service with py-spy
(sampling, native frames off) from the first send until the last feature is committed. Writes collapsed stacks
to ``build/profiles/<service>.txt`` and prints, per service, the functions holding the most samples
(self time and inclusive time). Usage::

    .venv/bin/python -m benchmarks.profile_services --dataset public_toilets --events 30000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psycopg

from benchmarks.pipeline_throughput import build_events, build_spread_events, produce, signed_values
from benchmarks.stack import PROCESSED_EVENTS_SQL, BenchStack, wait_until_counted

ROOT = Path(__file__).resolve().parents[1]
PY_SPY = Path(sys.executable).parent / "py-spy"


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process and of its waited-for children (PostgreSQL backends that ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += _cpu_seconds(pid)
        todo.extend(children.get(pid, []))
    return total


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def hwm_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of one process in MB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_roots(stack: BenchStack) -> dict[str, int]:
    assert stack.broker is not None and stack.db is not None
    roots = {name: svc.pid() for name, svc in stack.services.items()}
    roots["kafka"] = stack.broker.pid()
    roots["postgres"] = int((stack.db.pgdata / "postmaster.pid").read_text().split()[0])
    return {k: v for k, v in roots.items() if v is not None}


def summarise(collapsed: Path, top: int) -> str:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]  # one entry per function
        self_time[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    out = [f"{collapsed.stem}: {total} samples", "  self time:"]
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in self_time.most_common(top)]
    out.append("  inclusive:")
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top * 2)]
    return "\n".join(out)


async def topic_totals(broker: object, topic: str) -> tuple[int, int]:
    """Messages on ``topic`` and the bytes of their values, read from the beginning (issue #16.3)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,  # type: ignore[attr-defined]
                                **broker.admin_security().client_kwargs())  # type: ignore[attr-defined]  # fmt: skip
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # a fresh consumer knows no topic yet
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        messages = size = 0
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                messages += len(records)
                size += sum(len(r.value or b"") for r in records)
        return messages, size
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="public_toilets")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--services", default="normalise,publish", help="services to profile; empty for none")
    parser.add_argument(
        "--form", choices=("bulk", "single"), default="single", help="input messages: one per event or bulk"
    )
    parser.add_argument(
        "--spread", action="store_true", help="replicas on free places with fresh names (the suite's polygons row)"
    )
    parser.add_argument(
        "--children", action="store_true", help="py-spy also samples each service's child processes (the relay)"
    )
    parser.add_argument(
        "--toast-compression",
        choices=("pglz", "lz4"),
        default=None,
        help="PostgreSQL's default_toast_compression for the run (default: the server's, pglz)",
    )
    args = parser.parse_args()

    out_dir = ROOT / "build/profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    stack = BenchStack()
    try:
        pg_settings = {"shared_preload_libraries": "'pg_stat_statements'", "pg_stat_statements.track": "all"}
        if args.toast_compression:
            pg_settings["default_toast_compression"] = f"'{args.toast_compression}'"
        stack.start(pg_settings=pg_settings)
        assert stack.db is not None
        with psycopg.connect(stack.db.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        build = build_spread_events if args.spread else build_events
        events = build(args.dataset, args.events, seq=time.time_ns() // 1000)
        values = signed_values(stack, events, args.form)
        spies = {}
        for name in filter(None, args.services.split(",")):
            pid = stack.services[name].pid()
            spies[name] = subprocess.Popen(
                [str(PY_SPY), "record", "--pid", str(pid), "--rate", str(args.rate), "--format", "raw",
                 "--output", str(out_dir / f"{name}.txt"), "--nonblocking",
                 *(["--subprocesses"] if args.children else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        time.sleep(1.0)
        assert stack.broker is not None
        roots = cpu_roots(stack)
        cpu_before = {k: tree_cpu_seconds(pid) for k, pid in roots.items()}
        own_before = {p: _cpu_seconds(p) for k, pid in roots.items() if k != "postgres" for p in [pid, *children(pid)]}
        stack.sql("SELECT pg_stat_statements_reset() IS NULL")
        t0 = time.monotonic()
        asyncio.run(produce(stack.broker, values))
        # Applied events, not features: a record that is the same place as another commune's feature is linked
        # to it and makes no new feature. Then every change the normaliser made must be in the publisher's log.
        wait_until_counted(
            lambda: int(stack.sql(PROCESSED_EVENTS_SQL)[0][0]),
            len(events),
            started=t0,
            timeout=1800,
            what="events applied",
        )
        changes = int(stack.sql("SELECT count(*) FROM feature_change_outbox")[0][0])
        wait_until_counted(
            lambda: int(stack.sql("SELECT count(*) FROM change_log")[0][0]),
            changes,
            started=t0,
            timeout=1800,
            what="changes recorded by the publisher",
        )
        seconds = time.monotonic() - t0
        cpu = {k: tree_cpu_seconds(pid) - cpu_before[k] for k, pid in roots.items()}
        own = {p: _cpu_seconds(p) - before for p, before in own_before.items()}
        for spy in spies.values():
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy.wait(timeout=60)
        print(
            f"{len(events)} events in {seconds:.1f} s = {len(events) / seconds:.0f} ev/s (profiled, slower than unprofiled)"
        )
        messages, size = asyncio.run(topic_totals(stack.broker, "odc.feature-changes"))
        print(
            f"odc.feature-changes: {messages} messages, {size} value bytes for {changes} changes = "
            f"{messages / max(changes, 1):.4f} messages and {size / max(changes, 1):.0f} B per change"
        )
        print("CPU seconds during the run (process and its children; py-spy itself excluded):")
        for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]):
            print(f"  {k:10s} {v:6.1f} s  = {1000 * v / len(events):.3f} ms/event")
            if k != "postgres" and len(parts := [p for p in [roots[k], *children(roots[k])] if p in own]) > 1:
                for p in parts:  # a worker and its children (the normaliser's relay process), each on its own
                    what = "the worker" if p == roots[k] else "a child"
                    print(f"    {p} ({what}) {own[p]:6.1f} s  = {1000 * own[p] / len(events):.3f} ms/event")
        print("PostgreSQL statements by total execution time (pg_stat_statements):")
        for calls, total_ms, rows, query in stack.sql(
            "SELECT calls, total_exec_time, rows, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements "
            "ORDER BY total_exec_time DESC LIMIT 15"
        ):
            print(
                f"  {total_ms / len(events) * 1000:7.1f} us/event  calls={calls:<7} rows={rows:<8} {str(query)[:150]}"
            )
        for name, svc in stack.services.items():
            pid = svc.pid()
            if pid is not None:
                print(
                    f"peak RSS (VmHWM) of {name}: "
                    + ", ".join(f"{p} {hwm_mb(p):.0f} MB" for p in [pid, *children(pid)])
                )
        for name in spies:
            print(summarise(out_dir / f"{name}.txt", args.top))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
