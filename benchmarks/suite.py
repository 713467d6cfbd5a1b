"""``make bench``: the whole benchmark suite in one run on one machine, with every pipeline figure set
beside its anchor measured on the same features in the same run (issue #7).

1. end-to-end throughput, points and polygons (real files replicated with fresh ids; polygons spread over
   the area with fresh names, and a dense pile of them as a stress row), one normaliser, with the CPU µs per
   event of each process and the rows written per event (pg_stat_statements, benchmarks/write_count.py);
2. anchors: ogr2ogr bulk load, raw Kafka produce→consume, naive per-event ORM upsert;
3. latency send → version notification at a steady rate (p50 / p99 / max), and at a lower rate;
4. replay: a second normaliser (new consumer group, empty database) rebuilds the canonical store from
   the Kafka log;
5. cost of a version with 10 changes on 10k and on 1M features (publisher's real handler);
6. peak RSS of each service during the throughput runs (VmHWM);
7. scale-out: the same throughput run with two normaliser workers in one consumer group.

A size of 0 skips its stage; the table and the JSON say "skipped". Prints a table of ratios; appends it with the machine's description to docs/benchmarks.md and writes the
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

from benchmarks import anchors, write_count
from benchmarks.pipeline_throughput import build_events, build_spread_events, run_latency, signed_values
from benchmarks.process_cpu import CpuMeter, own_cpu_seconds, per_event_us
from benchmarks.profile_services import children, hwm_mb
from benchmarks.stack import PROCESSED_EVENTS_SQL, BenchStack, machine_description, wait_until_counted
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
    """Events applied (their ids on a change row or claimed in the batch transaction: PROCESSED_EVENTS_SQL). Counting features would undercount:
    a record that is the same place as another commune's feature is linked to it, not a new feature."""
    with psycopg.connect(dsn or stack.db.dsn) as conn:  # type: ignore[union-attr]
        row = conn.execute(PROCESSED_EVENTS_SQL).fetchone()
    return int(row[0]) if row else 0


def measure_roots(stack: BenchStack) -> dict[str, int]:
    """The process trees measured for CPU per event: each service (the normaliser with its relay child),
    PostgreSQL (the postmaster: every backend, with those that ended during the stage) and the broker."""
    assert stack.broker is not None and stack.db is not None
    roots = {name: svc.pid() for name, svc in stack.services.items()}
    roots["postgres"] = stack.db.pid()
    roots["kafka"] = stack.broker.pid()
    return {k: v for k, v in roots.items() if v is not None}


def pipeline_throughput(
    stack: BenchStack,
    dataset: str,
    events: list[Any],
    values: list[Any],
    *,
    measure: bool = False,
) -> dict[str, Any]:
    """Send the events, time until all are applied. With ``measure``: CPU of each process tree from the first
    send until the database stops writing (the publisher's share included; the idle wait is not), the load
    generator's CPU around its sends, and the writes per applied event from pg_stat_statements."""
    assert stack.broker is not None and stack.db is not None
    from benchmarks.pipeline_throughput import produce

    before = count_applied(stack)
    meter = CpuMeter(measure_roots(stack)) if measure else None
    if measure:
        write_count.reset(stack.db.dsn)
    wal0 = write_count.wal_totals(stack.db.dsn) if measure else {}
    cpu0 = meter.snapshot() if meter else {}
    gen0 = own_cpu_seconds()
    t0 = time.monotonic()
    asyncio.run(produce(stack.broker, values))
    t_sent = time.monotonic()
    gen1 = own_cpu_seconds()
    wait_until_counted(
        lambda: count_applied(stack) - before, len(events), started=t0, timeout=3600, what="throughput run"
    )
    seconds = time.monotonic() - t0
    out: dict[str, Any] = {
        "dataset": dataset,
        "events": len(events),
        "seconds": seconds,
        "send_seconds": t_sent - t0,
        "events_per_second": len(events) / seconds,
    }
    if meter is not None:
        cpu1 = write_count.wait_until_quiet(stack.db.dsn, on_poll=meter.snapshot)
        applied = count_applied(stack) - before
        trees = per_event_us(cpu0, cpu1, applied)
        trees.pop("total", None)
        cpu = {"load_generator": (gen1 - gen0) * 1e6 / applied, **trees}
        cpu["total"] = sum(cpu.values())
        out["cpu_us_per_event"] = cpu
        out["writes"] = write_count.summarise(write_count.read(stack.db.dsn), applied)
        out["wal"] = write_count.wal_per_event(wal0, write_count.wal_totals(stack.db.dsn), applied)
    return out


