"""``make bench``: the whole benchmark suite in one run on one machine, with every pipeline figure set
beside its anchor measured on the same features in the same run (issue #7).

1. end-to-end throughput, points and polygons (real files replicated with fresh ids), one normaliser;
2. anchors: ogr2ogr bulk load, raw Kafka produce→consume, naive per-event ORM upsert;
3. latency send → version notification at a steady rate (p50 / p99 / max), and at a lower rate;
4. replay: a second normaliser (new consumer group, empty database) rebuilds the canonical store from
   the Kafka log;
5. cost of a version with 10 changes on 10k and on 1M features (publisher's real handler);
6. peak RSS of each service during the throughput runs (VmHWM);
7. scale-out: the same throughput run with two normaliser workers in one consumer group.

Prints a table of ratios; appends it with the machine's description to docs/benchmarks.md and writes the
raw numbers to docs/benchmarks/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import anchors
from benchmarks.pipeline_throughput import build_events, run_latency, signed_values
from benchmarks.profile_services import children, hwm_mb
from benchmarks.stack import BenchStack, machine_description, wait_until_counted
from deploy.local.ports import free_port
from deploy.local.services import ServiceProcess, service_env
from services.contract.datasets.catalogue import DatasetCatalogue

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb(svc: ServiceProcess) -> float:
    """Peak RSS (VmHWM) of the service's process plus its children's (the normaliser's relay is a child)."""
    pid = svc.pid()
    if pid is None:
        return float("nan")
    return hwm_mb(pid) + sum(hwm_mb(c) for c in children(pid))


def count_features(stack: BenchStack, dataset: str, dsn: str | None = None) -> int:
    with psycopg.connect(dsn or stack.db.dsn) as conn:  # type: ignore[union-attr]
        row = conn.execute("SELECT count(*) FROM canonical_feature WHERE dataset = %s", (dataset,)).fetchone()
    return int(row[0]) if row else 0


def count_applied(stack: BenchStack, dsn: str | None = None) -> int:
    """Events applied (their ids claimed in the batch transaction). Counting features would undercount:
    a record that is the same place as another commune's feature is linked to it, not a new feature."""
    with psycopg.connect(dsn or stack.db.dsn) as conn:  # type: ignore[union-attr]
        row = conn.execute("SELECT count(*) FROM processed_event").fetchone()
    return int(row[0]) if row else 0


def pipeline_throughput(stack: BenchStack, dataset: str, events: list, values: list) -> dict[str, Any]:  # type: ignore[type-arg]
    assert stack.broker is not None
    from benchmarks.pipeline_throughput import produce

    before = count_applied(stack)
    t0 = time.monotonic()
    asyncio.run(produce(stack.broker, values))
    t_sent = time.monotonic()
    wait_until_counted(
        lambda: count_applied(stack) - before, len(events), started=t0, timeout=3600, what="throughput run"
    )
    seconds = time.monotonic() - t0
    return {
        "dataset": dataset,
        "events": len(events),
        "seconds": seconds,
        "send_seconds": t_sent - t0,
        "events_per_second": len(events) / seconds,
    }


def create_database(stack: BenchStack, name: str) -> str:
    assert stack.db is not None
    with psycopg.connect(stack.db.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = stack.db.dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    return dsn


def copy_signing_keys(stack: BenchStack, dsn: str) -> None:
    from services.infrastructure.database import make_engine
    from services.infrastructure.signing_keys import create_signing_key_schema

    async def schema() -> None:
        engine = make_engine(dsn)
        try:
            await create_signing_key_schema(engine)
        finally:
            await engine.dispose()

    asyncio.run(schema())
    cols = "key_id, commune, secret, label, created_at, revoked_at"
    with psycopg.connect(stack.db.dsn) as src, psycopg.connect(dsn) as dst:  # type: ignore[union-attr]
        rows = src.execute(f"SELECT {cols} FROM commune_signing_key").fetchall()
        with dst.cursor() as cur:
            cur.executemany(f"INSERT INTO commune_signing_key ({cols}) VALUES (%s, %s, %s, %s, %s, %s)", rows)


def replay(stack: BenchStack, expected: dict[str, int], total_events: int) -> dict[str, Any]:
    """A second normaliser, new consumer group, empty database: rebuild from the start of the log."""
    assert stack.broker is not None
    dsn = create_database(stack, "odc_replay")
    copy_signing_keys(stack, dsn)  # the log's events are signed: the replay must know the keys
    port = free_port()
    svc = ServiceProcess("normalise", stack.root, port, instance="replay")
    svc.env = service_env(
        "normalise",
        kafka_bootstrap=stack.broker.bootstrap,
        kafka_access=stack.broker.access,
        database_url=dsn,
        port=port,
        extra={
            "ODC_NORMALISE_GROUP_ID": "odc-normalise-replay",
            "ODC_NORMALISE_REQUIRE_SIGNED_EVENTS": "false",
            "ODC_NORMALISE_TOPIC_FEATURE_CHANGES": "odc.feature-changes.replay",
            "ODC_NORMALISE_TOPIC_REJECTED": "odc.rejected.replay",
        },
    )
    t0 = time.monotonic()
    svc.start()
    svc.wait_ready(180)
    try:
        wait_until_counted(
            lambda: count_applied(stack, dsn),
            expected["applied_events"],
            started=t0,
            timeout=3600,
            what="replay",
        )
        seconds = time.monotonic() - t0
        rss = peak_rss_mb(svc)
    finally:
        svc.stop()
    return {
        "events_in_log": total_events,
        "features": expected["public_toilets"] + expected["parks_gardens"],
        "applied_events": expected["applied_events"],
        "seconds": seconds,
        "events_per_second": total_events / seconds,
        "peak_rss_mb": rss,
        "note": "includes the replay worker's start-up and group join; signatures not re-checked",
    }


def version_cost(stack: BenchStack, sizes: list[int], repeats: int) -> list[dict[str, float]]:
    from benchmarks.version_cut import run

    dsn = create_database(stack, "odc_versions")
    return asyncio.run(run(sizes, [10], repeats, dsn))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--polygons", type=int, default=200_000)
    parser.add_argument("--naive", type=int, default=3_000, help="events for the naive per-event ORM anchor")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--low-rate", type=float, default=500.0, help="a second latency stage at this rate (0: none)")
    parser.add_argument("--max-delay", type=float, default=0.25)
    parser.add_argument("--version-sizes", default="10000,1000000")
    parser.add_argument("--scale-out-points", type=int, default=50_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    anchors.ensure_gdal_installed()

    catalogue = DatasetCatalogue.load()
    stack = BenchStack()
    r: dict[str, Any] = {
        "machine": machine_description(),
        "settings": vars(args),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(f"throwaway stack in {stack.root}", flush=True)
    # Under a steady stream a dataset never goes quiet: the max delay bounds how long a change waits.
    env = {"ODC_PUBLISH_MAX_DELAY_SECONDS": str(args.max_delay)}
    stack.start(extra_env=env)
    try:
        assert stack.broker is not None and stack.db is not None
        seq = time.time_ns() // 1000
        for label, dataset, n in (
            ("points", "public_toilets", args.points),
            ("polygons", "parks_gardens", args.polygons),
        ):
            d = catalogue.get(dataset)
            assert d is not None
            print(f"[{label}] building {n} events ...", flush=True)
            events = build_events(dataset, n, seq=seq)
            values = signed_values(stack, events)
            print(f"[{label}] pipeline throughput ...", flush=True)
            r[f"{label}_pipeline"] = pipeline_throughput(stack, dataset, events, values)
            print(f"[{label}] anchor: ogr2ogr ...", flush=True)
            r[f"{label}_ogr2ogr"] = anchors.ogr2ogr_bulk_load(stack.db.dsn, events, d.bounds, d.geometry.type)
            print(f"[{label}] anchor: raw Kafka ...", flush=True)
            r[f"{label}_raw_kafka"] = anchors.raw_kafka(stack.broker, values)
            print(f"[{label}] anchor: naive ORM upsert on {args.naive} events ...", flush=True)
            r[f"{label}_naive_orm"] = anchors.naive_orm_upsert(
                stack.db.dsn, events[: args.naive], d.bounds, d.geometry.type
            )
        r["peak_rss_mb"] = {name: peak_rss_mb(svc) for name, svc in stack.services.items()}
        print(f"latency at {args.rate:.0f} events/s for {args.latency_seconds:.0f} s ...", flush=True)
        r["latency"] = run_latency(stack, "public_toilets", args.rate, args.latency_seconds)
        if args.low_rate > 0:  # what latency is once the rate is well under capacity (not a target of #7)
            print(f"latency at {args.low_rate:.0f} events/s for {args.latency_seconds:.0f} s ...", flush=True)
            r["latency_low_rate"] = run_latency(
                stack, "public_toilets", args.low_rate, args.latency_seconds, tag="lat-low"
            )
        print("scale-out: two normaliser workers ...", flush=True)
        second = ServiceProcess("normalise", stack.root, free_port(), instance="b")
        second.env = service_env(
            "normalise",
            kafka_bootstrap=stack.broker.bootstrap,
            kafka_access=stack.broker.access,
            database_url=stack.db.dsn,
            port=second.port,
        )
        second.start()
        second.wait_ready(180)
        time.sleep(5)  # let the group rebalance settle before timing
        events = build_events("public_toilets", args.scale_out_points, seq=seq + 1)
        events = [e.__class__(**{**e.__dict__, "feature_id": e.feature_id + "-s2"}) for e in events]
        r["scale_out_two_workers"] = pipeline_throughput(stack, "public_toilets", events, signed_values(stack, events))
        events1 = build_events("public_toilets", args.scale_out_points, seq=seq + 2)
        events1 = [e.__class__(**{**e.__dict__, "feature_id": e.feature_id + "-s1"}) for e in events1]
        second.stop()
        time.sleep(5)
        r["scale_out_one_worker"] = pipeline_throughput(stack, "public_toilets", events1, signed_values(stack, events1))
        expected = {
            "public_toilets": count_features(stack, "public_toilets"),
            "parks_gardens": count_features(stack, "parks_gardens"),
            "applied_events": count_applied(stack),
        }
        latency_events = int(args.rate * args.latency_seconds) + int(max(args.low_rate, 0) * args.latency_seconds)
        total = args.points + args.polygons + latency_events + 2 * args.scale_out_points
        # The same events, live: the measured time of each throughput stage, and for the latency stages' events
        # (sent at a fixed rate, so their time says nothing of capacity) the one-worker rate on the same dataset.
        live_seconds = (
            sum(
                r[k]["seconds"]
                for k in ("points_pipeline", "polygons_pipeline", "scale_out_two_workers", "scale_out_one_worker")
            )
            + latency_events / r["scale_out_one_worker"]["events_per_second"]
        )
        r["live_same_events"] = {"events": total, "seconds": live_seconds, "events_per_second": total / live_seconds}
        print("replay from the Kafka log ...", flush=True)
        r["replay"] = replay(stack, expected, total)
        print("version cost ...", flush=True)
        r["version_cost"] = version_cost(stack, [int(s) for s in args.version_sizes.split(",")], repeats=5)
    except BaseException:
        partial = ROOT / "docs" / "benchmarks" / "partial-last-run.json"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(r, indent=2, default=str))
        print(f"a stage failed; what was measured is in {partial}", flush=True)
        raise
    finally:
        stack.stop()
    table = render(r)
    print(table)
    if not args.no_write:
        out = ROOT / "docs" / "benchmarks"
        out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (out / f"{stamp}.json").write_text(json.dumps(r, indent=2, default=str))
        with (ROOT / "docs" / "benchmarks.md").open("a", encoding="utf-8") as fh:
            fh.write(f"\n## Suite run {stamp}\n\n{table}\nRaw numbers: `docs/benchmarks/{stamp}.json`.\n")


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, Linux {m['kernel']}, Python {m['python']}, "
        f"{m['postgres']}, {m['kafka']}.",
        "",
        "| measure | value | anchor / target | ratio |",
        "|---|---|---|---|",
    ]
    for label in ("points", "polygons"):
        p, o, k, n = (r[f"{label}_{x}"] for x in ("pipeline", "ogr2ogr", "raw_kafka", "naive_orm"))
        rate = p["events_per_second"]
        lines += [
            f"| end-to-end throughput, {label} ({p['events']:,} events) | {rate:,.0f} ev/s | ogr2ogr bulk load "
            f"{o['events_per_second']:,.0f} ev/s (target ≥ 50%) | {rate / o['events_per_second']:.0%} |",
            f"| same | | raw Kafka produce→consume {k['events_per_second']:,.0f} ev/s | "
            f"{rate / k['events_per_second']:.0%} |",
            f"| same | | naive per-event ORM upsert {n['events_per_second']:,.0f} ev/s (target ≥ 10×) | "
            f"{rate / n['events_per_second']:.1f}× |",
        ]
    lat = r["latency"]
    lines += [
        f"| send → notification at {lat['rate']:,.0f} ev/s, p50 / p99 / max | {lat['p50'] * 1000:,.0f} / "
        f"{lat['p99'] * 1000:,.0f} / {lat['max'] * 1000:,.0f} ms | p99 < 1000 ms | "
        f"{'met' if lat['p99'] < 1 else 'missed'} |"
    ]
    low = r.get("latency_low_rate")
    if low:
        lines += [
            f"| send → notification at {low['rate']:,.0f} ev/s, p50 / p99 / max | {low['p50'] * 1000:,.0f} / "
            f"{low['p99'] * 1000:,.0f} / {low['max'] * 1000:,.0f} ms | (no target) | |"
        ]
    rp = r["replay"]
    same = r["live_same_events"]["events_per_second"]
    live = r["points_pipeline"]["events_per_second"]
    lines += [
        f"| replay from the log ({rp['events_in_log']:,} events: points, polygons, latency and scale-out stages) | "
        f"{rp['events_per_second']:,.0f} ev/s | live ingest of the same events {same:,.0f} ev/s (target ≥ 1×) | "
        f"{rp['events_per_second'] / same:.2f}× |",
        f"| same | | live ingest, points run only {live:,.0f} ev/s | {rp['events_per_second'] / live:.2f}× |",
    ]
    vc = {int(x["features"]): x for x in r["version_cost"]}
    small, big = vc[min(vc)], vc[max(vc)]
    lines += [
        f"| cut a 10-change version on {int(big['features']):,} vs {int(small['features']):,} features | "
        f"{big['median_ms']:.1f} vs {small['median_ms']:.1f} ms (median) | target ≤ 2× | "
        f"{big['median_ms'] / small['median_ms']:.2f}× |"
    ]
    for name, mb in r["peak_rss_mb"].items():
        target = "< 300 MB" if name == "normalise" else ""
        lines += [f"| peak RSS, {name} (with its child processes) | {mb:,.0f} MB | {target} | |"]
    one, two = r["scale_out_one_worker"], r["scale_out_two_workers"]
    lines += [
        f"| scale-out: 1 → 2 normaliser workers ({one['events']:,} events each) | "
        f"{one['events_per_second']:,.0f} → {two['events_per_second']:,.0f} ev/s | | "
        f"{two['events_per_second'] / one['events_per_second']:.2f}× |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
