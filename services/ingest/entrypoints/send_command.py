"""``odc send FILE --dataset D [--commune INSEE]``: publish one upsert per feature of a commune's file."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics
from services.ingest.adapters.kafka_event_publisher import KafkaEventPublisher
from services.ingest.domain.change_events import upsert_events
from services.ingest.domain.source_records import reader_for
from services.ingest.settings import IngestSettings


class SendError(Exception):
    pass


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
) -> SendSummary:
    catalogue = DatasetCatalogue.load()
    definition = catalogue.get(dataset)
    if definition is None:
        raise SendError(f"unknown dataset {dataset!r}; known: {', '.join(catalogue.ids())}")
    if not path.is_file():
        raise SendError(f"no such file: {path}")
    records = list(reader_for(path.name, fmt)(path.read_bytes()))
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
    await ensure_topics(settings.kafka_bootstrap, [TopicSpec(settings.topic_change_events, settings.input_partitions)])
    publisher = KafkaEventPublisher(settings.kafka_bootstrap, settings.topic_change_events, Codecs())
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
    path: Path, dataset: str, commune: str | None, fmt: str | None = None, show_progress: bool = True
) -> SendSummary:
    return asyncio.run(send_file(path, dataset, commune, IngestSettings(), fmt=fmt, show_progress=show_progress))
