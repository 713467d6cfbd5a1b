"""The pipeline under test: the three services as processes on the session's broker and database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from deploy.local.kafka import KafkaBroker
from deploy.local.postgres import PostgresCluster
from tests.integration.pipeline_harness import Pipeline


@pytest.fixture(scope="session")
def pipeline(
    kafka_broker: KafkaBroker, postgis: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    p = Pipeline(kafka_broker, postgis, tmp_path_factory.mktemp("services"))
    try:
        p.start()  # inside: a service that is not ready stops those already started, instead of leaving them running
        yield p
    finally:
        p.stop()


@pytest.fixture
def database(postgis: PostgresCluster) -> Iterator[str]:
    """A database of its own on the session's cluster, with PostGIS, dropped afterwards: for tests that write,
    hold or delete rows the session pipeline would otherwise relay or publish (or never relay: a change row deleted
    under it leaves a live feature the published state never gets)."""
    name = f"odc_scratch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgis.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = postgis.dsn.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
    yield dsn
    with psycopg.connect(postgis.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
