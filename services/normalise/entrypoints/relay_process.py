"""The normaliser's outbox relay, run in a child process of the normaliser.

Why a process: the relay (read outbox rows, Avro-encode them, hand them to the producer, mark the rows)
took ~14% of the normaliser's samples in the profiled throughput run while the consumer loop — the stage that
bounds the pipeline — waited for the same core. As a child it runs on the other core (docs/performance.md has
the before/after figures). Nothing about delivery changes: rows are still written in the batch transaction
and sent at least once in order under the outbox's advisory lock. The child wakes when a batch commits (the
outbox tables' NOTIFY, migration 0005) and polls every ``relay_interval_seconds`` only as a fallback.

The parent keeps what operators see: it copies the child's counts into its Prometheus metrics and its health
into ``/readyz``, restarts the child if it dies, and stops it on shutdown. The child stops by itself if the
parent dies (``PR_SET_PDEATHSIG``, and a parent-pid check as a fallback), so a ``kill -9`` of the normaliser
leaves no orphan relaying on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray
from multiprocessing.synchronize import Event

from aiokafka.errors import KafkaError

from services.contract.codecs import Codecs
from services.infrastructure.database import make_engine
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.infrastructure.logging_setup import configure_logging
from services.infrastructure.outbox_relay import OutboxRelay, make_producer
from services.infrastructure.retry import retry_transient
from services.infrastructure.worker_runtime import PgNotifications, Wakeup, relay_loop
from services.normalise.adapters.outboxes import feature_changes_outbox, rejections_outbox
from services.normalise.settings import NormaliseSettings

log = logging.getLogger("odc.normalise.relay")

OUTBOXES = ("feature_changes", "rejections")  # index in the shared counters
_SPAWN = multiprocessing.get_context("spawn")
_PR_SET_PDEATHSIG = 1


@dataclass
class RelayBridge:
    """What the child shares with the parent: counters per outbox, its health, and the stop request."""

    sent: SynchronizedArray  # type: ignore[type-arg]
    failures: SynchronizedArray  # type: ignore[type-arg]
    healthy: Synchronized  # type: ignore[type-arg]
    stop: Event

    @classmethod
    def create(cls) -> RelayBridge:
        return cls(
            _SPAWN.Array("q", len(OUTBOXES)),
            _SPAWN.Array("q", len(OUTBOXES)),
            _SPAWN.Value("b", 0),
            _SPAWN.Event(),
        )


def start_relay_process(settings: NormaliseSettings, bridge: RelayBridge) -> SpawnProcess:
    process = _SPAWN.Process(
        target=relay_main, args=(settings, bridge, os.getpid()), name="odc-normalise-relay", daemon=True
    )
    process.start()
    return process


def relay_main(settings: NormaliseSettings, bridge: RelayBridge, parent_pid: int) -> None:
    """Entry point of the child process."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    signal.signal(signal.SIGTERM, lambda *_: bridge.stop.set())
    configure_logging(settings.log_level)
    asyncio.run(_relay_loop(settings, bridge, parent_pid))


async def _relay_loop(settings: NormaliseSettings, bridge: RelayBridge, parent_pid: int) -> None:
    s = settings
    codecs = Codecs()
    engine = make_engine(s.database_url.get_secret_value(), pool_size=2)
    producer = make_producer(s.kafka_bootstrap, "odc-normalise-relay", KafkaClientSecurity.from_settings(s))
    await retry_transient(
        producer.start, is_transient=lambda e: isinstance(e, KafkaError | OSError), what="connect the relay"
    )

    def sent(name: str, n: int) -> None:
        with bridge.sent.get_lock():
            bridge.sent[OUTBOXES.index(name)] += n

    relays = [
        OutboxRelay(engine, producer, feature_changes_outbox(codecs, s.topic_feature_changes), on_sent=sent),
        OutboxRelay(engine, producer, rejections_outbox(codecs, s.topic_rejected), on_sent=sent),
    ]

    def stopping() -> bool:
        return bridge.stop.is_set() or os.getppid() != parent_pid

    def health(ok: bool) -> None:
        bridge.healthy.value = int(ok)

    def failed(name: str, error: BaseException) -> None:
        with bridge.failures.get_lock():
            bridge.failures[OUTBOXES.index(name)] += 1

    wakeup = Wakeup()  # one for both outboxes: a batch commits both kinds of rows at once
    channels = {r.spec.notify_channel: wakeup for r in relays if r.spec.notify_channel}
    listener = PgNotifications(s.database_url.get_secret_value(), channels, stopping=stopping)
    listening = asyncio.create_task(listener.run(), name="listen")
    try:
        await relay_loop(
            relays,
            wakeup=wakeup,
            poll_seconds=s.relay_interval_seconds,
            stopping=stopping,
            on_health=health,
            on_failure=failed,
        )
    finally:
        listening.cancel()
        with contextlib.suppress(BaseException):
            await listening
        with contextlib.suppress(Exception):
            await producer.stop()
        await engine.dispose()
