"""The benchmark suite's report code (benchmarks/suite.py, write_count.py, process_cpu.py) on made-up results:
every stage can be skipped without a division by zero, and the writes and CPU per event are read right."""

from __future__ import annotations

import json
from typing import Any

import pytest
import shapely

from benchmarks import suite
from benchmarks.pipeline_throughput import build_events, build_spread_events
from benchmarks.process_cpu import ProcStat, parse_stat, per_event_us, tree_seconds
from benchmarks.write_count import StatementStat, summarise, write_kind
from services.contract.datasets.catalogue import DatasetCatalogue

MACHINE = {"cpu": "x", "cores": "2", "memory": "1G", "kernel": "6", "python": "3.11", "postgres": "15", "kafka": "4"}


def rate(events: int, seconds: float) -> dict[str, Any]:
    return {"events": events, "seconds": seconds, "events_per_second": events / seconds}


def all_skipped() -> dict[str, Any]:
    r: dict[str, Any] = {"machine": MACHINE, "peak_rss_mb": {"normalise": 100.0}}
    for label, *_ in suite.THROUGHPUT_STAGES:
        for x in ("pipeline", "ogr2ogr", "raw_kafka", "naive_orm"):
            r[f"{label}_{x}"] = suite.skipped(f"--{label} 0")
    for key in ("latency", "latency_low_rate", "scale_out_one_worker", "scale_out_two_workers", "replay"):
        r[key] = suite.skipped("size 0")
    r["version_cost"] = suite.skipped("--version-sizes '0'")
    r["live_same_events"] = suite.live_same_events(r, 0)
    return r


def test_every_stage_skipped_renders_skipped_rows_and_valid_json() -> None:
    r = all_skipped()
    table = suite.render(r)
    assert table.count("skipped") == 3 + 2 + 1 + 1 + 1  # throughput rows, latency rows, replay, version, scale-out
    assert json.loads(json.dumps(r))["live_same_events"]["skipped"] is True


def test_scale_out_skipped_alone_still_rates_the_replay_and_latency_events() -> None:
    """The issue's ZeroDivisionError: --scale-out-points 0 left the live rate of the latency events undefined."""
    r = all_skipped()
    r["points_pipeline"] = rate(2000, 2.0)
    r["points_ogr2ogr"] = rate(2000, 0.1)
    r["points_naive_orm"] = rate(200, 2.0)
    r["latency"] = {"rate": 100.0, "events": 500, "p50": 0.2, "p99": 0.5, "max": 0.6}
    r["live_same_events"] = same = suite.live_same_events(r, 500)
    assert same["events"] == 2500
    assert same["seconds"] == pytest.approx(2.0 + 500 / 1000)
    r["replay"] = {"events_in_log": 2500, "events_per_second": 1250.0}
    table = suite.render(r)
    assert "| end-to-end throughput, points (2,000 events" in table
    assert "5%" in table and "10.0×" in table  # 1,000 vs 20,000 ogr2ogr and vs 100 naive
    assert "1.25×" in table  # replay 1,250 against 1,000 live
    assert "scale-out: 1 → 2 normaliser workers | skipped (size 0)" in table
    r["version_cost"] = [{"features": 1000, "median_ms": 20.0}, {"features": 10000, "median_ms": 30.0}]
    assert (
        "| cut a 10-change version on 10,000 vs 1,000 features | 30.0 vs 20.0 ms (median) | target ≤ 2× | 1.50× |"
        in (suite.render(r))
    )


def test_latency_events_without_any_throughput_stage_leave_the_live_rate_skipped() -> None:
    r = all_skipped()
    same = suite.live_same_events(r, 300)
    assert same["skipped"] is True and same["events"] == 300


@pytest.mark.parametrize(
    ("a", "b", "expected"), [(1.0, 0.0, None), (None, 2.0, None), (3.0, None, None), (3.0, 2.0, 1.5)]
)
def test_ratio_of_an_empty_stage_is_none(a: float | None, b: float | None, expected: float | None) -> None:
    assert suite.ratio(a, b) == expected


def test_writes_and_cpu_per_event_are_in_the_table() -> None:
    r = all_skipped()
    stats = [
        StatementStat("odc_normalise", "COPY staging FROM STDIN (FORMAT binary)", 2, 1000, True),
        StatementStat("odc_normalise", "INSERT INTO processed_event SELECT unnest($1)", 2, 1000, True),
        StatementStat("odc_publish", "UPDATE change_log SET version = $1 WHERE change_id = ANY($2)", 4, 1000, True),
        StatementStat("odc_publish", "SELECT * FROM change_log WHERE version IS NULL FOR UPDATE", 50, 3000, True),
    ]
    r["points_pipeline"] = {
        **rate(1000, 1.0),
        "writes": summarise(stats, 1000),
        "cpu_us_per_event": {"load_generator": 50.0, "normalise": 400.0, "postgres": 300.0, "total": 750.0},
    }
    table = suite.render(r)
    assert "| points | 3.00 (odc_normalise 2.0, odc_publish 1.0) | 0.008 | 50 | 400 |  |  | 300 |  | 750 |" in table


