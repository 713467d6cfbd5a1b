"""Publish change events to the input topic with an idempotent producer (acks=all), each signed with the
sender's key (services/contract/event_signature.py) so the normaliser can check who may change what."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.contract.codecs import Codecs
from services.contract.event_signature import SigningKey, sign
from services.contract.messages import ChangeEvent
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.ingest.service_layer.ports import PublishFailed


def event_key(ev: ChangeEvent) -> bytes:
    """Same feature, same partition: per-feature order is kept end to end."""
    return f"{ev.dataset}/{ev.commune}/{ev.feature_id}".encode()


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
    ) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=10,
            max_batch_size=1 << 20,
            request_timeout_ms=request_timeout_ms,
            **security.producer_kwargs(),
        )
        self._topic = topic
        self._codecs = codecs
        self._key = signing_key

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(
        self, events: Iterable[ChangeEvent], on_sent: Callable[[int], None] | None = None, window: int = 5000
    ) -> int:
        """Send every event and wait until the broker has acknowledged all of them (PublishFailed if not)."""
        try:
            return await self._publish(events, on_sent, window)
        except KafkaError as exc:
            raise PublishFailed(f"{type(exc).__name__}: {exc}") from exc

    async def _publish(self, events: Iterable[ChangeEvent], on_sent: Callable[[int], None] | None, window: int) -> int:
        pending = []
        sent = 0
        for ev in events:
            value = self._codecs.encode_change_event(ev)
            headers = sign(value, self._key) if self._key is not None else None
            pending.append(await self._producer.send(self._topic, value=value, key=event_key(ev), headers=headers))
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

    async def publish_raw(
        self, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        await (await self._producer.send(self._topic, value=value, key=key, headers=headers))
