"""Where a published polygon's geometry is best parsed: GeoJSON text in PostGIS (what the publisher's
``published_feature`` upsert does) or in the publisher with shapely, sent as EWKB (issue #16).

Starts a throwaway PostgreSQL + PostGIS cluster and takes the suite's spread parks (their GeoJSON as the normaliser
writes it). For each way, the statement's wall time per geometry (the server does the work: one unnest over the
whole array, no table written) and, for the EWKB way, the publisher's own parse and WKB; a third statement passes
the text through untouched, the cost of shipping and unnesting the array alone. Best of ``--repeat``. Usage::

    .venv/bin/python -m benchmarks.published_geometry_parse --parks 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
import shapely

from benchmarks.pipeline_throughput import build_spread_events
from deploy.local.ports import free_port
from deploy.local.postgres import PostgresCluster


def _best(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    events = build_spread_events("parks_gardens", args.parks, seq=1)
    geoms = [shapely.from_geojson(e.geometry.value.decode()) for e in events if e.geometry is not None]
    texts = list(shapely.to_geojson(np.array(geoms, dtype=object)))
    n = len(texts)
    print(f"{n} parks, GeoJSON {sum(map(len, texts)) / n:,.0f} B on average")

    def to_ewkb() -> list[bytes]:
        parsed = shapely.from_geojson(np.array(texts, dtype=object))
        return list(shapely.to_wkb(shapely.set_srid(parsed, 4326), include_srid=True))

    ewkb = to_ewkb()
    cluster = PostgresCluster(Path(tempfile.mkdtemp(prefix="odc-geomparse-")) / "pg", free_port())
    cluster.start(timeout=120)
    try:
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:

            def run(sql: str, values: list[str] | list[bytes]) -> Callable[[], object]:
                return lambda: conn.execute(sql, (values,)).fetchall()

            rows = {
                "GeoJSON parsed by PostGIS (ST_GeomFromGeoJSON)": _best(
                    args.repeat,
                    run(
                        "SELECT count(ST_SetSRID(ST_GeomFromGeoJSON(g), 4326)) FROM unnest(CAST(%s AS text[])) g", texts
                    ),
                ),
                "the text passed through (shipping and unnest only)": _best(
                    args.repeat, run("SELECT count(g) FROM unnest(CAST(%s AS text[])) g", texts)
                ),
                "shapely parse + EWKB in the publisher": _best(args.repeat, to_ewkb),
                "EWKB taken by PostGIS (ST_GeomFromEWKB)": _best(
                    args.repeat, run("SELECT count(ST_GeomFromEWKB(w)) FROM unnest(CAST(%s AS bytea[])) w", ewkb)
                ),
            }
    finally:
        cluster.stop()
    for what, seconds in rows.items():
        print(f"  {seconds / n * 1e6:7.1f} µs per park  {what}")


if __name__ == "__main__":
    main()
