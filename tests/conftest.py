"""Session-wide test infrastructure: a real Kafka broker and a real PostGIS cluster on free ports, in
throwaway directories, started by the suite itself. A failure to start them fails the tests (never a skip)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.local.kafka import KafkaBroker  # noqa: E402
from deploy.local.ports import free_port  # noqa: E402
from deploy.local.postgres import PostgresCluster  # noqa: E402


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), free_port(), free_port())
    try:
        broker.start(timeout=120)  # inside: a broker that never got ready is stopped too (stop is idempotent)
        yield broker
    finally:
        broker.stop()


def postgres_data_dir(prefix: str) -> Path:
    """PostgreSQL runs as an unprivileged user that must traverse its data dir's parents. pytest's own
    tmp tree is reset to 0700 whenever another pytest session starts, so keep the cluster outside it."""
    return Path(tempfile.mkdtemp(prefix=f"odc-{prefix}-"))


@pytest.fixture(scope="session")
def postgis() -> Iterator[PostgresCluster]:
    root = postgres_data_dir("test-pg")
    cluster = PostgresCluster(root, free_port())
    try:
        cluster.start(timeout=120)  # inside, as above
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
