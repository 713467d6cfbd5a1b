"""The anchors each pipeline figure is compared with, on the same features in the same run:

- ``ogr2ogr_bulk_load``: GDAL's plain bulk load of the features into PostGIS (the best a loader does);
- ``raw_kafka``: produce then consume the same encoded events with aiokafka, no processing (the
  transport ceiling);
- ``naive_orm_upsert``: what a straightforward implementation does — per event, one SQLAlchemy ORM
  session: read the row, insert or update it, commit.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import shapely
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from geoalchemy2 import Geometry
from geoalchemy2.shape import from_shape
from sqlalchemy import BigInteger, Column, DateTime, Text, create_engine, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Session

from deploy.local.kafka import KafkaBroker
from services.contract.messages import ChangeEvent, GeometryEncoding
from services.normalise.domain.geometry_normalisation import normalise_geometry


def _gdal_pg(dsn: str) -> str:
    # postgresql://user:pw@host:port/db -> PG:"host=... port=... dbname=... user=... password=..."
    rest = dsn.split("://", 1)[1]
    creds, hostpart = rest.split("@", 1)
    user, password = creds.split(":", 1)
    hostport, db = hostpart.split("/", 1)
    host, port = hostport.split(":", 1)
    return f"PG:host={host} port={port} dbname={db} user={user} password={password}"


def features_geojson(
    events: list[ChangeEvent], path: Path, bounds: tuple[float, float, float, float], geometry_type: str
) -> None:
    """The same features as a GeoJSON file (geometry already in WGS84 lon/lat, as a loader would get it)."""
    feats = []
    for e in events:
        assert e.geometry is not None and e.geometry.encoding is GeometryEncoding.GEOJSON
        geom = normalise_geometry(e.geometry, geometry_type, bounds).geometry
        props = {k: v for k, v in e.attributes.items()}
        props["feature_id"] = e.feature_id
        feats.append({"type": "Feature", "properties": props, "geometry": json.loads(shapely.to_geojson(geom))})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


def ensure_gdal_installed() -> None:
    """``make bench`` installs what it needs, like ``make run``: GDAL's ogr2ogr from Debian's gdal-bin."""
    if shutil.which("ogr2ogr") is not None:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("ogr2ogr not found and cannot install it here: run sudo apt-get install -y gdal-bin")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-q"],
        ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q", "gdal-bin"],
    ):
        print("installing GDAL for the bulk-load anchor:", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")


def ogr2ogr_bulk_load(
    dsn: str, events: list[ChangeEvent], bounds: tuple[float, float, float, float], geometry_type: str
) -> dict[str, Any]:
    if shutil.which("ogr2ogr") is None:
        raise RuntimeError("ogr2ogr not found: apt-get install gdal-bin")
    work = Path(tempfile.mkdtemp(prefix="odc-ogr-"))
    src = work / "features.geojson"
    features_geojson(events, src, bounds, geometry_type)
    table = f"anchor_ogr_{uuid.uuid4().hex[:8]}"
    cmd = [
        "ogr2ogr",
        "-f",
        "PostgreSQL",
        _gdal_pg(dsn),
        str(src),
        "-nln",
        table,
        "-lco",
        "GEOMETRY_NAME=geom",
        "-lco",
        "SPATIAL_INDEX=GIST",
        "-lco",
        "FID=ogc_fid",
        "-nlt",
        "PROMOTE_TO_MULTI" if "Multi" in geometry_type else geometry_type.upper(),
        "--config",
        "PG_USE_COPY",
        "YES",
        "-gt",
        "65536",
    ]
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - t0
    shutil.rmtree(work, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"ogr2ogr failed: {done.stderr[-2000:]}")
    return {
        "events": len(events),
        "seconds": seconds,
        "events_per_second": len(events) / seconds,
        "table": table,
        "command": " ".join(c if not c.startswith("PG:") else "PG:..." for c in cmd),
    }


def raw_kafka(broker: KafkaBroker, values: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> dict[str, Any]:
    topic = f"anchor-raw-{uuid.uuid4().hex[:8]}"
    bootstrap, auth = broker.bootstrap, broker.admin_security().client_kwargs()  # the load generator: admin

    async def go() -> float:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **auth)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=1 << 20,
            **auth,
        )
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            **auth,
            group_id=f"anchor-{topic}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_poll_records=5000,
        )
        await producer.start()
        await consumer.start()
        try:
            t0 = time.monotonic()
            futures = [await producer.send(topic, value=v, key=k, headers=h) for k, v, h in values]
            for f in futures:
                await f
            got = 0
            while got < len(values):
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                got += sum(len(r) for r in batch.values())
            return time.monotonic() - t0
        finally:
            await producer.stop()
            await consumer.stop()

    seconds = asyncio.run(go())
    return {"events": len(values), "seconds": seconds, "events_per_second": len(values) / seconds}


class _Base(DeclarativeBase):
    pass


class NaiveFeature(_Base):
    __tablename__ = "anchor_naive_feature"
    dataset = Column(Text, primary_key=True)
    commune = Column(Text, primary_key=True)
    feature_id = Column(Text, primary_key=True)
    geom = Column(Geometry("GEOMETRY", srid=4326, spatial_index=True))
    attributes = Column(JSONB)
    sequence = Column(BigInteger)
    occurred_at = Column(DateTime(timezone=True))


def naive_orm_upsert(
    dsn: str, events: list[ChangeEvent], bounds: tuple[float, float, float, float], geometry_type: str
) -> dict[str, Any]:
    """Per event: normalise the geometry, open a session, read the row, insert or update, commit."""
    engine = create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
    _Base.metadata.create_all(engine)
    t0 = time.monotonic()
    for e in events:
        assert e.geometry is not None
        geom = normalise_geometry(e.geometry, geometry_type, bounds).geometry
        with Session(engine) as session:
            row = session.execute(
                select(NaiveFeature).where(
                    NaiveFeature.dataset == e.dataset,
                    NaiveFeature.commune == e.commune,
                    NaiveFeature.feature_id == e.feature_id,
                )
            ).scalar_one_or_none()
            if row is None:
                row = NaiveFeature(dataset=e.dataset, commune=e.commune, feature_id=e.feature_id)
                session.add(row)
            if row.sequence is None or e.sequence > row.sequence:
                row.geom = from_shape(geom, srid=4326)
                row.attributes = dict(e.attributes)
                row.sequence = e.sequence
                row.occurred_at = e.occurred_at
            session.commit()
    seconds = time.monotonic() - t0
    engine.dispose()
    return {"events": len(events), "seconds": seconds, "events_per_second": len(events) / seconds}
