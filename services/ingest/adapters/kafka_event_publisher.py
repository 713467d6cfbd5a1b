"""Publish change events to the input topic with an idempotent producer (acks=all), each signed with the
sender's key (services/contract/event_signature.py) so the normaliser can check who may change what.

Bounded in size and in time (docs/ingest.md, "Outages"):
- every event is encoded before anything is sent; an event larger than ``max_record_bytes`` is refused
  (RecordsTooLarge, a permanent error naming the limit), so a too-large record never becomes a 503;
- with ``deadline_seconds``, the broker must acknowledge every event of a call within that time. If it does
  not (or the send fails), the producer is *abandoned*: its background sender is cancelled and its buffered
  batches are failed, so nothing still in the buffer is ever sent after the caller was told "not published";
  the next call starts a fresh producer. aiokafka's idempotent producer otherwise retries a buffered batch
  forever ("If idempotence is enabled we never expire batches"), which published the records of requests
  answered long before, once the broker came back. The one exception is a produce request already written
  to the broker's socket when the deadline hit: the broker may still append it. The push API makes a retry of
  such a request harmless (event ids derived from the Idempotency-Key; the normaliser applies an id once).

Bulk form (issue #16.3, docs/ingest.md "The bulk form"): with ``bulk`` (the default), the events of a call are
sent as ChangeEventBatch messages, one per dataset and commune and window of events, each at most
``max_record_bytes`` (so every limit that holds for one record holds for it), keyed ``dataset/commune`` and
signed as a whole. An event whose bulk message of one would be over that size goes alone in the single form,
with the same key, so one dataset and commune stays on one partition (per-feature order kept). The limits,
the all-or-nothing answer and the abandon on deadline are those of the single form: a call's events are
acknowledged together or the call fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from services.contract import size_limits
from services.contract.codecs import Codecs
from services.contract.event_signature import SigningKey, sign
from services.contract.messages import ChangeEvent
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.ingest.service_layer.ports import PublishFailed, RecordsTooLarge

log = logging.getLogger("odc.ingest.publisher")


def event_key(ev: ChangeEvent) -> bytes:
    """Same feature, same partition: per-feature order is kept end to end."""
    return f"{ev.dataset}/{ev.commune}/{ev.feature_id}".encode()


def bulk_key(dataset: str, commune: str) -> bytes:
    """The key of a bulk message (and of the single messages sent with it)."""
    return f"{dataset}/{commune}".encode()


@dataclass(frozen=True)
class OutgoingMessage:
    key: bytes
    value: bytes
    events: int  # how many change events the value carries


def single_messages(encoded: Sequence[tuple[ChangeEvent, bytes]]) -> list[OutgoingMessage]:
    """One message per event (the single form, keyed per feature)."""
    return [OutgoingMessage(event_key(ev), value, 1) for ev, value in encoded]


def bulk_messages(
    encoded: Sequence[tuple[ChangeEvent, bytes]], codecs: Codecs, max_bytes: int
) -> list[OutgoingMessage]:
    """The events as ChangeEventBatch messages: grouped by dataset and commune (groups in order of their first
    event, events in their order), a group split so that no message is over ``max_bytes``; an event too large
    for a bulk message of its own goes in the single form. Pure: built from the single-form values, which
    were size-checked already, without encoding again."""
    groups: dict[tuple[str, str], list[bytes]] = {}
    for ev, value in encoded:
        groups.setdefault((ev.dataset, ev.commune), []).append(value)
    out: list[OutgoingMessage] = []
    for (dataset, commune), values in groups.items():
        key = bulk_key(dataset, commune)
        # each part: several values for one bulk message, or one value too large for any (sent as it is)
        parts: list[tuple[list[bytes], bool]] = []
        chunk: list[bytes] = []
        chunk_bytes = 0
        for value in values:
            alone_too_large = codecs.change_event_batch_size(dataset, commune, 1, len(value)) > max_bytes
            if chunk and (
                alone_too_large
                or codecs.change_event_batch_size(dataset, commune, len(chunk) + 1, chunk_bytes + len(value))
                > max_bytes
            ):
                parts.append((chunk, True))
                chunk, chunk_bytes = [], 0
            if alone_too_large:
                parts.append(([value], False))
                continue
            chunk.append(value)
            chunk_bytes += len(value)
        if chunk:
            parts.append((chunk, True))
        for values_of_part, as_bulk in parts:
            value = (
                codecs.change_event_batch_of_encoded(dataset, commune, values_of_part) if as_bulk else values_of_part[0]
            )
            out.append(OutgoingMessage(key, value, len(values_of_part)))
    return out


def abandon_producer(producer: AIOKafkaProducer) -> asyncio.Task[None]:
    """Make sure nothing buffered in ``producer`` is ever sent, then close it in the background.

    aiokafka has no public call for this (``stop()`` flushes, which waits for the broker), so this reaches
    into its sender task and accumulator, as pinned in requirements.lock (aiokafka 0.14.0). The test
    tests/integration/test_outage_answers.py proves the effect on a real broker: records of a request
    answered 503 never reach the topic after the broker returns."""
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    if task is not None and not task.done():
        task.cancel()
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is not None:
        accumulator.fail_all(KafkaTimeoutError("abandoned: the caller was told these records were not published"))

    async def close() -> None:
        with contextlib.suppress(Exception):
            await producer.stop()

    return asyncio.create_task(close(), name="odc-abandoned-producer-close")


class KafkaEventPublisher:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        codecs: Codecs,
        *,
        security: KafkaClientSecurity,
        client_id: str = "odc-ingest",
        signing_key: SigningKey | None = None,
        request_timeout_ms: int = 30000,
        max_record_bytes: int = size_limits.MAX_RECORD_BYTES,
        max_request_bytes: int = size_limits.PRODUCER_MAX_REQUEST_BYTES,
        deadline_seconds: float | None = None,
        bulk: bool = True,
    ) -> None:
        self._bootstrap = bootstrap
        self._bulk = bulk
        self._security = security
        self._client_id = client_id
        self._request_timeout_ms = request_timeout_ms
        self._max_record_bytes = max_record_bytes
        self._max_request_bytes = max_request_bytes
        self._deadline = deadline_seconds
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._topic = topic
        self._codecs = codecs
        self._key = signing_key

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=10,
            max_batch_size=1 << 20,
            request_timeout_ms=self._request_timeout_ms,
            # every odc producer's settings (compression among them), with this publisher's request size
            **{**self._security.producer_kwargs(), "max_request_size": self._max_request_bytes},
        )

    async def start(self) -> None:
        await self._started()

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = self._new_producer()
                try:
                    await producer.start()
                except BaseException:
                    abandon_producer(producer)
                    raise
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task

    def _abandon(self, producer: AIOKafkaProducer) -> None:
        if self._producer is producer:
            self._producer = None
        task = abandon_producer(producer)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def encode(self, events: Iterable[ChangeEvent]) -> list[tuple[ChangeEvent, bytes]]:
        """Every event encoded, or RecordsTooLarge naming each event over the limit (nothing is sent)."""
        encoded = [(ev, self._codecs.encode_change_event(ev)) for ev in events]
        too_large = {i: len(v) for i, (_, v) in enumerate(encoded) if len(v) > self._max_record_bytes}
        if too_large:
            raise RecordsTooLarge(too_large, self._max_record_bytes)
        return encoded

    async def publish(
        self, events: Iterable[ChangeEvent], on_sent: Callable[[int], None] | None = None, window: int = 5000
    ) -> int:
        """Send every event and wait until the broker has acknowledged all of them: PublishFailed if not
        (within the deadline), RecordsTooLarge before anything is sent if an event is over the limit."""
        return await self.publish_encoded(self.encode(events), on_sent, window)

    async def publish_encoded(
        self,
        encoded: list[tuple[ChangeEvent, bytes]],
        on_sent: Callable[[int], None] | None = None,
        window: int = 5000,
    ) -> int:
        """``publish`` of events already encoded (and size-checked) by ``encode``."""
        producer: AIOKafkaProducer | None = None
        try:
            async with asyncio.timeout(self._deadline):
                producer = await self._started()
                return await self._send(producer, encoded, on_sent, window)
        except TimeoutError as exc:
            if producer is not None:
                self._abandon(producer)
            raise PublishFailed(f"the broker did not acknowledge the records within {self._deadline:g} s") from exc
        except KafkaError as exc:
            if producer is not None:
                self._abandon(producer)
            raise PublishFailed(f"{type(exc).__name__}: {exc}") from exc
        except asyncio.CancelledError:  # the caller gave up (e.g. its own answer deadline): same as a timeout
            if producer is not None:
                self._abandon(producer)
            raise

    def messages(self, encoded: Sequence[tuple[ChangeEvent, bytes]]) -> list[OutgoingMessage]:
        """What is sent for these events: bulk messages (``bulk``) or one message per event."""
        if self._bulk:
            return bulk_messages(encoded, self._codecs, self._max_record_bytes)
        return single_messages(encoded)

    async def _send(
        self,
        producer: AIOKafkaProducer,
        encoded: list[tuple[ChangeEvent, bytes]],
        on_sent: Callable[[int], None] | None,
        window: int,
    ) -> int:
        """Send the events a window at a time (as messages: ``messages``), waiting for the broker's
        acknowledgement of each window before the next; ``on_sent`` gets the events acknowledged."""
        sent = 0
        for start in range(0, len(encoded), max(1, window)):
            part = encoded[start : start + max(1, window)]
            pending = []
            for m in self.messages(part):
                headers = sign(m.value, self._key) if self._key is not None else None
                pending.append(await producer.send(self._topic, value=m.value, key=m.key, headers=headers))
            for fut in pending:
                await fut
            sent += len(part)
            if on_sent:
                on_sent(len(part))
        return sent

    async def publish_raw(
        self, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        producer = await self._started()
        await (await producer.send(self._topic, value=value, key=key, headers=headers))
