"""Each fault test gets its own broker, database and services: faults must not leak between tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from deploy.local.kafka import KafkaBroker
from deploy.local.ports import free_port
from deploy.local.postgres import PostgresCluster
from tests.conftest import postgres_data_dir
from tests.integration.pipeline_harness import Pipeline


@pytest.fixture
def fresh_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    broker = KafkaBroker(tmp_path_factory.mktemp("fkafka"), free_port(), free_port())
    broker.start(timeout=120)
    pg_root = postgres_data_dir("fault-pg")
    db = PostgresCluster(pg_root, free_port())
    try:
        db.start(timeout=120)
        p = Pipeline(broker, db, tmp_path_factory.mktemp("fservices"))
        try:
            yield p
        finally:
            p.stop()
    finally:
        if db.is_running():
            db.stop()
        shutil.rmtree(pg_root, ignore_errors=True)
        broker.stop()
