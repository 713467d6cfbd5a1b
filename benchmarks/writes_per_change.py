"""Row writes per applied change across both services, counted by ``pg_stat_statements`` (issue #16.2).

A PostgreSQL cluster of its own with ``pg_stat_statements`` preloaded; the normaliser's and the publisher's
schemas at head in one database (as in the stack); then, for a batch of N upsert events of new features and
a second batch updating the same N features:

  normaliser transaction (apply_batch on the PostGIS unit of work) -> the feature-changes relay's own
  statements (its select and its record of what was sent, run here without Kafka) -> the publisher's record_changes and
  cut_due_versions (a version per batch).

Every INSERT / UPDATE / DELETE / COPY / MERGE statement's ``rows`` is summed per statement and divided by N
(the applied changes of the batch); reads (SELECT, locks) are not writes. Prints a Markdown table.

    .venv/bin/python -m benchmarks.writes_per_change --events 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import socket
import tempfile
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text

from deploy.local.postgres import PostgresCluster
from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import ChangeEvent, GeometryEncoding, Operation, RawGeometry, SourcePosition
from services.infrastructure.database import make_engine
from services.infrastructure.outbox_relay import grouped_messages
from services.normalise.adapters import postgis_store as normalise_store
from services.normalise.adapters.outboxes import feature_changes_outbox
from services.normalise.domain.canonical_feature import EventNormaliser
from services.normalise.service_layer.process_batch import InboundMessage, process_batch
from services.publish.adapters import postgis_store as publish_store
from services.publish.service_layer.handlers import cut_due_versions, record_changes

DATASET = "public_toilets"
COMMUNE = "69266"
SOURCE = "/odc/benchmarks/writes"


class _Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t

    def advance(self) -> None:
        self.t += timedelta(hours=1)


def _event(codecs: Codecs, gid: int, seq: int, adresse: str, at: datetime) -> bytes:
    lon, lat = 4.85 + (gid % 100) * 0.0005, 45.74 + (gid // 100) * 0.0005
    return codecs.encode_change_event(
        ChangeEvent(
            str(uuid.uuid4()),
            DATASET,
            COMMUNE,
            str(gid),
            Operation.UPSERT,
            at,
            seq,
            "writes-per-change",
            RawGeometry(
                GeometryEncoding.GEOJSON,
                json.dumps({"type": "Point", "coordinates": [lon, lat]}).encode(),
                "urn:ogc:def:crs:OGC:1.3:CRS84",
            ),
            {"gid": gid, "codinsee": COMMUNE, "adresse": adresse, "acceshandi": "1", "payant": None},
        )
    )


_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|COPY|MERGE)\b", re.I)
_TARGET = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|COPY|MERGE\s+INTO)\s+([a-z_]+)", re.I)


_WAL = "WAL bytes (every statement)"
_MS = "statement time, µs (every statement)"
_EXTRA = (_WAL, _MS)


def _writes(conninfo: dict[str, Any]) -> dict[str, int]:
    """Rows written per target table since the last reset (pg_stat_statements)."""
    out: dict[str, int] = defaultdict(int)
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        for query, rows, wal, ms in conn.execute(
            "SELECT query, rows, wal_bytes, total_exec_time FROM pg_stat_statements"
        ):
            out[_WAL] += int(wal)
            out[_MS] += int(ms * 1000)
            if rows > 0 and _WRITE.match(query):
                m = _TARGET.match(query)
                out[m.group(1) if m else query[:40]] += int(rows)
    return dict(out)


async def _measure(cluster: PostgresCluster, n: int) -> list[tuple[str, dict[str, int]]]:
    codecs = Codecs()
    catalogue = DatasetCatalogue.load()
    normaliser = EventNormaliser(catalogue)
    engine = make_engine(cluster.dsn, pool_size=2)
    await normalise_store.create_schema(engine)
    await publish_store.create_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
    spec = feature_changes_outbox(codecs, "odc.feature-changes")
    clock = _Clock()
    results = []
    for label, seq, adresse in (("created", 1, "Place de la Mairie"), ("updated", 2, "Rue de la République")):
        messages = [
            InboundMessage(_event(codecs, gid, seq, adresse, clock.now()), SourcePosition("in", 0, gid))
            for gid in range(n)
        ]
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_stat_statements_reset()"))
        report = await process_batch(
            messages,
            codecs=codecs,
            normaliser=normaliser,
            uow_factory=lambda: normalise_store.PostgisUnitOfWork(engine),
            clock=clock,
        )
        assert report.outcomes[(DATASET, label)] == n, report.outcomes
        # the relay: read the unsent changes, (send them), record them sent: its own statements
        async with engine.begin() as conn:
            rows = list(await spec.progress.unsent(conn, n))
            await spec.progress.record_sent(conn, rows)
        assert spec.group_key is not None and spec.to_group_message is not None  # one message per dataset batch
        sent = grouped_messages(rows, spec.group_key, spec.to_group_message, spec.max_message_bytes)
        changes = [c for m in sent for c in codecs.decode_feature_changes(m.value)]
        assert len(changes) == n
        await record_changes(changes, uow_factory=_publish_uow(engine, codecs), clock=clock)
        clock.advance()
        drafts = await cut_due_versions(
            catalogue=catalogue,
            uow_factory=_publish_uow(engine, codecs),
            clock=clock,
            source=SOURCE,
            max_delay_seconds=1,
        )
        assert len(drafts) == 1 and len(drafts[0].entries) == n
        results.append((label, _writes(cluster.superuser_conninfo(cluster.database))))
    await engine.dispose()
    return results


def _publish_uow(engine: Any, codecs: Codecs) -> Any:
    return lambda: publish_store.PostgresPublishUnitOfWork(engine, codecs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def table(results: list[tuple[str, dict[str, int]]], n: int) -> str:
    tables = sorted({t for _, w in results for t in w if t not in _EXTRA})
    lines = [
        "| table written | " + " | ".join(f"rows per {label} change" for label, _ in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    for t in tables:
        lines.append(f"| {t} | " + " | ".join(f"{w.get(t, 0) / n:.3f}" for _, w in results) + " |")
    lines.append(
        "| **total rows** | "
        + " | ".join(f"**{sum(v for t, v in w.items() if t not in _EXTRA) / n:.2f}**" for _, w in results)
        + " |"
    )
    for extra in _EXTRA:
        lines.append(f"| {extra} | " + " | ".join(f"{w.get(extra, 0) / n:,.0f}" for _, w in results) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="odc-writes-pg-"))
    cluster = PostgresCluster(
        root,
        _free_port(),
        extra_settings={"shared_preload_libraries": "'pg_stat_statements'", "pg_stat_statements.track": "all"},
    )
    cluster.start(timeout=120)
    try:
        results = asyncio.run(_measure(cluster, args.events))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.events} events per batch, one version per batch\n")
    print(table(results, args.events))


if __name__ == "__main__":
    main()
