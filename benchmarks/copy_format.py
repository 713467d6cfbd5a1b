"""``python -m benchmarks.copy_format``: text COPY (what the normaliser writes its change rows with) against
binary COPY, for rows shaped as ``feature_change_outbox``'s, built from the bundled samples (issue #16, item 1:
"binary COPY", measured before choosing).

On a throwaway PostgreSQL cluster, a table with the outbox's columns and types; each form writes the same rows in
COPYs of ``--batch`` rows, one transaction each (as the normaliser's batch transaction does), the table emptied
between repeats; forms run turn about. Reported per row: the CPU of this process (psycopg formatting the rows)
and of the PostgreSQL backend (parsing them and writing the table), from ``/proc/<pid>/stat``, best of
``--repeats``. Prints a Markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.numeric import Int8BinaryDumper

from benchmarks.process_cpu import own_cpu_seconds
from deploy.local.ports import free_port
from deploy.local.postgres import PostgresCluster

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = {
    "public_toilets": ROOT / "samples/grandlyon/toilettes.geojson",
    "parks_gardens": ROOT / "samples/grandlyon/parcs.geojson",
}
COLUMNS = (
    "event_id text, dataset text, commune text, feature_id text, kind text, sequence bigint, occurred_at timestamptz, "
    "applied_at timestamptz, before_geometry text, before_attributes text, before_hash text, after_geometry text, "
    "after_attributes text, after_hash text, txid xid8"
)
NAMES = [c.split()[0] for c in COLUMNS.split(", ")]
TYPES = [c.split()[1] for c in COLUMNS.split(", ")]


class Xid8(int):
    """psycopg has no binary dumper for xid8 (its binary form is int8's): one registered for this type."""


class Xid8BinaryDumper(Int8BinaryDumper):
    oid = 5069  # xid8


def outbox_rows(dataset: str, count: int) -> list[tuple[Any, ...]]:
    """``count`` rows of updates (a before and an after state), the sample's records repeated."""
    features = json.loads(SAMPLES[dataset].read_bytes())["features"]
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        feature = features[i % len(features)]
        geometry = json.dumps(feature["geometry"], separators=(",", ":"))
        attributes = json.dumps(feature["properties"], separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(f"{geometry}{attributes}".encode()).hexdigest()
        rows.append(
            (
                f"00000000-0000-0000-0000-{i:012d}",
                dataset,
                "69266",
                f"f{i}",
                "updated",
                i + 1,
                now,
                now,
                geometry,
                attributes,
                digest,
                geometry,
                attributes + " ",
                digest,
                str(1000 + i // 500),
            )
        )
    return rows


def write(conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]], batch: int, binary: bool) -> None:
    statement = f"COPY outbox ({', '.join(NAMES)}) FROM STDIN" + (" (FORMAT BINARY)" if binary else "")
    for start in range(0, len(rows), batch):
        with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as cp:
            if binary:
                cp.set_types(TYPES)
            for row in rows[start : start + batch]:
                cp.write_row(row if not binary else (*row[:-1], Xid8(row[-1])))


def measure(
    dsn: str, rows: Sequence[tuple[Any, ...]], batch: int, repeats: int, toast: str
) -> dict[str, dict[str, float]]:
    best: dict[str, dict[str, float]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.adapters.register_dumper(Xid8, Xid8BinaryDumper)
        conn.execute("DROP TABLE IF EXISTS outbox")
        conn.execute(f"CREATE TABLE outbox ({COLUMNS})")
        for column in ("before_geometry", "before_attributes", "after_geometry", "after_attributes"):
            if toast == "external":  # stored out of line, not compressed
                conn.execute(f"ALTER TABLE outbox ALTER COLUMN {column} SET STORAGE EXTERNAL")
            else:
                conn.execute(f"ALTER TABLE outbox ALTER COLUMN {column} SET COMPRESSION {toast}")
        (backend,) = conn.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
        for _ in range(repeats):
            for form in ("text", "binary"):
                conn.execute("TRUNCATE outbox")
                client0, server0 = own_cpu_seconds(), own_cpu_seconds(backend)
                write(conn, rows, batch, form == "binary")
                client = (own_cpu_seconds() - client0) / len(rows) * 1e6
                server = (own_cpu_seconds(backend) - server0) / len(rows) * 1e6
                (n,) = conn.execute("SELECT count(*) FROM outbox").fetchone()  # type: ignore[misc]
                assert n == len(rows), f"{form} COPY wrote {n} of {len(rows)} rows"
                if form not in best or client + server < best[form]["client"] + best[form]["server"]:
                    best[form] = {"client": client, "server": server}
        # the two forms store the same values
        conn.execute("TRUNCATE outbox")
        write(conn, rows[:batch], batch, False)
        text_rows = conn.execute("SELECT * FROM outbox ORDER BY event_id").fetchall()
        conn.execute("TRUNCATE outbox")
        write(conn, rows[:batch], batch, True)
        assert conn.execute("SELECT * FROM outbox ORDER BY event_id").fetchall() == text_rows
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--toast",
        default="pglz,lz4,external",
        help="how the large text columns are stored: pglz (PostgreSQL's default), lz4, external (no compression)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="odc-bench-copy-") as tmp:
        cluster = PostgresCluster(Path(tmp), free_port())
        cluster.start(timeout=120)
        try:
            print(
                f"| rows (batch of {args.batch}) | large columns | COPY form | client CPU µs/row "
                "| backend CPU µs/row | sum | table size, bytes/row |"
            )
            print("|---|---|---|---:|---:|---:|---:|")
            for dataset in SAMPLES:
                rows = outbox_rows(dataset, args.rows)
                for toast in args.toast.split(","):
                    result = measure(cluster.dsn, rows, args.batch, args.repeats, toast)
                    with psycopg.connect(cluster.dsn) as conn:
                        (size,) = conn.execute("SELECT pg_total_relation_size('outbox')").fetchone()  # type: ignore[misc]
                    for form, r in result.items():
                        total = r["client"] + r["server"]
                        print(
                            f"| {dataset} | {toast} | {form} | {r['client']:.1f} | {r['server']:.1f} | {total:.1f} "
                            f"| {size / args.batch:,.0f} |"
                        )
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
