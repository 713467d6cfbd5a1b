"""The normaliser's outbox relay, run in a child process of the normaliser.

Why a process: the relay (read outbox rows, Avro-encode them, hand them to the producer, mark the rows)
took ~14% of the normaliser's samples in the profiled throughput run while the consumer loop — the stage that
bounds the pipeline — waited for the same core. As a child it runs on the other core (docs/performance.md has
the before/after figures). Nothing about delivery changes: rows are still written in the batch transaction
and sent at least once in order under the outbox's advisory lock. The child wakes when a batch commits (the
outbox tables' NOTIFY, migration 0005) and polls every ``relay_interval_seconds`` only as a fallback.

The child is a plain ``python -m services.normalise.entrypoints.relay_process`` started by the parent (not
multiprocessing: its "spawn" start also starts a resource-tracker process, 13 MB resident for nothing here). It
reads the same ``ODC_NORMALISE_*`` settings from the environment it inherits, and tells the parent what it does
on a pipe, one line per fact (``sent <outbox> <n>``, ``failed <outbox>``, ``health <0|1>``; pure:
``status_line`` / ``parse_status``). The parent keeps what operators see: it copies those counts into its
Prometheus metrics and the health into ``/readyz``, restarts the child if it dies, and stops it (SIGTERM) on
shutdown. The child stops by itself if the parent dies (``PR_SET_PDEATHSIG``, a parent-pid check, and a
broken status pipe), so a ``kill -9`` of the normaliser leaves no orphan relaying on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from services.contract.codecs import Codecs
from services.infrastructure.database import make_engine
from services.infrastructure.kafka_security import KafkaClientSecurity
from services.infrastructure.logging_setup import configure_logging
from services.infrastructure.malloc_retention import bound_malloc_retention
from services.infrastructure.outbox_relay import OutboxRelay, make_producer
from services.infrastructure.retry import retry_transient
from services.infrastructure.worker_runtime import PgNotifications, Wakeup, relay_loop
from services.normalise.adapters.outboxes import feature_changes_outbox, rejections_outbox
from services.normalise.settings import NormaliseSettings

log = logging.getLogger("odc.normalise.relay")

OUTBOXES = ("feature_changes", "rejections")
_PR_SET_PDEATHSIG = 1


# -- the status protocol (pure) -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sent:
    outbox: str
    rows: int


@dataclass(frozen=True)
class Failed:
    outbox: str


@dataclass(frozen=True)
class Health:
    ok: bool


Status = Sent | Failed | Health


def status_line(status: Status) -> bytes:
    if isinstance(status, Sent):
        return f"sent {status.outbox} {status.rows}\n".encode()
    if isinstance(status, Failed):
        return f"failed {status.outbox}\n".encode()
    return f"health {int(status.ok)}\n".encode()


def parse_status(line: bytes) -> Status | None:
    """The status a line names; None for anything else (a partial or foreign line is ignored, never fatal)."""
    parts = line.decode("ascii", "replace").split()
    match parts:
        case ["sent", outbox, rows] if outbox in OUTBOXES and rows.isdigit():
            return Sent(outbox, int(rows))
        case ["failed", outbox] if outbox in OUTBOXES:
            return Failed(outbox)
        case ["health", ("0" | "1") as ok]:
            return Health(ok == "1")
    return None


# -- the parent's side ----------------------------------------------------------------------------------------
@dataclass
class RelayChild:
    process: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    transport: asyncio.BaseTransport

    async def next_line(self, timeout: float) -> bytes | None:
        """The child's next status line; None when none came within ``timeout``; b"" once it has exited."""
        try:
            return await asyncio.wait_for(self.reader.readline(), timeout)
        except TimeoutError:
            return None

    async def stop(self, timeout: float = 15.0) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                log.warning("outbox relay process did not stop in %.0f s; killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        self.transport.close()


async def start_relay_child() -> RelayChild:
    """Start the child with the parent's environment (hence its settings) and a pipe for its statuses."""
    read_fd, write_fd = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.normalise.entrypoints.relay_process",
            "--status-fd",
            str(write_fd),
            "--parent-pid",
            str(os.getpid()),
            pass_fds=(write_fd,),
            stdin=asyncio.subprocess.DEVNULL,
        )
    finally:
        os.close(write_fd)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    return RelayChild(process, reader, transport)


# -- the child's side -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description="the normaliser's outbox relay (started by the normaliser)")
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    settings = NormaliseSettings()
    if settings.malloc_threshold_bytes:  # as the parent does (issue #16)
        bound_malloc_retention(settings.malloc_threshold_bytes)
    configure_logging(settings.log_level)
    status = os.fdopen(args.status_fd, "wb", buffering=0)
    asyncio.run(_relay_loop(settings, args.parent_pid, status.write))


async def _relay_loop(settings: NormaliseSettings, parent_pid: int, tell: Callable[[bytes], object]) -> None:
    s = settings
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    parent_gone = False

    def report(status: Status) -> None:
        nonlocal parent_gone
        try:
            tell(status_line(status))
        except (BrokenPipeError, OSError):
            parent_gone = True  # the parent died: stop

    codecs = Codecs()
    engine = make_engine(s.database_url.get_secret_value(), pool_size=2)
    producer = make_producer(s.kafka_bootstrap, "odc-normalise-relay", KafkaClientSecurity.from_settings(s))

    def stopping() -> bool:
        return stop.is_set() or parent_gone or os.getppid() != parent_pid

    await retry_transient(
        producer.start, is_transient=lambda e: isinstance(e, KafkaError | OSError), what="connect the relay"
    )
    relays = [
        OutboxRelay(
            engine,
            producer,
            feature_changes_outbox(codecs, s.topic_feature_changes),
            batch_max_bytes=s.relay_batch_max_bytes,
            on_sent=lambda name, n: report(Sent(name, n)),
        ),
        OutboxRelay(
            engine,
            producer,
            rejections_outbox(codecs, s.topic_rejected),
            batch_max_bytes=s.relay_batch_max_bytes,
            on_sent=lambda name, n: report(Sent(name, n)),
        ),
    ]
    # a loop and a wake-up per outbox: each relay looks at its table when its own rows commit (its trigger's
    # NOTIFY), when rows it saw were held back, or at the fallback poll. One loop for both ran the rejections'
    # relay at every batch's commit and every held-back retry of the changes' (issue #16, fourth session: at a
    # steady 100 events/s the relay child was 60% of the normaliser's CPU samples)
    wakeups = {r.spec.name: Wakeup() for r in relays}
    channels = {r.spec.notify_channel: wakeups[r.spec.name] for r in relays if r.spec.notify_channel}
    listener = PgNotifications(s.database_url.get_secret_value(), channels, stopping=stopping)
    listening = asyncio.create_task(listener.run(), name="listen")
    healthy: bool | None = None

    def health(ok: bool) -> None:
        nonlocal healthy
        if ok != healthy:
            healthy = ok
            report(Health(ok))

    try:
        await asyncio.gather(
            *(
                relay_loop(
                    [relay],
                    wakeup=wakeups[relay.spec.name],
                    poll_seconds=s.relay_interval_seconds,
                    stopping=stopping,
                    on_health=health,
                    on_failure=lambda name, error: report(Failed(name)),
                )
                for relay in relays
            )
        )
    finally:
        listening.cancel()
        with contextlib.suppress(BaseException):
            await listening
        with contextlib.suppress(Exception):
            await producer.stop()
        await engine.dispose()


if __name__ == "__main__":
    main()
