"""Start, watch and stop odc's own three services as local processes (for ``make run`` and the tests).

Each service runs as ``python -m services.<name>`` in its own session, logs to ``<run_dir>/logs/<name>.log``
and records its pid in ``<run_dir>/<name>.pid``. Readiness is the service's own ``/readyz`` answering 200.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local import REPO_ROOT
from deploy.local._proc import pid_alive, signal_group_or_pid, tail, wait_dead
from deploy.local.kafka_access import KafkaAccess

SERVICE_NAMES = ("ingest", "normalise", "publish")


class ServiceError(RuntimeError):
    pass


def service_env(
    name: str,
    *,
    kafka_bootstrap: str,
    kafka_access: KafkaAccess,
    database_url: str,
    port: int,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment variables of one service's settings class (prefix ODC_<NAME>_), with the service's own
    Kafka principal (deploy/local/kafka_access.py)."""
    prefix = f"ODC_{name.upper()}_"
    env = {
        **kafka_access.service_env(name),
        f"{prefix}KAFKA_BOOTSTRAP": kafka_bootstrap,
        f"{prefix}WEB_PORT": str(port),
        f"{prefix}WEB_HOST": "127.0.0.1",
    }
    env[f"{prefix}DATABASE_URL"] = database_url
    env.update(extra or {})
    return env


@dataclass
class ServiceProcess:
    name: str
    run_dir: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable
    instance: str = ""  # a second worker of the same service gets its own pid and log files

    @property
    def label(self) -> str:
        return f"{self.name}-{self.instance}" if self.instance else self.name

    @property
    def pid_path(self) -> Path:
        return self.run_dir / f"{self.label}.pid"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "logs" / f"{self.label}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def argv(self) -> list[str]:
        return [self.python, "-m", f"services.{self.name}"]

    def recorded_port(self) -> int | None:
        """The port the running process was started on (its pid file records it), or None."""
        if self.pid() is None:
            return None
        try:
            return int(json.loads(self.pid_path.read_text().splitlines()[1])["port"])
        except (OSError, ValueError, IndexError, KeyError, TypeError):
            return None

    def start(self) -> None:
        if self.is_running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                self.argv(),
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{proc.pid}\n{json.dumps({'port': self.port})}\n")
        self._proc = proc

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = 90) -> float:
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return time.monotonic() - started
            if not self.is_running():
                raise ServiceError(f"{self.name} exited during start-up; log tail:\n{tail(self.log_path, 40)}")
            time.sleep(0.25)
        raise ServiceError(f"{self.name} not ready after {timeout:.0f}s; log tail:\n{tail(self.log_path, 40)}")

    def stop(self, timeout: float = 20) -> None:
        pid = self.pid()
        if pid is None:
            return
        signal_group_or_pid(pid, signal.SIGTERM)
        if not wait_dead(pid, timeout):
            signal_group_or_pid(pid, signal.SIGKILL)
            wait_dead(pid, 10)
        self._reap()
        self.pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would: for fault tests."""
        pid = self.pid()
        if pid is not None:
            signal_group_or_pid(pid, signal.SIGKILL)
            wait_dead(pid, 10)
            self._reap()

    def exit_status(self) -> int | None:
        """The exit status of the process this handle started, once it has exited (negative: killed by that
        signal); None while it runs or when another process started it."""
        proc = getattr(self, "_proc", None)
        return None if proc is None else proc.poll()

    def _reap(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
