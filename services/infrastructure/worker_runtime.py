"""The one runtime both Kafka workers (normaliser, publisher) are wired onto.

- ``Supervisor``: runs the process's tasks, stops them on SIGTERM/SIGINT, and is the ONE place that exits the
  process on a bug (``crash``: log loudly, ``os._exit(70)``, let the process supervisor restart us). A task
  that raises, or ends while nobody asked it to stop, is a bug.
- ``BatchLoop``: consume a batch (``getmany``), prepare it (no I/O; it may overlap with the previous batch's
  transaction), apply it in one transaction (transient failures retried with backoff, without polling
  further), then commit its offsets. Transactions stay strictly one after the other, and offset commits in
  order, each after its own batch's transaction (``CommitChain``); the next batch's transaction does not wait for
  the previous batch's offset commit (a broker round trip, ~15 ms on a loaded machine, was on every batch's
  path). A non-transient failure crashes before the offsets move, so the batch is read again after the fix.
- ``relay_loop``: drain outbox relays, then wait for a ``Wakeup`` (a PostgreSQL NOTIFY sent at the commit of
  the rows, or an in-process signal) or, as a fallback, the poll interval; rows a relay saw but may not send
  yet (held back by an older transaction still open, outbox_relay.TxidCursor) are looked at again after a
  short, growing wait rather than the poll (no NOTIFY comes when the older transaction ends).
- ``PgNotifications``: LISTEN on channels and set their ``Wakeup``s; reconnects on its own (a missed
  notification only costs one poll interval).
- The operations routes (/metrics, /healthz, /readyz) and their uvicorn server are in operations_http.py,
  kept apart so the normaliser's relay child process does not load FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy.engine import make_url

from services.infrastructure.database import async_url, is_transient
from services.infrastructure.kafka_consumer import commit_offsets, start_consumer
from services.infrastructure.outbox_relay import OutboxRelay
from services.infrastructure.retry import retry_transient
from services.infrastructure.worker_metrics import WorkerMetrics

log = logging.getLogger("odc.runtime")

EXIT_BUG = 70  # EX_SOFTWARE: the process stopped on a bug, before moving any offset
P = TypeVar("P")


class Supervisor:
    """The process's tasks, their stop, and the one exit on a bug."""

    def __init__(self, service: str, *, grace_seconds: float = 15.0) -> None:
        self.service = service
        self.stopping = asyncio.Event()
        self.grace_seconds = grace_seconds

    @property
    def should_stop(self) -> bool:
        return self.stopping.is_set()

    def crash(self, what: str, error: BaseException | None = None) -> NoReturn:
        """Stop the process now, loudly: nothing after this point runs, so no offset moves past the batch
        being handled. The process supervisor (``make run``, systemd, Kubernetes) restarts it."""
        exc_info = (type(error), error, error.__traceback__) if error is not None else sys.exc_info()
        log.critical("%s: %s; exiting with %d", self.service, what, EXIT_BUG, exc_info=exc_info)
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(EXIT_BUG)

    def _watch(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self.should_stop:  # failing while asked to stop: the process is ending anyway
            log.error("%s failed while stopping", task.get_name(), exc_info=error)
            return
        if error is not None:
            self.crash(f"task {task.get_name()} failed", error)
        if not self.should_stop:
            self.crash(f"task {task.get_name()} ended while nothing asked it to stop")

    def _start(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        task = asyncio.create_task(loop(), name=name)
        task.add_done_callback(self._watch)
        return task

    async def run(
        self,
        *,
        prepare: Callable[[], Awaitable[None]],
        tasks: Mapping[str, Callable[[], Coroutine[Any, Any, None]]],
        before_prepare: Mapping[str, Callable[[], Coroutine[Any, Any, None]]] | None = None,
        cleanup: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Start ``before_prepare`` (e.g. the operations routes, so /healthz answers while preparing), run
        ``prepare``, start ``tasks``, then wait for SIGTERM/SIGINT; give the tasks ``grace_seconds`` to end."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        running = [self._start(n, f) for n, f in (before_prepare or {}).items()]
        try:
            await prepare()
            running += [self._start(n, f) for n, f in tasks.items()]
            await self.stopping.wait()
            _, late = await asyncio.wait(running, timeout=self.grace_seconds) if running else (set(), set())
            for t in late:
                log.warning("%s did not stop in %.0f s; cancelling it", t.get_name(), self.grace_seconds)
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        finally:
            self.stopping.set()
            for t in running:
                t.cancel()
            if cleanup is not None:
                await cleanup()
        log.info("%s stopped", self.service)


class Wakeup:
    """An in-process signal with a timeout: ``wait`` returns when ``set`` was called since the last wait, or
    after ``timeout`` seconds (the poll kept as a fallback)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """True when woken by a signal, False on the timeout."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
            woken = True
        except TimeoutError:
            woken = False
        self._event.clear()
        return woken


def libpq_dsn(database_url: str) -> str:
    """The SQLAlchemy URL as a libpq connection string for a plain psycopg connection."""
    return make_url(async_url(database_url)).set(drivername="postgresql").render_as_string(hide_password=False)


class PgNotifications:
    """LISTEN on PostgreSQL channels and set a ``Wakeup`` per channel on each notification. A NOTIFY sent in a
    transaction is delivered at its commit, so a wake-up never comes before the rows are visible. Runs until
    ``stopping``; reconnects with backoff when the database goes away (the poll fallback covers the gap)."""

    def __init__(self, database_url: str, wakeups: Mapping[str, Wakeup], *, stopping: Callable[[], bool]) -> None:
        self._dsn = libpq_dsn(database_url)
        self._wakeups = dict(wakeups)
        self._stopping = stopping
        self.connected = False

    async def run(self) -> None:
        delay = 0.2
        while not self._stopping():
            try:
                async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as conn:
                    for channel in self._wakeups:
                        await conn.execute(f'LISTEN "{channel}"')
                    self.connected, delay = True, 0.2
                    for wakeup in self._wakeups.values():  # rows may have committed while we were away
                        wakeup.set()
                    while not self._stopping():
                        async for note in conn.notifies(timeout=0.5):
                            woken = self._wakeups.get(note.channel)
                            if woken is not None:
                                woken.set()
            except (psycopg.Error, OSError) as error:  # the database away or refusing: poll meanwhile
                self.connected = False
                log.warning(
                    "LISTEN connection lost, polling meanwhile: %s",
                    (str(error).splitlines() or [type(error).__name__])[0],
                )
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
            finally:
                self.connected = False


HELD_BACK_FIRST_WAIT_SECONDS = 0.005


def held_back_wait(previous: float | None, poll_seconds: float) -> float:
    """How long to wait before looking again at rows held back by an older open transaction: 5 ms first, then
    twice as long each time they are still held back, never longer than the poll (pure)."""
    if previous is None:
        return min(HELD_BACK_FIRST_WAIT_SECONDS, poll_seconds)
    return min(previous * 2, poll_seconds)


async def relay_loop(
    relays: Sequence[OutboxRelay],
    *,
    wakeup: Wakeup,
    poll_seconds: float,
    stopping: Callable[[], bool],
    on_health: Callable[[bool], None],
    on_failure: Callable[[str, BaseException], None],
) -> None:
    """Send what the outboxes hold, in order; when they are empty, wait for a wake-up or the poll interval; when
    a relay saw rows it may not send yet (``held_back``), wait for a wake-up or a short, growing retry."""
    held_wait: float | None = None
    while not stopping():
        sent = 0
        for relay in relays:
            try:
                sent += await relay.relay_once()
                on_health(True)
            except Exception as error:  # noqa: BLE001 - the rows stay unsent and go again next round
                on_health(False)
                on_failure(relay.spec.name, error)
                log.warning("outbox relay %s failed, will retry: %s", relay.spec.name, error)
                await asyncio.sleep(1.0)
        if sent == 0:
            if any(relay.held_back for relay in relays):
                held_wait = held_back_wait(held_wait, poll_seconds)
                await wakeup.wait(held_wait)
            else:
                held_wait = None
                await wakeup.wait(poll_seconds)


def records_to_take(count: int, size: int, max_records: int, max_bytes: int) -> int:
    """How many more messages a batch of ``count`` messages and ``size`` bytes may take, assuming the next are
    as large as those so far: 0 once either bound is reached; at least 1 below both (pure)."""
    if count >= max_records or size >= max_bytes:
        return 0
    if count == 0:
        return 1
    per_message = max(1, size // count)
    return max(1, min(max_records - count, (max_bytes - size) // per_message))


class CommitChain:
    """Each batch's transaction, then its offset commit, with the next transaction free to start once the
    previous one has ended (it does not wait for the previous offset commit):

    - transactions one after the other, in the order the batches were started;
    - offset commits in that order too, each after its own batch's transaction and the previous batch's commit
      (at least once: a batch's offsets never move before its transaction committed, nor before the batches
      read before it are committed);
    - at most ``max_uncommitted`` batches past their transaction and waiting for their offset commit (a broker
      outage holds the commits: ``start`` then waits, so batches do not pile up in memory).

    A transaction or commit that raises makes ``start``/``drain`` raise it (the workers' apply and commit crash
    the process themselves before that)."""

    def __init__(self, max_uncommitted: int = 2) -> None:
        self.max_uncommitted = max_uncommitted
        self._applying: asyncio.Task[Any] | None = None
        self._committing: deque[asyncio.Task[None]] = deque()

    async def start(self, apply: Callable[[], Awaitable[Any]], commit: Callable[[], Awaitable[None]]) -> None:
        """Wait until the previous transaction has ended (and fewer than ``max_uncommitted`` commits wait), then
        run ``apply`` and, after it and the previous batch's commit, ``commit``, in tasks; return at once."""
        if self._applying is not None:
            await self._applying
        while self._committing and self._committing[0].done():
            self._committing.popleft().result()
        while len(self._committing) >= self.max_uncommitted:
            await self._committing.popleft()
        previous = self._committing[-1] if self._committing else None
        applying: asyncio.Task[Any] = asyncio.create_task(_call(apply))
        self._applying = applying
        self._committing.append(asyncio.create_task(_commit_after(applying, previous, commit)))

    async def drain(self) -> None:
        """Wait for every started batch's transaction and offset commit."""
        while self._committing:
            await self._committing.popleft()
        if self._applying is not None:
            await self._applying


async def _call(f: Callable[[], Awaitable[Any]]) -> Any:
    return await f()


async def _commit_after(
    applying: asyncio.Task[Any], previous: asyncio.Task[None] | None, commit: Callable[[], Awaitable[None]]
) -> None:
    await applying
    if previous is not None:
        await previous
    await commit()


@dataclass
class DatabaseHealth:
    """What a transient database failure and the recovery do to /readyz and the metrics."""

    service: str
    metrics: WorkerMetrics
    health: dict[str, bool]
    operation: str

    def down(self, error: BaseException, attempt: int) -> None:
        self.health["database"] = False
        self.metrics.ready.labels(self.service).set(0)
        self.metrics.transient.labels(self.service, self.operation).inc()

    def up(self) -> None:
        self.health["database"] = True
        self.metrics.ready.labels(self.service).set(1)


@dataclass
class BatchLoop(Generic[P]):
    """Consume → prepare → apply (one transaction) → commit offsets, with the next batch prepared while the
    previous one's transaction runs, and its transaction started while the previous offset commit is on its way
    (``CommitChain``). Transactions one after the other; offset commits in order, each after its transaction."""

    supervisor: Supervisor
    consumer: AIOKafkaConsumer
    prepare: Callable[[Sequence[ConsumerRecord]], Awaitable[P]]
    apply: Callable[[P], Awaitable[Any]]
    after_apply: Callable[[P, Any, float], None]  # (prepared, apply's result, seconds since the batch arrived)
    database: DatabaseHealth
    metrics: WorkerMetrics
    what: str  # what a batch is, for the logs: "normalise batch", "record changes"
    on_rebalance: str  # what a replay means for this service
    batch_max_events: int
    batch_within_seconds: float
    batch_max_bytes: int | None = None
    on_running: Callable[[bool], None] = field(default=lambda running: None)

    async def run(self) -> None:
        await start_consumer(self.consumer)
        self.on_running(True)
        chain = CommitChain()
        try:
            while not self.supervisor.should_stop:
                by_partition = await self._next_batch()
                records = [r for rs in by_partition.values() for r in rs]
                if not records:
                    continue
                started = time.perf_counter()
                try:
                    prepared = await self.prepare(records)
                except Exception as error:  # noqa: BLE001 - a bug: crash() logs it and exits
                    self.supervisor.crash("failure while preparing a batch; its offsets were not committed", error)
                offsets = {tp: rs[-1].offset + 1 for tp, rs in by_partition.items() if rs}
                await chain.start(self._applier(prepared, started), self._committer(offsets))
            await chain.drain()
        finally:
            self.on_running(False)
            with contextlib.suppress(Exception):
                await self.consumer.stop()

    async def _next_batch(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        """The next batch: up to ``batch_max_events`` messages and, when ``batch_max_bytes`` is set, about that
        many bytes of message values (a bulk message carries hundreds of events: counting messages alone
        would let one batch hold hundreds of thousands). Waits up to ``batch_within_seconds`` for the first
        records, then takes only what the consumer already holds, a bounded number at a time; what is not
        taken stays in the consumer for the next batch, in order."""
        wait_ms = int(self.batch_within_seconds * 1000)
        if self.batch_max_bytes is None:
            return dict(await self.consumer.getmany(timeout_ms=wait_ms, max_records=self.batch_max_events))
        batch: dict[TopicPartition, list[ConsumerRecord]] = {}
        count = size = 0
        room = 1  # the first message alone tells how large they are
        while room > 0:
            more = await self.consumer.getmany(timeout_ms=wait_ms if count == 0 else 0, max_records=room)
            if not more:
                break
            for tp, rs in more.items():
                batch.setdefault(tp, []).extend(rs)
                count += len(rs)
                size += sum(len(r.value) if isinstance(r.value, bytes) else 0 for r in rs)
            room = records_to_take(count, size, self.batch_max_events, self.batch_max_bytes)
        return batch

    def _applier(self, prepared: P, started: float) -> Callable[[], Awaitable[None]]:
        return lambda: self._apply(prepared, started)

    def _committer(self, offsets: dict[TopicPartition, int]) -> Callable[[], Awaitable[None]]:
        return lambda: self._commit(offsets)

    async def _apply(self, prepared: P, started: float) -> None:
        try:
            result = await retry_transient(
                lambda: self.apply(prepared),
                is_transient=is_transient,
                what=self.what,
                on_retry=self.database.down,
                on_recovered=self.database.up,
            )
        except Exception as error:  # noqa: BLE001 - a bug: crash() logs it and exits
            # Not transient: a bug. Moving the offsets would lose the batch; the batch is read again after the fix.
            self.supervisor.crash(f"non-transient failure in {self.what}; its offsets were not committed", error)
        self.after_apply(prepared, result, time.perf_counter() - started)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        await commit_offsets(
            self.consumer,
            offsets,
            service=self.database.service,
            transient=self.metrics.transient,
            lag=self.metrics.lag,
            stopping=lambda: self.supervisor.should_stop,
            on_rebalance=self.on_rebalance,
        )
