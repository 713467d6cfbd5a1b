"""The batch consumer both workers use: a plain aiokafka consumer with manual offset commits.

Offsets are committed only after the batch's database transaction (at least once). Why not faust: see
docs/architecture.md (consuming alone cost faust ~200 us of CPU per event against ~5 us here).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import Counter, Gauge

from services.infrastructure.kafka_security import KafkaClientSecurity
from services.infrastructure.retry import retry_transient

log = logging.getLogger("odc.kafka")


def make_batch_consumer(
    topic: str,
    *,
    service: str,
    bootstrap: str,
    security: KafkaClientSecurity,
    group_id: str,
    batch_max_events: int,
    fetch_min_bytes: int = 1,
    fetch_max_wait_seconds: float = 0.5,
    max_poll_interval_seconds: int | None = None,
    session_timeout_seconds: int | None = None,
) -> AIOKafkaConsumer:
    extra: dict[str, int] = {}
    if max_poll_interval_seconds is not None:
        extra["max_poll_interval_ms"] = max_poll_interval_seconds * 1000
    if session_timeout_seconds is not None:
        extra["session_timeout_ms"] = session_timeout_seconds * 1000
        extra["heartbeat_interval_ms"] = session_timeout_seconds * 1000 // 3
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=f"odc-{service}-{os.getpid()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch_max_events,
        fetch_min_bytes=fetch_min_bytes,
        fetch_max_wait_ms=int(fetch_max_wait_seconds * 1000),
        **extra,
        **security.client_kwargs(),
    )


async def start_consumer(consumer: AIOKafkaConsumer) -> None:
    """Connect, retrying for as long as the broker is unreachable."""
    await retry_transient(
        consumer.start,
        is_transient=lambda e: isinstance(e, KafkaError | OSError),
        what="connect the consumer",
        max_delay=5.0,
    )


async def commit_offsets(
    consumer: AIOKafkaConsumer,
    offsets: Mapping[TopicPartition, int],
    *,
    service: str,
    transient: Counter,
    lag: Gauge,
    stopping: Callable[[], bool],
    on_rebalance: str,
) -> None:
    """Commit after the transaction, then set the lag gauge. If the group rebalanced meanwhile, the new owner
    reads these messages again (``on_rebalance`` says what that means for this service); a broker outage is
    retried with backoff until it ends or the worker stops."""
    attempt = 0
    while True:
        try:
            await consumer.commit(dict(offsets))
            break
        except (CommitFailedError, IllegalStateError) as error:
            log.warning("offsets not committed (the group rebalanced); %s: %s", on_rebalance, error)
            break
        except KafkaError as error:
            attempt += 1
            transient.labels(service, "offset_commit").inc()
            if stopping():
                log.warning("offsets not committed before stopping: %s", error)
                break
            log.warning("offset commit failed (attempt %d), retrying: %s", attempt, error)
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
    for tp, next_offset in offsets.items():
        hw = consumer.highwater(tp)
        if hw is not None:
            lag.labels(service, tp.topic, str(tp.partition)).set(max(0, hw - next_offset))
