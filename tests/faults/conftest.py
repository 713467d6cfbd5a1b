"""Each fault test gets its own broker, database and services: faults must not leak between tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.local.kafka import KafkaBroker
from deploy.local.ports import free_port
from deploy.local.postgres import PostgresCluster
from tests.integration.pipeline_harness import Pipeline


@pytest.fixture
def fresh_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    broker = KafkaBroker(tmp_path_factory.mktemp("fkafka"), free_port(), free_port())
    broker.start(timeout=120)
    db = PostgresCluster(tmp_path_factory.mktemp("fpg"), free_port())
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
        broker.stop()
