"""``python -m benchmarks.version_cut``: the cost of cutting a version is proportional to its changes, not
to the size of the dataset.

On a throwaway PostgreSQL + PostGIS cluster, through the publisher's real handler and PostGIS unit of
work (``cut_due_versions`` → diff, counters, content hash, published_feature, version event, outbox rows):
for datasets of N live features (N = 1k, 10k, 100k by default), cut versions of k changed features
(k = 10, 100, 1000; half updates, a quarter removals, a quarter additions) and time each cut. Prints a
Markdown table and appends it, with the machine, to docs/versions-benchmark.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from deploy.local.ports import free_port
from deploy.local.postgres import PostgresCluster
from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue, VersioningPolicy
from services.contract.messages import ChangeKind, FeatureState
from services.infrastructure.database import make_engine
from services.publish.adapters.postgis_store import PostgresPublishUnitOfWork, create_schema
from services.publish.domain.versioning import ReceivedChange
from services.publish.service_layer.handlers import cut_due_versions

ROOT = Path(__file__).resolve().parents[1]
DATASET = "public_toilets"


class FixedClock:
    def __init__(self) -> None:
        self.t = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t


def feature(i: int, rev: int) -> FeatureState:
    lon, lat = 4.8 + (i % 1000) * 1e-4, 45.7 + (i // 1000) * 1e-4
    attrs = json.dumps(
        {"gid": i, "codinsee": "69266", "adresse": f"{i} rue du banc, rév. {rev}"}, separators=(",", ":")
    )
    return FeatureState(f'{{"type":"Point","coordinates":[{lon:.6f},{lat:.6f}]}}', attrs, f"{i:08d}-{rev:04d}")


class Bench:
    def __init__(self, dsn: str) -> None:
        self.engine = make_engine(dsn, pool_size=2)
        self.codecs = Codecs()
        self.clock = FixedClock()
        self.change_id = 0
        self.catalogue = DatasetCatalogue.load()

    def uow(self) -> PostgresPublishUnitOfWork:
        return PostgresPublishUnitOfWork(self.engine, self.codecs)

    async def record(self, changes: list[tuple[str, FeatureState | None, FeatureState | None]], dataset: str) -> None:
        rows = []
        for fid, before, after in changes:
            self.change_id += 1
            kind = ChangeKind.CREATED if before is None else ChangeKind.DELETED if after is None else ChangeKind.UPDATED
            rows.append(ReceivedChange(self.change_id, dataset, "69266", fid, kind, before, after))
        for start in range(0, len(rows), 5000):
            async with self.uow() as uow:
                await uow.record_changes(rows[start : start + 5000], self.clock.now())
                await uow.commit()

    async def cut(self) -> float:
        self.clock.t += timedelta(hours=1)  # past the quiet period
        started = time.perf_counter()
        drafts = await cut_due_versions(
            catalogue=self.catalogue,
            uow_factory=self.uow,
            clock=self.clock,
            source="urn:bench",
            max_delay_seconds=10,
            base_url="http://127.0.0.1:6067",
            max_inline_changes=100,
        )
        elapsed = time.perf_counter() - started
        assert len(drafts) == 1, drafts
        return elapsed


async def run(sizes: list[int], ks: list[int], repeats: int, dsn: str) -> list[dict[str, float]]:
    bench = Bench(dsn)
    await create_schema(bench.engine)
    policy = VersioningPolicy()
    results = []
    try:
        for n in sizes:
            dataset = DATASET
            async with bench.engine.begin() as conn:  # a fresh dataset per size
                for table in (
                    "change_log_entry",
                    "dataset_version",
                    "version_diff_before_0005",
                    "published_feature",
                    "version_event",
                    "notification_outbox",
                    "dataset_state",
                ):
                    await conn.execute(text(f"DELETE FROM {table}"))
            live = {i: 0 for i in range(n)}
            for start in range(0, n, policy.max_changes):
                await bench.record(
                    [(str(i), None, feature(i, 0)) for i in range(start, min(n, start + policy.max_changes))], dataset
                )
                await bench.cut()
            async with bench.engine.begin() as conn:
                await conn.execute(text("ANALYZE"))
            next_id = n
            for k in ks:
                times = []
                for _ in range(repeats):
                    ids = sorted(live)[: k // 2 + k // 4]
                    changes: list[tuple[str, FeatureState | None, FeatureState | None]] = []
                    for i in ids[: k // 2]:  # updates
                        changes.append((str(i), feature(i, live[i]), feature(i, live[i] + 1)))
                        live[i] += 1
                    for i in ids[k // 2 :]:  # removals
                        changes.append((str(i), feature(i, live.pop(i)), None))
                    for _ in range(k - len(changes)):  # additions
                        changes.append((str(next_id), None, feature(next_id, 0)))
                        live[next_id] = 0
                        next_id += 1
                    await bench.record(changes, dataset)
                    times.append(await bench.cut())
                results.append(
                    {
                        "features": n,
                        "changes": k,
                        "median_ms": statistics.median(times) * 1000,
                        "max_ms": max(times) * 1000,
                        "repeats": repeats,
                    }
                )
                print(
                    f"N={n:>7} k={k:>5}: median {statistics.median(times) * 1000:8.1f} ms  max {max(times) * 1000:8.1f} ms",
                    flush=True,
                )
    finally:
        await bench.engine.dispose()
    return results


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        cpu = model
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}, PostgreSQL 15 + PostGIS (local cluster)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--changes", default="10,100,1000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ks = [int(s) for s in args.changes.split(",")]
    with tempfile.TemporaryDirectory(prefix="odc-bench-pg-") as tmp:
        cluster = PostgresCluster(Path(tmp), free_port())
        cluster.start(timeout=120)
        try:
            results = asyncio.run(run(sizes, ks, args.repeats, cluster.dsn))
        finally:
            cluster.stop()
    lines = [
        f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — {machine()}\n",
        "Time to cut one version (`cut_due_versions`: read pending changes, diff, hash, write version, diff rows, "
        "published state, CloudEvent, webhook fan-out; one transaction), median of "
        f"{args.repeats} cuts.\n",
        "| live features N | changes k | median (ms) | max (ms) |",
        "|---:|---:|---:|---:|",
        *[f"| {r['features']:,} | {r['changes']:,} | {r['median_ms']:.1f} | {r['max_ms']:.1f} |" for r in results],
        "",
    ]
    print("\n".join(lines))
    if not args.no_write:
        out = ROOT / "docs" / "versions-benchmark.md"
        if not out.exists():
            out.write_text(
                "# Cost of cutting a version\n\nProduced by `python -m benchmarks.version_cut`. A version's cost should "
                "grow with its number of changes k and stay flat as the dataset grows (N).\n",
                encoding="utf-8",
            )
        with out.open("a", encoding="utf-8") as f:
            f.write("\n".join(lines))


if __name__ == "__main__":
    main()
