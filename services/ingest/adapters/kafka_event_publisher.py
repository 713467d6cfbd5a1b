"""Publish change events to the input topic with an idempotent producer (acks=all)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaProducer

from services.contract.codecs import Codecs
from services.contract.messages import ChangeEvent


def event_key(ev: ChangeEvent) -> bytes:
    """Same feature, same partition: per-feature order is kept end to end."""
    return f"{ev.dataset}/{ev.commune}/{ev.feature_id}".encode()


class KafkaEventPublisher:
    def __init__(self, bootstrap: str, topic: str, codecs: Codecs, client_id: str = "odc-ingest") -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=10,
            max_batch_size=1 << 20,
        )
        self._topic = topic
        self._codecs = codecs

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(
        self, events: Iterable[ChangeEvent], on_sent: Callable[[int], None] | None = None, window: int = 5000
    ) -> int:
        """Send every event and wait until the broker has acknowledged all of them."""
        pending = []
        sent = 0
        for ev in events:
            pending.append(
                await self._producer.send(self._topic, value=self._codecs.encode_change_event(ev), key=event_key(ev))
            )
            if len(pending) >= window:
                for fut in pending:
                    await fut
                sent += len(pending)
                if on_sent:
                    on_sent(len(pending))
                pending.clear()
        for fut in pending:
            await fut
        sent += len(pending)
        if on_sent and pending:
            on_sent(len(pending))
        return sent

    async def publish_raw(self, value: bytes, key: bytes | None = None) -> None:
        await (await self._producer.send(self._topic, value=value, key=key))
