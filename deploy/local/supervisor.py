"""The local stack's supervisor: restarts a crashed odc service with backoff (``make run`` starts it).

One process (``python -m deploy.local supervise``) starts the services that are not running (so they are
its children and it knows how each one ended), then watches them twice a second. When a
service's process is gone it logs how it ended, waits as :mod:`deploy.local.restart_policy` says and
starts it again; after too many fast failures in a row it gives up and leaves the service down. What it
sees is written to ``<run_dir>/supervisor.json`` (read by ``python -m deploy.local status``) and exported
as Prometheus metrics on its own port: ``odc_service_restarts_total{service}``, ``odc_service_up{service}``
and ``odc_service_given_up{service}``. Why our own and not supervisord: docs/architecture.md."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from deploy.local._proc import pid_alive
from deploy.local.restart_policy import GiveUp, RestartPolicy, after_exit
from deploy.local.services import ServiceProcess

log = logging.getLogger("odc.supervisor")

STATE_FILE = "supervisor.json"
PID_FILE = "supervisor.pid"


class SupervisorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.restarts = Counter(
            "odc_service_restarts",
            "Restarts of a crashed service by the local supervisor",
            ["service"],
            registry=registry,
        )
        self.up = Gauge("odc_service_up", "1 while the service's process runs", ["service"], registry=registry)
        self.given_up = Gauge(
            "odc_service_given_up",
            "1 once the supervisor stopped restarting the service",
            ["service"],
            registry=registry,
        )


@dataclass
class Watched:
    svc: ServiceProcess
    state: str = "running"  # starting | running | backoff | given-up
    started_at: float = 0.0
    restart_at: float = 0.0
    fast_failures: int = 0
    restarts: int = 0
    pid: int | None = None
    last_exit: str | None = None


def describe_exit(status: int | None) -> str:
    if status is None:
        return "exited (status unknown: started by another process)"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


class Supervisor:
    def __init__(
        self,
        services: list[ServiceProcess],
        policy: RestartPolicy,
        metrics: SupervisorMetrics,
        state_path: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy, self.metrics, self.state_path, self.clock = policy, metrics, state_path, clock
        now = clock()
        self.watched = [
            Watched(s, started_at=now, pid=s.pid()) if s.is_running() else Watched(s, state="starting", restart_at=now)
            for s in services
        ]
        for w in self.watched:
            metrics.restarts.labels(w.svc.label).inc(0)
            metrics.given_up.labels(w.svc.label).set(0)

    def tick(self) -> None:
        now = self.clock()
        for w in self.watched:
            if w.state == "running":
                alive = w.svc.is_running()
                self.metrics.up.labels(w.svc.label).set(1 if alive else 0)
                if not alive:
                    self._exited(w, now)
            if w.state in ("starting", "backoff") and now >= w.restart_at:
                self._restart(w, now)
        self.write_state()

    def _exited(self, w: Watched, now: float) -> None:
        ran = now - w.started_at
        w.last_exit = f"{describe_exit(w.svc.exit_status())} after {ran:.1f}s"
        decision = after_exit(self.policy, w.fast_failures, ran)
        w.fast_failures = decision.fast_failures
        if isinstance(decision, GiveUp):
            w.state = "given-up"
            self.metrics.given_up.labels(w.svc.label).set(1)
            self._say(w, f"{w.last_exit}; {decision.fast_failures} fast failures in a row: giving up, it stays down")
            return
        w.state, w.restart_at = "backoff", now + decision.delay_seconds
        self._say(w, f"{w.last_exit} (pid {w.pid}); restarting in {decision.delay_seconds:.1f}s")

    def _restart(self, w: Watched, now: float) -> None:
        first = w.state == "starting"
        w.svc.start()
        w.state, w.started_at, w.pid = "running", now, w.svc.pid()
        self.metrics.up.labels(w.svc.label).set(1 if w.pid else 0)
        if first:
            self._say(w, f"started (pid {w.pid})")
            return
        w.restarts += 1
        self.metrics.restarts.labels(w.svc.label).inc()
        self._say(w, f"restarted (restart {w.restarts}, pid {w.pid})")

    def _say(self, w: Watched, what: str) -> None:
        log.warning("%s %s", w.svc.label, what)
        try:  # the service's own log shows where one run ends and the next begins
            with open(w.svc.log_path, "a", encoding="utf-8") as f:
                f.write(f"[odc supervisor {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}] {what}\n")
        except OSError:
            pass

    def state(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "updated": time.time(),
            "services": {
                w.svc.label: {
                    "state": w.state,
                    "pid": w.pid,
                    "restarts": w.restarts,
                    "fast_failures": w.fast_failures,
                    "last_exit": w.last_exit,
                }
                for w in self.watched
            },
        }

    def write_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state()))
        tmp.replace(self.state_path)

    def run(self, stop: threading.Event, every: float = 0.5) -> None:
        while not stop.is_set():
            self.tick()
            stop.wait(every)


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """The running supervisor's last view of the services, or None when no supervisor runs."""
    pid = supervisor_pid(run_dir)
    if pid is None:
        return None
    try:
        doc: dict[str, Any] = json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc


def supervisor_pid(run_dir: Path) -> int | None:
    try:
        pid = int((run_dir / PID_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None
