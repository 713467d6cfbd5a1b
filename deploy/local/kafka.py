"""A real Apache Kafka broker (KRaft, combined broker+controller, single node) run from the
``kafka_2.13`` jars on Maven Central. No Docker, no tarball.

- :func:`ensure_kafka_jars` collects the broker classpath with Maven into ``<repo>/.local/kafka/libs``
  (only when missing/incomplete/outdated).
- :class:`KafkaBroker` formats storage, starts ``java kafka.Kafka server.properties`` detached, waits
  for ``Kafka Server started`` and proves readiness with an aiokafka round trip (create topic,
  produce, consume). A broker started by one process can be inspected/stopped by another via
  :meth:`KafkaBroker.from_data_dir` (state in ``<data_dir>/broker.json`` + ``broker.pid``).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from deploy.local import REPO_ROOT
from deploy.local._proc import cmdline, pid_alive, reap, signal_group_or_pid, tail, wait_dead
from deploy.local.kafka_access import (
    BROKER,
    CONTROLLER,
    SCRAM_USERS,
    SUPER_USERS,
    KafkaAccess,
    load_or_create_access,
    provision_access,
)
from services.contract import size_limits
from services.infrastructure.kafka_security import SASL_MECHANISM, KafkaClientSecurity

KAFKA_CONF_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_CONF_DIR / "pom.xml"
LOG4J2_CONFIG = KAFKA_CONF_DIR / "log4j2.xml"

READY_LINE = "Kafka Server started"
PROBE_TOPIC = "_odc_readiness_probe"
_COMPLETE_MARKER = ".odc-complete"
# jars that must be present for the classpath to be usable (prefixes of file names)
_REQUIRED_JARS = (
    "kafka_2.13-",
    "kafka-clients-",
    "log4j-slf4j-impl-",
    "log4j-core-",
    "log4j-api-",
    "slf4j-api-",
)

T = TypeVar("T")


class KafkaSetupError(RuntimeError):
    """Resolving the Kafka jars or starting the broker failed."""


# --------------------------------------------------------------------------------------------- jars


def kafka_libs_dir(repo_root: Path | None = None) -> Path:
    return (repo_root or REPO_ROOT) / ".local" / "kafka" / "libs"


def _pom_digest() -> str:
    h = hashlib.sha256()
    h.update(POM.read_bytes())
    return h.hexdigest()


def _libs_complete(libs: Path) -> bool:
    marker = libs / _COMPLETE_MARKER
    if not marker.is_file() or marker.read_text().strip() != _pom_digest():
        return False
    names = [p.name for p in libs.glob("*.jar")]
    return all(any(n.startswith(req) for n in names) for req in _REQUIRED_JARS)


def ensure_kafka_jars(repo_root: Path | None = None, *, quiet: bool = True) -> Path:
    """Make sure the broker classpath exists in ``<repo>/.local/kafka/libs`` and return that dir.

    Runs ``mvn dependency:copy-dependencies`` on ``deploy/local/kafka/pom.xml`` only when the dir is
    missing, incomplete, or was produced from a different pom (a marker file holds the pom's
    sha256). Serialised across processes with a file lock. Raises :class:`KafkaSetupError` with
    Maven's output tail when Maven is absent or fails.
    """
    root = (repo_root or REPO_ROOT).resolve()
    libs = kafka_libs_dir(root)
    if _libs_complete(libs):
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    lock_path = libs.parent / ".libs.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _libs_complete(libs):  # another process did it while we waited
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaSetupError(
                "Maven ('mvn') is not on PATH; it is needed once to fetch the Kafka broker jars "
                "(apt-get install -y maven)."
            )
        if libs.exists():
            shutil.rmtree(libs)  # stale or partial: start clean so no two versions mix
        cmd = [
            mvn,
            "-B",
            *(["-q"] if quiet else []),
            "-f",
            str(POM),
            f"-Dodc.kafka.libs={libs}",
            "dependency:copy-dependencies",
        ]
        proc = subprocess.run(cmd, check=False, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            out = "\n".join(proc.stdout.splitlines()[-40:])
            raise KafkaSetupError(f"resolving Kafka jars failed (exit {proc.returncode}): {' '.join(cmd)}\n{out}")
        (libs / _COMPLETE_MARKER).write_text(_pom_digest() + "\n")
        if not _libs_complete(libs):
            have = sorted(p.name for p in libs.glob("*.jar"))
            raise KafkaSetupError(f"Maven succeeded but required jars are missing in {libs}: {have}")
    return libs


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaSetupError("no 'java' on PATH and JAVA_HOME unset; Kafka 4.x needs Java 17+")
    return java


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding (what ``kafka-storage random-uuid`` prints)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


# ----------------------------------------------------------------------------------- async helper


def _run_coro(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even if the caller is inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        return ex.submit(asyncio.run, coro).result()


async def kafka_round_trip(
    bootstrap: str, security: KafkaClientSecurity, topic: str = PROBE_TOPIC, timeout: float = 15.0
) -> None:
    """Create ``topic`` (1 partition, RF 1) if absent, produce one record, consume it back, as the principal
    of ``security`` (the admin for the readiness probe).

    Raises on any failure or when it takes longer than ``timeout``.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import for_code

    async def _go() -> None:
        auth = security.client_kwargs()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **auth)
        await admin.start()
        try:
            resp = await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
            for _name, code, *rest in resp.topic_errors:
                if code not in (0, 36):  # 36 = TOPIC_ALREADY_EXISTS
                    raise for_code(code)(f"create_topics({topic}): {rest}")
        finally:
            await admin.close()

        payload = uuid.uuid4().bytes
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=10_000, **auth)
        await producer.start()
        try:
            md = await producer.send_and_wait(topic, payload, partition=0)
        finally:
            await producer.stop()

        tp = TopicPartition(topic, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **auth)
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, md.offset)
            while True:
                msg = await consumer.getone()
                if msg.value == payload:
                    return
        finally:
            await consumer.stop()

    await asyncio.wait_for(_go(), timeout)


