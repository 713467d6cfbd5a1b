"""``odc send FILE --dataset D [--commune INSEE]``: publish one upsert per feature of a commune's file.

Events are signed (services/contract/event_signature.py): with the key file a commune got from
``odc key create`` (``--key-file`` / ODC_INGEST_SIGNING_KEY_FILE), else, on the Métropole's side with
database access, with the operator's admin key ``odc-operator-send`` (created on first use)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.exc import SQLAlchemyError

from services.contract.codecs import Codecs
from services.contract.datasets.catalogue import DatasetCatalogue, DatasetDefinition
from services.contract.event_signature import SigningKey
from services.contract.messages import ChangeEvent
from services.infrastructure.database import is_transient, make_engine
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.infrastructure.kafka_topics import TopicSpec, ensure_topics
from services.infrastructure.signing_keys import named_admin_key
from services.ingest.adapters.event_outcomes import wait_for_outcomes
from services.ingest.adapters.kafka_event_publisher import KafkaEventPublisher
from services.ingest.domain.change_events import upsert_events
from services.ingest.domain.send_report import SendReport, summarise
from services.ingest.domain.source_profiles import SourceProfile, apply_to_records
from services.ingest.domain.source_records import reader_for
from services.ingest.service_layer.ports import PublishFailed, RecordsTooLarge
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
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise SendError(
            f"nothing was sent: the database holding the operator's signing key is unreachable "
            f"({type(exc).__name__}); retry later, or sign with a commune's key (--key-file)"
        ) from exc
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class SendSummary:
    dataset: str
    events: int
    seconds: float
    sequence: int
    commune: str | None = None
    report: SendReport | None = None  # None: not waited for (--no-wait), or the outcome could not be read
    wait_note: str | None = None  # why there is no report


@dataclass(frozen=True)
class PreparedSend:
    definition: DatasetDefinition
    events: list[ChangeEvent]
    commune: str | None
    sequence: int


def prepare_send(
    path: Path,
    dataset: str,
    commune: str | None,
    *,
    fmt: str | None = None,
    sequence: int | None = None,
    as_of: datetime | None = None,
    source: str = "odc-send",
    profile: SourceProfile | None = None,
    territory: str | None = None,
) -> PreparedSend:
    """The events a send would publish (what ``--dry-run`` validates locally). ``profile``: the file's layout
    (odc profile); its records are turned into the dataset's fields first. A file sent "as of" a time gets that
    time as its sequence and occurred_at, so re-sending it is stale or unchanged and never overwrites a change
    made after that time; otherwise the sequence is now in microseconds (later sends win)."""
    catalogue = DatasetCatalogue.load(territory=territory or IngestSettings().territory)
    definition = catalogue.get(dataset)
    if definition is None:
        raise SendError(f"unknown dataset {dataset!r}; known: {', '.join(catalogue.ids())}")
    if not path.is_file():
        raise SendError(f"no such file: {path}")
    records = list(reader_for(path.name, fmt)(path.read_bytes()))
    if profile is not None:
        if profile.dataset != dataset:
            raise SendError(f"the profile describes a file of {profile.dataset!r}, not {dataset!r}")
        records = apply_to_records(profile, records, definition.identity_fields)
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    seq = sequence if sequence is not None else int(as_of.timestamp() * 1_000_000) if as_of else time.time_ns() // 1000
    events = list(
        upsert_events(
            records,
            definition,
            commune=commune,
            source=source,
            sequence=seq,
            occurred_at=as_of or datetime.now(UTC),
            new_id=lambda: str(uuid.uuid4()),
        )
    )
    return PreparedSend(definition, events, commune, seq)


async def send_file(
    path: Path,
    dataset: str,
    commune: str | None,
    settings: IngestSettings,
    *,
    fmt: str | None = None,
    sequence: int | None = None,
    as_of: datetime | None = None,
    source: str = "odc-send",
    show_progress: bool = False,
    signing_key: SigningKey | None = None,
    key_file: Path | None = None,
    profile: SourceProfile | None = None,
    notify: Callable[[str], None] | None = None,
    wait_seconds: float = 0.0,
) -> SendSummary:
    """Publish one upsert per record; with ``wait_seconds`` > 0, then wait (bounded) for what became of them.
    Raises SendError (nothing sent: bad input) or SendIncomplete (the broker stayed unreachable)."""

    def prepare(for_commune: str | None) -> PreparedSend:
        return prepare_send(
            path,
            dataset,
            for_commune,
            fmt=fmt,
            sequence=sequence,
            as_of=as_of,
            source=source,
            profile=profile,
            territory=settings.territory,
        )

    prepare(commune)  # raises SendError (unknown dataset, no file, wrong profile) before any key is read
    try:
        security = KafkaClientSecurity.from_settings(settings)
    except ValueError as bad:  # no Kafka credentials: one line, not a traceback
        raise SendError(str(bad)) from bad
    key = signing_key or await signing_key_for(settings, key_file)
    if key.commune is not None:  # a commune's key writes that commune only: say so now, not in a rejection
        if commune is not None and commune != key.commune:
            raise SendError(f"the key {key.key_id} signs for commune {key.commune}, not {commune}")
        commune = key.commune
    prepared = prepare(commune)
    events, seq = prepared.events, prepared.sequence
    started = time.perf_counter()
    publisher = KafkaEventPublisher(
        settings.kafka_bootstrap,
        settings.topic_change_events,
        Codecs(),
        security=security,
        signing_key=key,
        request_timeout_ms=10000,
        max_record_bytes=settings.max_record_bytes,
        max_request_bytes=settings.producer_max_request_bytes,
        deadline_seconds=WINDOW_DEADLINE_SECONDS,
        bulk=settings.bulk_send,
    )
    try:
        encoded = publisher.encode(events)  # every record is checked before anything is sent
    except RecordsTooLarge as large:
        raise SendError(f"nothing was sent: {large}") from large
    sender = RetryingSend(publisher, encoded, settings.send_retry_seconds, notify=notify or (lambda _: None))
    try:
        try:
            await ensure_topics(
                settings.kafka_bootstrap,
                [TopicSpec(settings.topic_change_events, settings.input_partitions)],
                security=security,
                timeout=settings.send_retry_seconds,
            )
        except RuntimeError as exc:
            raise SendIncomplete(0, len(encoded), f"the broker at {settings.kafka_bootstrap} is unreachable") from exc
        if show_progress:
            with Progress(
                TextColumn(f"sending {path.name} → {dataset}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
            ) as bar:
                task = bar.add_task("send", total=len(encoded))
                n = await sender.run(on_sent=lambda k: bar.advance(task, k))
        else:
            n = await sender.run()
    finally:
        await publisher.stop()
    summary = SendSummary(dataset, n, time.perf_counter() - started, seq, commune)
    if wait_seconds <= 0 or not events:
        return summary
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=1)
    try:
        outcomes = await wait_for_outcomes(engine, dataset, events, wait_seconds)
    except (OSError, SQLAlchemyError) as exc:
        note = f"the outcome could not be read ({str(exc).splitlines()[0][:200]}); see `odc status --commune`"
        return replace(summary, wait_note=note)
    finally:
        await engine.dispose()
    return replace(summary, report=summarise(outcomes))


WINDOW = 500  # events acknowledged together
WINDOW_DEADLINE_SECONDS = 10.0  # a window not acknowledged in this time is retried (same events, same ids)


class SendIncomplete(Exception):
    """The broker stayed unreachable past the retry time: ``sent`` of ``total`` events were acknowledged."""

    def __init__(self, sent: int, total: int, why: str) -> None:
        self.sent, self.total, self.why = sent, total, why
        super().__init__(
            f"{why}: sent {sent} of {total} events; {total - sent} not sent. Running the same command again "
            f"sends every event again (those already applied are counted unchanged)."
        )


class RetryingSend:
    """Send windows of events in order; a window the broker does not acknowledge is sent again (the same
    events, so the same event ids: the normaliser applies each once) with backoff, until ``retry_seconds``
    pass without progress. ``notify`` gets one line when the broker becomes unreachable and one when it is back."""

    def __init__(
        self,
        publisher: KafkaEventPublisher,
        encoded: list[tuple[ChangeEvent, bytes]],
        retry_seconds: float,
        notify: Callable[[str], None],
    ) -> None:
        self._publisher = publisher
        self._encoded = encoded
        self._retry_seconds = retry_seconds
        self._notify = notify

    async def run(self, on_sent: Callable[[int], None] | None = None) -> int:
        sent, total = 0, len(self._encoded)
        failing_since: float | None = None
        backoff = 0.5
        while sent < total:
            window = self._encoded[sent : sent + WINDOW]
            try:
                await self._publisher.publish_encoded(window, window=WINDOW)
            except PublishFailed as failed:
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                    self._notify(
                        f"the broker is not answering ({failed}); retrying for up to {self._retry_seconds:g} s "
                        f"— {sent} of {total} events sent so far"
                    )
                if now - failing_since >= self._retry_seconds:
                    raise SendIncomplete(
                        sent, total, f"the broker did not answer for {self._retry_seconds:g} s"
                    ) from failed
                await asyncio.sleep(min(backoff, max(0.0, failing_since + self._retry_seconds - now)))
                backoff = min(backoff * 2, 5.0)
                continue
            if failing_since is not None:
                self._notify(f"the broker is back; sending the remaining {total - sent} events")
                failing_since, backoff = None, 0.5
            sent += len(window)
            if on_sent:
                on_sent(len(window))
        return sent


def run_send(
    path: Path,
    dataset: str,
    commune: str | None,
    fmt: str | None = None,
    show_progress: bool = True,
    key_file: Path | None = None,
    as_of: datetime | None = None,
    profile: SourceProfile | None = None,
    notify: Callable[[str], None] | None = None,
    wait_seconds: float = 0.0,
) -> SendSummary:
    # The client library logs every failed connection attempt (thousands of lines in an outage): the command
    # says it once itself (``notify``) and in its final line.
    for name in ("aiokafka", "kafka"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return asyncio.run(
        send_file(
            path,
            dataset,
            commune,
            IngestSettings(),
            fmt=fmt,
            show_progress=show_progress,
            key_file=key_file,
            as_of=as_of,
            profile=profile,
            notify=notify,
            wait_seconds=wait_seconds,
        )
    )
