"""The same-place search's cost per probe against the features stored near it (issue #16, fourth session).

Loads a throwaway PostGIS with ``--toilets`` points and ``--parks`` square parks (50-300 m) spread uniformly
over the Lyon area (the density the suite's spread polygons reach), then runs ``--probes`` new parks of another
commune through the normaliser's nearby search (``same_place_store._NEARBY``, the statement itself) with:

- ``degree-as-50km``: the box widened by ``distance / 50000`` degrees both ways (the search before this session);
- ``exact-margins``: widened by ``feature_links.search_margins_deg`` (the distance's degrees at its latitude);
- with ``--composite``, also a GiST index on ``(dataset, geom)`` (btree_gist) instead of ``geom`` alone, with
  ``f.dataset = k.d`` in the join, and the insert cost per row of each index kind.

Reported: wall µs per probe (best of 5; the client is this process, the server does the work), the rows the
index scan read and threw away per probe (EXPLAIN ANALYZE). Usage::

    .venv/bin/python -m benchmarks.same_place_search --toilets 200000 --parks 100000 --composite
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from shapely import wkt

from deploy.local.ports import free_port
from deploy.local.postgres import PostgresCluster
from services.normalise.adapters.same_place_store import _NEARBY
from services.normalise.domain.feature_links import search_margins_deg

AREA = (4.75, 45.65, 5.05, 45.85)  # ~23 x 22 km around Lyon
COMMUNES = [f"69{n:03d}" for n in range(1, 61)]
TABLE = """CREATE TABLE canonical_feature (dataset text NOT NULL, commune text NOT NULL, feature_id text NOT NULL,
  geom geometry(GEOMETRY, 4326), attributes jsonb, compared_folded jsonb, deleted boolean NOT NULL DEFAULT false,
  PRIMARY KEY (dataset, commune, feature_id))"""


def square(rng: random.Random) -> str:
    x, y, side = rng.uniform(AREA[0], AREA[2]), rng.uniform(AREA[1], AREA[3]), rng.uniform(50, 300)
    dx, dy = side / (111_195 * math.cos(math.radians(y))), side / 111_195
    return f"POLYGON(({x} {y},{x + dx} {y},{x + dx} {y + dy},{x} {y + dy},{x} {y}))"


def load(conn: psycopg.Connection[Any], toilets: int, parks: int) -> None:
    rng = random.Random(1)
    conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    conn.execute(TABLE)
    cols = "dataset, commune, feature_id, geom, attributes, compared_folded"
    with conn.cursor().copy(f"COPY canonical_feature ({cols}) FROM STDIN") as copy:
        for i in range(toilets):
            x, y = rng.uniform(AREA[0], AREA[2]), rng.uniform(AREA[1], AREA[3])
            copy.write_row(
                ("public_toilets", rng.choice(COMMUNES), f"t{i}", f"SRID=4326;POINT({x} {y})", '{"a": 1}', None)
            )
        for i in range(parks):
            copy.write_row(
                (
                    "parks_gardens",
                    rng.choice(COMMUNES),
                    f"p{i}",
                    "SRID=4326;" + square(rng),
                    json.dumps({"nom": f"Parc {i}"}),
                    json.dumps({"nom": f"parc{i}"}),
                )
            )
    conn.execute("CREATE INDEX canonical_feature_geom ON canonical_feature USING gist (geom)")
    conn.execute("VACUUM ANALYZE canonical_feature")


def search(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any], probes: int) -> dict[str, Any]:
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        conn.execute(sql, params).fetchall()
        best = min(best, time.perf_counter() - started)
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE) " + sql, params).fetchall())
    removed = re.search(r"Index Scan using (\S+) on canonical_feature f.*?Rows Removed by Filter: (\d+)", plan, re.S)
    return {
        "us_per_probe": round(best / probes * 1e6, 1),
        "rows_read_and_dropped_per_probe": int(removed.group(2)) if removed else -1,
        "index": removed.group(1) if removed else "?",
    }


def insert_cost(conn: psycopg.Connection[Any], index: str) -> float:
    """µs per row to insert the parks into a copy of the table that holds the toilets and ``index``."""
    conn.execute("DROP TABLE IF EXISTS insert_probe")
    conn.execute(TABLE.replace("canonical_feature", "insert_probe"))
    conn.execute("INSERT INTO insert_probe SELECT * FROM canonical_feature WHERE dataset = 'public_toilets'")
    conn.execute(index.format(table="insert_probe"))
    started = time.perf_counter()
    n = conn.execute("INSERT INTO insert_probe SELECT * FROM canonical_feature WHERE dataset = 'parks_gardens'")
    return round((time.perf_counter() - started) / max(1, n.rowcount) * 1e6, 1)


def boxes(geoms: list[Any], margins: list[tuple[float, float]]) -> dict[str, list[float]]:
    """The statement's search boxes: each geometry's bounding box widened by its margins (as the adapter does)."""
    b = [g.bounds for g in geoms]
    return {
        "x0": [v[0] - m[0] for v, m in zip(b, margins, strict=True)],
        "y0": [v[1] - m[1] for v, m in zip(b, margins, strict=True)],
        "x1": [v[2] + m[0] for v, m in zip(b, margins, strict=True)],
        "y1": [v[3] + m[1] for v, m in zip(b, margins, strict=True)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--toilets", type=int, default=200_000)
    parser.add_argument("--parks", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--distance", type=float, default=50.0, help="metres (parks_gardens: 50)")
    parser.add_argument("--composite", action="store_true", help="also measure a (dataset, geom) GiST index")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    rng = random.Random(7)
    geoms = [wkt.loads(square(rng)) for _ in range(args.probes)]
    exact = [search_margins_deg(g.bounds, args.distance) for g in geoms]
    old = args.distance / 50_000.0
    base = {
        "ds": ["parks_gardens"] * args.probes,
        "co": ["69999"] * args.probes,
        "names": ["nom"] * args.probes,
        "folded": [json.dumps({"nom": f"nouveau{i}"}) for i in range(args.probes)],
    }
    # the adapter's statement, in psycopg's placeholders
    sql = re.sub(r"(?<!:):(\w+)", r"%(\1)s", str(_NEARBY.text))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="odc-bench-same-place-") as tmp:
        cluster = PostgresCluster(Path(tmp), free_port())
        cluster.start(timeout=120)
        try:
            with psycopg.connect(cluster.dsn, autocommit=True) as conn:
                started = time.perf_counter()
                load(conn, args.toilets, args.parks)
                print(f"loaded {args.toilets} toilets and {args.parks} parks in {time.perf_counter() - started:.1f} s")
                for name, margins in (("degree-as-50km", [(old, old)] * args.probes), ("exact-margins", exact)):
                    params = {**base, **boxes(geoms, margins)}
                    results[name] = search(conn, sql, params, args.probes)
                    print(f"  {name:>16}: {results[name]}")
                if args.composite:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
                    conn.execute(
                        "CREATE INDEX canonical_feature_dataset_geom ON canonical_feature USING gist (dataset, geom)"
                    )
                    conn.execute("DROP INDEX canonical_feature_geom")
                    conn.execute("ANALYZE canonical_feature")
                    params = {**base, **boxes(geoms, exact)}
                    results["exact-margins, (dataset, geom) index"] = search(
                        conn, sql.replace("f.dataset || '' = k.d", "f.dataset = k.d"), params, args.probes
                    )
                    print(f"  exact-margins, (dataset, geom) index: {results['exact-margins, (dataset, geom) index']}")
                    for kind, index in (
                        ("geom", "CREATE INDEX ON {table} USING gist (geom)"),
                        ("(dataset, geom)", "CREATE INDEX ON {table} USING gist (dataset, geom)"),
                    ):
                        results[f"insert us/row, {kind} index"] = insert_cost(conn, index)
                        print(f"  insert with a {kind} GiST index: {results[f'insert us/row, {kind} index']} us/row")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
