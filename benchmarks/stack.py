"""A throwaway stack for benchmarks: real broker, real PostGIS, the three services as processes."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from deploy.local.kafka import KafkaBroker
from deploy.local.ports import free_port
from deploy.local.postgres import PostgresCluster
from deploy.local.services import SERVICE_NAMES, ServiceProcess, service_env

# Events the normaliser has processed (applied or not, duplicates excluded): the per-commune tally its batch
# transaction adds each decided event to (commune_event_tally, a few rows). Counting the ids instead (processed_event
# plus the change rows' distinct event ids since normalise 0007) is exact too, but grows with the store: polled
# during a run it took 6.6 us of PostgreSQL per event at 20,000 events, more as the suite's store grows, and
# counted in the CPU the benchmark reports for PostgreSQL.
PROCESSED_EVENTS_SQL = "SELECT coalesce(sum(events), 0) FROM commune_event_tally WHERE outcome <> 'duplicate'"


def _exit_once(*_: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the clean-up
    sys.exit(143)


@dataclass
class BenchStack:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="odc-bench-")))
    broker: KafkaBroker | None = None
    db: PostgresCluster | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    # Each service connects as its own login role (odc_<name>, superuser like the app role) so that
    # pg_stat_statements, which keys statements by role, splits the writes by service (write_count.py).
    service_roles: bool = False

    def start(self, extra_env: dict[str, str] | None = None, pg_settings: dict[str, str] | None = None) -> None:
        # A benchmark stopped with SIGTERM (timeout, kill) must still stop its broker, cluster and services.
        signal.signal(signal.SIGTERM, _exit_once)
        self.broker = KafkaBroker(self.root / "kafka", free_port(), free_port(), heap="1g")
        self.broker.start(timeout=120)
        self.db = PostgresCluster(self.root / "pg", free_port(), extra_settings=pg_settings)
        self.db.start(timeout=120)
        self.start_services(extra_env)

    def start_services(self, extra_env: dict[str, str] | None = None, names: tuple[str, ...] = SERVICE_NAMES) -> None:
        assert self.broker is not None and self.db is not None
        for name in names:
            svc = ServiceProcess(
                name,
                self.root,
                free_port(),
                service_env(
                    name,
                    kafka_bootstrap=self.broker.bootstrap,
                    kafka_access=self.broker.access,
                    database_url=self.role_dsn(name) if self.service_roles else self.db.dsn,
                    port=0,
                    extra=extra_env,
                ),
            )
            svc.env[f"ODC_{name.upper()}_WEB_PORT"] = str(svc.port)
            svc.start()
            self.services[name] = svc
        for name in names:
            self.services[name].wait_ready(timeout=120)

    def role_dsn(self, name: str) -> str:
        """The DSN of service ``name``'s own role ``odc_<name>`` (created if missing, same password)."""
        assert self.db is not None
        role = f"odc_{name}"
        with psycopg.connect(**self.db.superuser_conninfo(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(self.db.password)
                    )
                )
        return self.db.dsn.replace(f"//{self.db.user}:", f"//{role}:", 1)

    def stop(self) -> None:
        for svc in self.services.values():
            svc.stop()
        if self.db is not None:
            self.db.stop()
        if self.broker is not None:
            self.broker.stop()
        if not os.environ.get("ODC_BENCH_KEEP"):  # a full run leaves gigabytes of log and table files
            shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        assert self.db is not None
        with psycopg.connect(self.db.dsn) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def wait_until_counted(count: Callable[[], int], target: int, *, started: float, timeout: float, what: str) -> None:
    """Poll ``count()`` until it reaches ``target``. Counting a big table is not free (polled every 50 ms it
    took a third of PostgreSQL's CPU in a profiled run), so poll every 0.5 s until 95% is there, then every
    50 ms: the end time stays within 50 ms without the benchmark loading what it measures."""
    while True:
        n = count()
        if n >= target:
            return
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what}: only {n} of {target} after {timeout:.0f} s")
        time.sleep(0.5 if n < 0.95 * target else 0.05)


def machine_description() -> dict[str, str]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""

    cpu = sh("lscpu | sed -n 's/^Model name:[ \\t]*//p' | head -1")
    return {
        "cpu": cpu or platform.processor(),
        "cores": sh("nproc"),
        "memory": sh("free -h | awk '/^Mem:/{print $2}'"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": sh("/usr/lib/postgresql/15/bin/postgres --version"),
        "kafka": "kafka_2.13 4.1.2 (deploy/local/kafka/pom.xml)",
    }
