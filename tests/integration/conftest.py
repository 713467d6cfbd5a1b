"""The pipeline under test: the three services as processes on the session's broker and database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.local.kafka import KafkaBroker
from deploy.local.postgres import PostgresCluster
from tests.integration.pipeline_harness import Pipeline


@pytest.fixture(scope="session")
def pipeline(
    kafka_broker: KafkaBroker, postgis: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    p = Pipeline(kafka_broker, postgis, tmp_path_factory.mktemp("services"))
    p.start()
    try:
        yield p
    finally:
        p.stop()
