"""benchmarks/write_count.py against the real local cluster: pg_stat_statements is preloaded by
deploy/local/postgres.py, and the writes of each role are counted in rows and calls, reads left out."""

from __future__ import annotations

import shutil
import uuid

import psycopg
import pytest
from psycopg import sql

from benchmarks import write_count
from deploy.local.ports import free_port
from deploy.local.postgres import PostgresCluster
from tests.conftest import postgres_data_dir


def test_writes_of_each_role_are_counted_per_event(postgis: PostgresCluster) -> None:
    write_count.ensure_extension(postgis.dsn)
    role, table = f"odc_wc_{uuid.uuid4().hex[:8]}", f"wc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**postgis.superuser_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD 'x'").format(sql.Identifier(role)))
    role_dsn = postgis.dsn.replace(f"//{postgis.user}:{postgis.password}@", f"//{role}:x@", 1)
    with psycopg.connect(postgis.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    write_count.reset(postgis.dsn)
    with psycopg.connect(role_dsn) as conn:
        conn.execute(f"INSERT INTO {table} SELECT g, 'a' FROM generate_series(1, 10) g")
        with conn.cursor().copy(f"COPY {table} (id, v) FROM STDIN") as copy:
            for i in range(11, 21):
                copy.write_row((i, "b"))
        conn.execute(f"UPDATE {table} SET v = 'c' WHERE id <= 5")
        conn.execute(f"SELECT * FROM {table} FOR UPDATE").fetchall()
    summary = write_count.summarise(write_count.read(postgis.dsn), events=10)
    mine = summary["by_role"][role]
    assert mine["rows_per_event"] == 2.5  # 10 inserted + 10 copied + 5 updated, over 10 events
    assert mine["calls_per_event"] == 0.3
    assert summary["by_kind"]["COPY"]["rows_per_event"] == 1.0
    assert write_count.written_rows(postgis.dsn) >= 25


def test_a_cluster_made_without_the_library_gets_it_at_its_next_start() -> None:
    root = postgres_data_dir("wc-restart")
    old = PostgresCluster(root, free_port(), extra_settings={"shared_preload_libraries": "''"})
    try:
        old.start(timeout=120)
        with pytest.raises(RuntimeError, match="restart the cluster"):
            write_count.ensure_extension(old.dsn)
        old.stop()
        again = PostgresCluster(root, old.port)  # today's settings, same data directory
        again.start(timeout=120)
        write_count.ensure_extension(again.dsn)
        write_count.reset(again.dsn)
        with psycopg.connect(again.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (a int)")
            conn.execute("INSERT INTO t VALUES (1), (2)")
        assert write_count.written_rows(again.dsn) == 2
    finally:
        old.stop()
        shutil.rmtree(root, ignore_errors=True)