def test_summary_of_writes_per_event() -> None:
    stats = [
        StatementStat("odc_normalise", "INSERT INTO a VALUES ($1)", 10, 10, True),
        StatementStat("odc_normalise", "WITH x AS (DELETE FROM b RETURNING *) SELECT count(*) FROM x", 1, 1, False),
        StatementStat("odc_publish", "UPDATE c SET v = $1", 5, 20, True),
        StatementStat("odc", "SELECT count(*) FROM processed_event", 99, 99, True),
        StatementStat("odc_publish", "COPY (SELECT 1) TO STDOUT", 1, 1, True),
    ]
    s = summarise(stats, 10)
    assert s["rows_per_event"] == pytest.approx(3.1)
    assert s["calls_per_event"] == pytest.approx(1.6)
    assert s["by_role"]["odc_publish"] == {"rows_per_event": 2.0, "calls_per_event": 0.5}
    assert "odc" not in s["by_role"]
    assert set(s["by_kind"]) == {"INSERT", "DELETE", "UPDATE"}
    assert s["top"][0]["query"] == "UPDATE c SET v = $1"
    assert summarise(stats, 0)["rows_per_event"] is None


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = excluded.a", "INSERT"),
        ("  update t set a = 1", "UPDATE"),
        ("DELETE FROM t WHERE a = $1", "DELETE"),
        ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DO NOTHING", "MERGE"),
        ('COPY "staging" (a, b) FROM STDIN (FORMAT binary)', "COPY"),
        ("COPY t TO STDOUT", None),
        ("SELECT a FROM t FOR UPDATE SKIP LOCKED", None),
        ("WITH c AS (SELECT a FROM t FOR UPDATE) SELECT * FROM c", None),
        ("WITH c AS (SELECT a FROM t FOR NO KEY UPDATE) UPDATE t SET a = 2 FROM c WHERE t.a = c.a", "UPDATE"),
        ("WITH n AS (INSERT INTO t VALUES (1) RETURNING a) SELECT a FROM n", "INSERT"),
        ("/* relay */ DELETE FROM outbox", "DELETE"),
        ("SELECT pg_advisory_xact_lock($1)", None),
        ("CREATE TEMP TABLE s (a int)", None),
    ],
)
def test_write_kind(query: str, kind: str | None) -> None:
    assert write_kind(query) == kind


def test_proc_stat_fields_counted_from_the_last_parenthesis() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    line = "42 (odd) name)) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 30 20 20 0 1 0 5 0 0"
    assert parse_stat(line, clk_tck=100) == ProcStat(ppid=7, own_seconds=3.0, reaped_seconds=0.5)


def test_tree_seconds_counts_descendants_and_reaped_children_once() -> None:
    stats = {
        1: ProcStat(0, 1.0, 0.0),
        10: ProcStat(1, 2.0, 0.5),  # the postmaster, with an ended backend's 0.5 s
        11: ProcStat(10, 0.25, 0.0),
        12: ProcStat(11, 0.25, 0.0),
        20: ProcStat(1, 9.0, 0.0),  # another tree
    }
    assert tree_seconds(stats, 10) == pytest.approx(3.0)
    assert tree_seconds(stats, 99) == 0.0
    assert per_event_us({"pg": 1.0}, {"pg": 1.5}, 1000) == {"pg": 500.0, "total": 500.0}
    assert per_event_us({"pg": 1.0}, {"pg": 1.5}, 0) == {}


def neighbours_per_replica(events: list[Any]) -> float:
    boxes = [shapely.box(*shapely.from_geojson(e.geometry.value).bounds) for e in events[510:]]
    tree = shapely.STRtree(boxes)
    return sum(len(tree.query(b, predicate="intersects")) - 1 for b in boxes) / len(boxes)


def test_spread_polygons_land_on_free_places_of_the_area_with_fresh_names() -> None:
    events = build_spread_events("parks_gardens", 3000, seq=1)
    assert len(events) == 3000 and len({e.feature_id for e in events}) == 3000
    originals = {e.attributes.get("nom") for e in events[:510]}
    assert not originals & {e.attributes.get("nom") for e in events[510:]}
    boundaries = DatasetCatalogue.load().commune_boundaries
    for e in events[510::50]:  # the replica belongs to the commune it lands in
        centre = shapely.box(*shapely.from_geojson(e.geometry.value).bounds).centroid
        assert shapely.geometry.shape(boundaries[e.commune]).contains(centre)
        assert str(e.attributes["code_insee"]) == e.commune
    spread, dense = neighbours_per_replica(events), neighbours_per_replica(build_events("parks_gardens", 3000, seq=1))
    assert spread < 0.25 * dense, (spread, dense)