def skipped(why: str) -> dict[str, Any]:
    return {"skipped": True, "why": why}


def is_skipped(stage: Any) -> bool:
    """Missing, or marked skipped (a measured stage is a dict of figures, or the version cost's list)."""
    return stage is None or (isinstance(stage, dict) and bool(stage.get("skipped")))


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero (an empty or skipped stage)."""
    if a is None or not b:
        return None
    return a / b


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
            # the replay's own topics have no ACL for the normaliser's principal: it acts as the admin
            "ODC_NORMALISE_KAFKA_USERNAME": stack.broker.admin_security().username,
            "ODC_NORMALISE_KAFKA_PASSWORD": stack.broker.admin_security().password.get_secret_value(),
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


THROUGHPUT_STAGES = (
    # label, dataset, how the events are built, size option
    ("points", "public_toilets", "replicas within 440 m", "points"),
    ("polygons", "parks_gardens", "replicas on free places with fresh names", "polygons"),
    ("polygons_dense", "parks_gardens", "replicas within 440 m, same names: stress", "polygons_dense"),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="A size of 0 skips its stage (the table and JSON say so)."
    )
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--polygons", type=int, default=200_000, help="parks spread over the area, fresh names")
    parser.add_argument("--polygons-dense", type=int, default=50_000, help="parks piled within 440 m (stress row)")
    parser.add_argument("--naive", type=int, default=3_000, help="events for the naive per-event ORM anchor")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--low-rate", type=float, default=500.0, help="a second latency stage at this rate (0: none)")
    parser.add_argument("--max-delay", type=float, default=0.25)
    parser.add_argument("--version-sizes", default="10000,1000000", help="0 or empty: no version-cost stage")
    parser.add_argument("--scale-out-points", type=int, default=50_000)
    parser.add_argument("--no-replay", action="store_true", help="skip the replay stage")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PostgreSQL setting for the run's cluster, over deploy/local/postgres.py's (repeatable)",
    )
    parser.add_argument(
        "--input-form",
        choices=("bulk", "single"),
        default="single",
        help="how the throughput stages send: one message per event (as every run before 2026-12-05T05Z), or "
        "bulk messages per dataset, commune and window of 500 events as `odc send` does",
    )
    args = parser.parse_args()
    anchors.ensure_gdal_installed()

    catalogue = DatasetCatalogue.load()
    stack = BenchStack(service_roles=True)
    r: dict[str, Any] = {
        "machine": machine_description(),
        "settings": vars(args),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(f"throwaway stack in {stack.root}", flush=True)
    # Under a steady stream a dataset never goes quiet: the max delay bounds how long a change waits.
    env = {"ODC_PUBLISH_MAX_DELAY_SECONDS": str(args.max_delay)}
    pg_settings = dict(kv.split("=", 1) for kv in args.pg_setting)
    stack.start(extra_env=env, pg_settings=pg_settings or None)
    try:
        assert stack.broker is not None and stack.db is not None
        write_count.ensure_extension(stack.db.dsn)
        seq = time.time_ns() // 1000
        for i, (label, dataset, _, option) in enumerate(THROUGHPUT_STAGES):
            n = getattr(args, option)
            if n <= 0:
                why = f"--{option.replace('_', '-')} 0"
                for x in ("pipeline", "ogr2ogr", "raw_kafka", "naive_orm"):
                    r[f"{label}_{x}"] = skipped(why)
                continue
            d = catalogue.get(dataset)
            assert d is not None
            print(f"[{label}] building {n} events ...", flush=True)
            if label == "polygons":
                events = build_spread_events(dataset, n, seq=seq + 10 + i)
            else:
                events = build_events(dataset, n, seq=seq + 10 + i)
                if label == "polygons_dense":  # not the spread row's round 0 ids
                    events = [e.__class__(**{**e.__dict__, "feature_id": e.feature_id + "-d"}) for e in events]
            values = signed_values(stack, events, args.input_form)
            print(f"[{label}] pipeline throughput ...", flush=True)
            r[f"{label}_pipeline"] = pipeline_throughput(stack, dataset, events, values, measure=True)
            print(f"[{label}] anchor: ogr2ogr ...", flush=True)
            r[f"{label}_ogr2ogr"] = anchors.ogr2ogr_bulk_load(stack.db.dsn, events, d.bounds, d.geometry.type)
            if label == "polygons_dense":  # the stress row: the loader beside it, not every anchor
                r[f"{label}_raw_kafka"] = skipped("not measured for the stress row")
                r[f"{label}_naive_orm"] = skipped("not measured for the stress row")
                continue
            print(f"[{label}] anchor: raw Kafka ...", flush=True)
            r[f"{label}_raw_kafka"] = anchors.raw_kafka(stack.broker, values)
            if args.naive <= 0:
                r[f"{label}_naive_orm"] = skipped("--naive 0")
            else:
                print(f"[{label}] anchor: naive ORM upsert on {args.naive} events ...", flush=True)
                r[f"{label}_naive_orm"] = anchors.naive_orm_upsert(
                    stack.db.dsn, events[: args.naive], d.bounds, d.geometry.type
                )
        r["peak_rss_mb"] = {name: peak_rss_mb(svc) for name, svc in stack.services.items()}
        r["writes_per_event"] = {
            label: r[f"{label}_pipeline"]["writes"]["rows_per_event"]
            for label, *_ in THROUGHPUT_STAGES
            if not is_skipped(r[f"{label}_pipeline"])
        }
        r["cpu_us_per_event"] = {
            label: r[f"{label}_pipeline"]["cpu_us_per_event"]
            for label, *_ in THROUGHPUT_STAGES
            if not is_skipped(r[f"{label}_pipeline"])
        }
        latency_events = 0
        for key, rate, tag in (("latency", args.rate, "lat"), ("latency_low_rate", args.low_rate, "lat-low")):
            if rate <= 0 or args.latency_seconds <= 0:
                r[key] = skipped("--latency-seconds 0" if args.latency_seconds <= 0 else f"rate {rate:g}")
                continue
            print(f"latency at {rate:.0f} events/s for {args.latency_seconds:.0f} s ...", flush=True)
            meter = CpuMeter(measure_roots(stack))
            cpu0 = meter.snapshot()
            r[key] = run_latency(stack, "public_toilets", rate, args.latency_seconds, tag=tag)
            # steady state: the load generator's pacing is in its process, not measured here
            r[key]["cpu_us_per_event"] = per_event_us(cpu0, meter.snapshot(), r[key]["events"])
            latency_events += r[key]["events"]
        if args.scale_out_points <= 0:
            r["scale_out_two_workers"] = r["scale_out_one_worker"] = skipped("--scale-out-points 0")
        else:
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
            r["scale_out_two_workers"] = pipeline_throughput(
                stack, "public_toilets", events, signed_values(stack, events, args.input_form)
            )
            events1 = build_events("public_toilets", args.scale_out_points, seq=seq + 2)
            events1 = [e.__class__(**{**e.__dict__, "feature_id": e.feature_id + "-s1"}) for e in events1]
            second.stop()
            time.sleep(5)
            r["scale_out_one_worker"] = pipeline_throughput(
                stack, "public_toilets", events1, signed_values(stack, events1, args.input_form)
            )
        expected = {
            "public_toilets": count_features(stack, "public_toilets"),
            "parks_gardens": count_features(stack, "parks_gardens"),
            "applied_events": count_applied(stack),
        }
        r["live_same_events"] = live_same_events(r, latency_events)
        total = r["live_same_events"].get("events", 0)
        if args.no_replay or total <= 0:
            r["replay"] = skipped("--no-replay" if args.no_replay else "no events in the log")
        else:
            print("replay from the Kafka log ...", flush=True)
            r["replay"] = replay(stack, expected, total)
        sizes = [int(x) for x in args.version_sizes.split(",") if x.strip() and int(x) > 0]
        if not sizes:
            r["version_cost"] = skipped(f"--version-sizes {args.version_sizes!r}")
        else:
            print("version cost ...", flush=True)
            r["version_cost"] = version_cost(stack, sizes, repeats=5)
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
    for label, *_ in THROUGHPUT_STAGES:  # WAL per stage (also in the raw JSON)
        wal = r.get(f"{label}_pipeline", {}).get("wal")
        if wal:
            print(f"WAL, {label}: {wal}")
    if not args.no_write:
        out = ROOT / "docs" / "benchmarks"
        out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (out / f"{stamp}.json").write_text(json.dumps(r, indent=2, default=str))
        with (ROOT / "docs" / "benchmarks.md").open("a", encoding="utf-8") as fh:
            fh.write(f"\n## Suite run {stamp}\n\n{table}\nRaw numbers: `docs/benchmarks/{stamp}.json`.\n")


def live_same_events(r: dict[str, Any], latency_events: int) -> dict[str, Any]:
    """The events the replay reads, live: the measured time of each throughput stage, and for the latency
    stages' events (sent at a fixed rate, so their time says nothing of capacity) the one-worker rate on the
    same dataset (the points run's when scale-out was skipped). Skipped when there is nothing to go on."""
    stages = [r[k] for k in ("points_pipeline", "polygons_pipeline", "polygons_dense_pipeline",
                             "scale_out_two_workers", "scale_out_one_worker") if not is_skipped(r.get(k))]  # fmt: skip
    events = sum(int(s["events"]) for s in stages) + latency_events
    seconds = sum(float(s["seconds"]) for s in stages)
    if latency_events:
        ref = next(
            (
                r[k]["events_per_second"]
                for k in ("scale_out_one_worker", "points_pipeline")
                if not is_skipped(r.get(k))
            ),
            None,
        )
        if not ref:
            return {**skipped("latency events and no throughput stage to rate them by"), "events": events}
        seconds += latency_events / ref
    if events <= 0 or seconds <= 0:
        return {**skipped("no events sent"), "events": 0}
    return {"events": events, "seconds": seconds, "events_per_second": events / seconds}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _times(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}×"


def _rate(stage: Any) -> float | None:
    return None if is_skipped(stage) else float(stage["events_per_second"])


CPU_COLUMNS = ("load_generator", "normalise", "publish", "ingest", "postgres", "kafka", "total")


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, Linux {m['kernel']}, Python {m['python']}, "
        f"{m['postgres']}, {m['kafka']}.",
        "",
        "| measure | value | anchor / target | ratio |",
        "|---|---|---|---|",
    ]
    for label, _, title, _ in THROUGHPUT_STAGES:
        p, o, k, n = (r.get(f"{label}_{x}") for x in ("pipeline", "ogr2ogr", "raw_kafka", "naive_orm"))
        if is_skipped(p):
            why = p.get("why", "") if isinstance(p, dict) else ""
            lines.append(f"| end-to-end throughput, {label} ({title}) | skipped ({why}) | | |")
            continue
        rate = _rate(p)
        lines.append(
            f"| end-to-end throughput, {label} ({p['events']:,} events, {title}) | {rate:,.0f} ev/s | "
            + (f"ogr2ogr bulk load {_rate(o):,.0f} ev/s (target ≥ 25%) | {_pct(ratio(rate, _rate(o)))} |"
               if not is_skipped(o) else "ogr2ogr: skipped | |")
        )  # fmt: skip
        if not is_skipped(k):
            lines.append(f"| same | | raw Kafka produce→consume {_rate(k):,.0f} ev/s | {_pct(ratio(rate, _rate(k)))} |")
        if not is_skipped(n):
            lines.append(
                f"| same | | naive per-event ORM upsert {_rate(n):,.0f} ev/s (target ≥ 10×) | "
                f"{_times(ratio(rate, _rate(n)))} |"
            )
        elif label != "polygons_dense":
            lines.append("| same | | naive per-event ORM upsert: skipped | |")
    for key in ("latency", "latency_low_rate"):
        lat = r.get(key)
        if is_skipped(lat):
            why = lat.get("why", "") if isinstance(lat, dict) else ""
            lines.append(f"| send → notification ({key.replace('_', ' ')}) | skipped ({why}) | | |")
            continue
        target = "p99 < 1000 ms" if key == "latency" else "(no target)"
        verdict = ("met" if lat["p99"] < 1 else "missed") if key == "latency" else ""
        lines.append(
            f"| send → notification at {lat['rate']:,.0f} ev/s, p50 / p99 / max | {lat['p50'] * 1000:,.0f} / "
            f"{lat['p99'] * 1000:,.0f} / {lat['max'] * 1000:,.0f} ms | {target} | {verdict} |"
        )
    rp, same = r.get("replay"), r.get("live_same_events")
    if is_skipped(rp):
        why = rp.get("why", "") if isinstance(rp, dict) else ""
        lines.append(f"| replay from the log | skipped ({why}) | | |")
    else:
        live = _rate(r.get("points_pipeline"))
        lines.append(
            f"| replay from the log ({rp['events_in_log']:,} events: every stage's events) | "
            f"{rp['events_per_second']:,.0f} ev/s | live ingest of the same events "
            + (f"{_rate(same):,.0f} ev/s (target ≥ 1×) | {_times(ratio(rp['events_per_second'], _rate(same)), 2)} |"
               if not is_skipped(same) else "not computed | |")
        )  # fmt: skip
        if live:
            lines.append(
                f"| same | | live ingest, points run only {live:,.0f} ev/s | "
                f"{_times(ratio(rp['events_per_second'], live), 2)} |"
            )
    vcs = r.get("version_cost")
    if is_skipped(vcs):
        why = vcs.get("why", "") if isinstance(vcs, dict) else ""
        lines.append(f"| cut a 10-change version | skipped ({why}) | | |")
    else:
        vc = {int(x["features"]): x for x in vcs}
        small, big = vc[min(vc)], vc[max(vc)]
        lines.append(
            f"| cut a 10-change version on {int(big['features']):,} vs {int(small['features']):,} features | "
            f"{big['median_ms']:.1f} vs {small['median_ms']:.1f} ms (median) | target ≤ 2× | "
            f"{_times(ratio(big['median_ms'], small['median_ms']), 2)} |"
        )
    for name, mb in r.get("peak_rss_mb", {}).items():
        target = "< 300 MB" if name == "normalise" else ""
        lines.append(f"| peak RSS, {name} (with its child processes) | {mb:,.0f} MB | {target} | |")
    one, two = r.get("scale_out_one_worker"), r.get("scale_out_two_workers")
    if is_skipped(one) or is_skipped(two):
        why = one.get("why", "") if isinstance(one, dict) else ""
        lines.append(f"| scale-out: 1 → 2 normaliser workers | skipped ({why}) | | |")
    else:
        lines.append(
            f"| scale-out: 1 → 2 normaliser workers ({one['events']:,} events each) | "
            f"{_rate(one):,.0f} → {_rate(two):,.0f} ev/s | | {_times(ratio(_rate(two), _rate(one)), 2)} |"
        )
    lines += ["", *render_costs(r)]
    return "\n".join(lines)