# ---------------------------------------------------------------------------------------- broker


class KafkaBroker:
    """Single-node KRaft Kafka broker (broker+controller in one JVM) bound to 127.0.0.1.

    Clients reach it over SASL_SSL only (SCRAM-SHA-512, the users of deploy/local/kafka_access.py, written
    into storage at format time), with the StandardAuthorizer: a client without valid credentials can do
    nothing, and each principal only what its ACLs allow (applied as the admin on every start). The KRaft
    controller listener is SASL_PLAINTEXT with PLAIN on 127.0.0.1 (SCRAM cannot authenticate the
    controller, whose metadata holds the SCRAM users); only the broker itself logs in there.

    Files in ``data_dir``: ``server.properties`` (0600, holds the broker's own passwords),
    ``kraft-logs/`` (log.dirs), ``logs/server.log`` (log4j), ``broker.log`` (JVM stdout/stderr),
    ``broker.pid``, ``broker.json`` (ports, for :meth:`from_data_dir`), ``access/`` (passwords and TLS
    key store, :class:`deploy.local.kafka_access.KafkaAccess`).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        controller_port: int,
        *,
        heap: str = "512m",
        repo_root: Path | None = None,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = int(port)
        self.controller_port = int(controller_port)
        self.heap = heap
        self.repo_root = (repo_root or REPO_ROOT).resolve()
        self.extra_properties = dict(extra_properties or {})
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.properties_path = self.data_dir / "server.properties"
        self.log_dirs = self.data_dir / "kraft-logs"
        self.log_path = self.data_dir / "broker.log"
        self.pid_path = self.data_dir / "broker.pid"
        self.state_path = self.data_dir / "broker.json"
        self._proc: subprocess.Popen[bytes] | None = None
        self._access: KafkaAccess | None = None
        self.last_start_seconds: float | None = None

    def __repr__(self) -> str:
        return f"KafkaBroker(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r})"

    # -- construction from another process ------------------------------------------------------

    @classmethod
    def from_data_dir(cls, data_dir: Path, *, repo_root: Path | None = None) -> KafkaBroker:
        """Rebuild the handle of a broker started earlier (maybe by another process) in ``data_dir``.

        Raises FileNotFoundError if that dir never held a started broker.
        """
        data_dir = Path(data_dir).resolve()
        state = json.loads((data_dir / "broker.json").read_text())
        return cls(
            data_dir,
            state["port"],
            state["controller_port"],
            heap=state.get("heap", "512m"),
            repo_root=repo_root,
            extra_properties=state.get("extra_properties"),
        )

    from_pidfile = from_data_dir  # alias

    # -- state ----------------------------------------------------------------------------------

    def pid(self) -> int | None:
        """PID of the running broker JVM, or None."""
        if self._proc is not None:
            if self._proc.poll() is None:
                return self._proc.pid
            return None
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        # guard against PID reuse: it must be a kafka.Kafka JVM on *our* properties file
        args = cmdline(pid)
        if "kafka.Kafka" not in args or str(self.properties_path) not in args:
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def is_formatted(self) -> bool:
        return (self.log_dirs / "meta.properties").is_file()

    # -- access -------------------------------------------------------------------------------

    @property
    def access(self) -> KafkaAccess:
        """Passwords and TLS material of this broker (generated on first use, kept in ``access/``)."""
        if self._access is None:
            self._access = load_or_create_access(self.data_dir)
        return self._access

    def security(self, user: str) -> KafkaClientSecurity:
        """How a client acting as ``user`` (deploy/local/kafka_access.py) connects to this broker."""
        return self.access.security(user)

    def admin_security(self) -> KafkaClientSecurity:
        return self.access.admin()

    # -- config ---------------------------------------------------------------------------------

    def server_properties(self) -> dict[str, str]:
        p, c = self.port, self.controller_port
        a = self.access
        scram_login = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain_login = "org.apache.kafka.common.security.plain.PlainLoginModule"
        ctl = a.passwords[CONTROLLER]
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{c}",
            "listeners": f"CLIENT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "CLIENT",
            "listener.security.protocol.map": "CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
            # clients: SCRAM over TLS
            "sasl.enabled.mechanisms": SASL_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
            "listener.name.client.scram-sha-512.sasl.jaas.config": (
                f'{scram_login} required username="{BROKER}" password="{a.passwords[BROKER]}";'
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(a.keystore),
            "ssl.keystore.password": a.keystore_password,
            "ssl.key.password": a.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(a.ca_file),
            "ssl.client.auth": "none",
            # the KRaft controller: PLAIN on loopback, one user (the broker itself)
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                f'{plain_login} required username="{CONTROLLER}" password="{ctl}" user_{CONTROLLER}="{ctl}";'
            ),
            # authorisation: nothing without an ACL, except for the super users
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": ";".join(f"User:{u}" for u in SUPER_USERS),
            "allow.everyone.if.no.acl.found": "false",
            # the largest record batch, >= every producer's max_request_size (services/contract/size_limits.py)
            "message.max.bytes": str(size_limits.BROKER_MESSAGE_MAX_BYTES),
            "log.dirs": str(self.log_dirs),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # after a SIGKILL the controller keeps the dead incarnation's registration until its
            # session expires (default 9 s, restart answered DUPLICATE_BROKER_REGISTRATION meanwhile)
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.hours": "168",
        }
        props.update(self.extra_properties)
        return props

    def _write_properties(self) -> None:
        text = "# generated by deploy/local/kafka.py; rewritten on every start\n" + "".join(
            f"{k}={v}\n" for k, v in self.server_properties().items()
        )
        fd = os.open(self.properties_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.properties_path.chmod(0o600)

    def _write_state(self) -> None:
        self.state_path.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "controller_port": self.controller_port,
                    "heap": self.heap,
                    "bootstrap": self.bootstrap,
                    "extra_properties": self.extra_properties,
                },
                indent=2,
            )
            + "\n"
        )

    def _java_cmd(self, libs: Path, main: str, *args: str, server: bool = False) -> list[str]:
        cmd = [_java()]
        if server:
            cmd += [
                f"-Xms{self.heap}",
                f"-Xmx{self.heap}",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExitOnOutOfMemoryError",
            ]
        else:
            cmd += ["-Xmx256m"]
        cmd += [
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]
        return cmd

    def _format(self, libs: Path) -> None:
        cmd = self._java_cmd(
            libs,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--ignore-formatted",
            f"--cluster-id={new_cluster_id()}",  # "=": an id may start with "-" (1 in 64), which argparse reads as an option
            "-c",
            str(self.properties_path),
            *(
                arg
                for user in SCRAM_USERS
                for arg in ("--add-scram", f"{SASL_MECHANISM}=[name={user},password={self.access.passwords[user]}]")
            ),
        )
        proc = subprocess.run(
            cmd, check=False, cwd=self.data_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if proc.returncode != 0 or not self.is_formatted():
            raise KafkaSetupError(f"kafka storage format failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        """Start the broker (no-op apart from the readiness proof if it already runs) and wait
        until a create-topic/produce/consume round trip succeeds. Raises KafkaSetupError (with the
        log tail) on failure/timeout; a broker that failed to become ready is killed."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        if self.is_running():
            self._await_round_trip(deadline)
            self.last_start_seconds = time.monotonic() - t0
            return

        libs = ensure_kafka_jars(self.repo_root)
        self._write_properties()
        marker = self.access.directory / "scram-users-formatted"
        if not self.is_formatted():
            self._format(libs)
            marker.write_text("\n".join(SCRAM_USERS) + "\n")
        elif not marker.is_file() or set(marker.read_text().split()) != set(SCRAM_USERS):
            raise KafkaSetupError(
                f"the Kafka storage in {self.log_dirs} was formatted without the SCRAM users of "
                f"deploy/local/kafka_access.py (a broker from before authentication); stop it and remove "
                f"{self.data_dir} to start a new one"
            )
        self._write_state()

        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            log.write(f"\n===== odc: starting broker {self.bootstrap} at {time.ctime()} =====\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._java_cmd(libs, "kafka.Kafka", str(self.properties_path), server=True),
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.pid_path.write_text(f"{self._proc.pid}\n")

        try:
            self._await_log_line(log_offset, deadline)
            self._await_round_trip(deadline)
        except BaseException:
            self.kill()
            raise
        self.last_start_seconds = time.monotonic() - t0

    def _await_log_line(self, offset: int, deadline: float) -> None:
        while True:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                if READY_LINE.encode() in f.read():
                    return
            if self._proc is not None and self._proc.poll() is not None:
                raise KafkaSetupError(
                    f"Kafka broker exited with code {self._proc.returncode} before '{READY_LINE}'; "
                    f"log tail ({self.log_path}):\n{tail(self.log_path)}"
                )
            if time.monotonic() >= deadline:
                raise KafkaSetupError(
                    f"timed out waiting for '{READY_LINE}' in {self.log_path}; log tail:\n{tail(self.log_path)}"
                )
            time.sleep(0.1)

    def _await_round_trip(self, deadline: float) -> None:
        last: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaSetupError(
                    f"Kafka at {self.bootstrap} did not pass the produce/consume round trip before the "
                    f"deadline (last error: {last!r}); log tail:\n{tail(self.log_path)}"
                )
            try:
                _run_coro(kafka_round_trip(self.bootstrap, self.admin_security(), timeout=min(20.0, remaining)))
                _run_coro(provision_access(self.bootstrap, self.access))
                return
            except Exception as e:  # retried until the deadline
                last = e
                if self._proc is not None and self._proc.poll() is not None:
                    raise KafkaSetupError(
                        f"Kafka broker exited with code {self._proc.returncode}; log tail:\n{tail(self.log_path)}"
                    ) from e
                time.sleep(0.5)

    def round_trip(self, timeout: float = 15.0) -> None:
        """Prove the broker works now (create probe topic, produce, consume). Raises on failure."""
        _run_coro(kafka_round_trip(self.bootstrap, self.admin_security(), timeout=timeout))

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (controlled shutdown), wait up to ``timeout`` s, then SIGKILL. Idempotent."""
        pid = self.pid()
        if pid is not None:
            signal_group_or_pid(pid, signal.SIGTERM)
            if not self._wait(pid, timeout):
                signal_group_or_pid(pid, signal.SIGKILL)
                self._wait(pid, 10)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the broker JVM at once (fault injection). Idempotent."""
        pid = self.pid()
        if pid is not None:
            signal_group_or_pid(pid, signal.SIGKILL)
            self._wait(pid, 10)
        self._forget()

    def _wait(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        return wait_dead(pid, timeout)

    def _forget(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(0)
            reap(self._proc.pid)
            self._proc = None
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()


__all__ = [
    "PROBE_TOPIC",
    "KafkaBroker",
    "KafkaSetupError",
    "ensure_kafka_jars",
    "kafka_libs_dir",
    "kafka_round_trip",
    "new_cluster_id",
]
