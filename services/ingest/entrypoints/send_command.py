"""``odc send FILE --dataset D [--commune INSEE]``: publish one upsert per feature of a commune's file.

Events are signed (services/contract/event_signature.py): with the key file a commune got from
``odc key create`` (``--key-file`` / ODC_INGEST_SIGNING_KEY_FILE), else, on the Métropole's side with
database access, with the operator's admin key ``odc-operator-send`` (created on first use)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.event_signature import SigningKey
from services.infrastructure.database import make_engine
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics
from services.infrastructure.signing_keys import named_admin_key
from services.ingest.adapters.kafka_event_publisher import KafkaEventPublisher
from services.ingest.domain.change_events import upsert_events
from services.ingest.domain.source_records import reader_for
from services.ingest.settings import IngestSettings


class SendError(Exception):
    pass


OPERATOR_KEY_ID = "odc-operator-send"


def read_key_file(path: Path) -> SigningKey:
    """A key file written by ``odc key create``: {"key_id", "secret" (hex), "commune"}."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return SigningKey(str(doc["key_id"]), bytes.fromhex(doc["secret"]), doc.get("commune"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SendError(f"cannot read the signing key file {path}: {exc}") from exc


async def signing_key_for(settings: IngestSettings, key_file: Path | None = None) -> SigningKey:
    path = key_file or (Path(settings.signing_key_file) if settings.signing_key_file else None)
    if path is not None:
        return read_key_file(path)
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=1)
    try:
        return await named_admin_key(engine, OPERATOR_KEY_ID, "odc send on the Métropole's side")
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class SendSummary:
    dataset: str
    events: int
    seconds: float
    sequence: int


async def send_file(
    path: Path,
    dataset: str,
    commune: str | None,
    settings: IngestSettings,
    *,
    fmt: str | None = None,
    sequence: int | None = None,
    source: str = "odc-send",
    show_progress: bool = False,
    signing_key: SigningKey | None = None,
    key_file: Path | None = None,
) -> SendSummary:
    catalogue = DatasetCatalogue.load()
    definition = catalogue.get(dataset)
    if definition is None:
        raise SendError(f"unknown dataset {dataset!r}; known: {', '.join(catalogue.ids())}")
    if not path.is_file():
        raise SendError(f"no such file: {path}")
    records = list(reader_for(path.name, fmt)(path.read_bytes()))
    key = signing_key or await signing_key_for(settings, key_file)
    if key.commune is not None:  # a commune's key writes that commune only: say so now, not in a rejection
        if commune is not None and commune != key.commune:
            raise SendError(f"the key {key.key_id} signs for commune {key.commune}, not {commune}")
        commune = key.commune
    started = time.perf_counter()
    seq = sequence if sequence is not None else time.time_ns() // 1000  # microseconds: later sends win
    events = upsert_events(
        records,
        definition,
        commune=commune,
        source=source,
        sequence=seq,
        occurred_at=datetime.now(UTC),
        new_id=lambda: str(uuid.uuid4()),
    )
    try:
        security = KafkaClientSecurity.from_settings(settings)
    except ValueError as bad:  # no Kafka credentials: one line, not a traceback
        raise SendError(str(bad)) from bad
    await ensure_topics(
        settings.kafka_bootstrap,
        [TopicSpec(settings.topic_change_events, settings.input_partitions)],
        security=security,
    )
    publisher = KafkaEventPublisher(
        settings.kafka_bootstrap, settings.topic_change_events, Codecs(), security=security, signing_key=key
    )
    await publisher.start()
    try:
        if show_progress:
            with Progress(
                TextColumn(f"sending {path.name} → {dataset}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
            ) as bar:
                task = bar.add_task("send", total=len(records))
                n = await publisher.publish(events, on_sent=lambda k: bar.advance(task, k), window=500)
        else:
            n = await publisher.publish(events)
    finally:
        await publisher.stop()
    return SendSummary(dataset, n, time.perf_counter() - started, seq)


def run_send(
    path: Path,
    dataset: str,
    commune: str | None,
    fmt: str | None = None,
    show_progress: bool = True,
    key_file: Path | None = None,
) -> SendSummary:
    return asyncio.run(
        send_file(path, dataset, commune, IngestSettings(), fmt=fmt, show_progress=show_progress, key_file=key_file)
    )