def render_costs(r: dict[str, Any]) -> list[str]:
    """Writes and CPU per applied event of each measured stage (issue #16), as a second table."""
    rows = []
    for label, *_ in THROUGHPUT_STAGES:
        p = r.get(f"{label}_pipeline")
        if is_skipped(p) or "writes" not in p:
            continue
        w, cpu = p["writes"], p.get("cpu_us_per_event", {})
        roles = ", ".join(f"{k} {v['rows_per_event']:.1f}" for k, v in w["by_role"].items()) or "none"
        rows.append(
            f"| {label} | {w['rows_per_event']:.2f} ({roles}) | {w['calls_per_event']:.3f} | "
            + " | ".join(f"{cpu[c]:,.0f}" if c in cpu else "" for c in CPU_COLUMNS)
            + " |"
        )
    for key in ("latency", "latency_low_rate"):
        lat = r.get(key)
        if is_skipped(lat) or "cpu_us_per_event" not in lat:
            continue
        cpu = lat["cpu_us_per_event"]
        rows.append(
            f"| steady {lat['rate']:,.0f} ev/s | | | "
            + " | ".join(f"{cpu[c]:,.0f}" if c in cpu else "" for c in CPU_COLUMNS)
            + " |"
        )
    if not rows:
        return []
    head = " | ".join(f"CPU µs/event {c.replace('_', ' ')}" for c in CPU_COLUMNS)
    return [
        f"| stage | rows written per event (by role) | write statements per event | {head} |",
        "|---|---|---|" + "---|" * len(CPU_COLUMNS),
        *rows,
        "",
    ]


if __name__ == "__main__":
    main()
