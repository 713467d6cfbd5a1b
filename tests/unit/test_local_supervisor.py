"""The local supervisor (deploy/local/supervisor.py): its restart policy as a table, and the supervisor
itself on real child processes (a stand-in program instead of an odc service, so no broker is needed),
driven by an injected clock."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from deploy.local._proc import pid_alive
from deploy.local.restart_policy import GiveUp, Restart, RestartPolicy, after_exit
from deploy.local.services import ServiceProcess
from deploy.local.supervisor import Supervisor, SupervisorMetrics, describe_exit


def _wait_exited(pid: int) -> None:
    """Until the child is a zombie or gone, without reaping it (the supervisor reads its exit status)."""
    deadline = time.monotonic() + 10
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        time.sleep(0.02)


POLICY = RestartPolicy(base_seconds=1, cap_seconds=8, stable_after_seconds=60, give_up_after=5)


@pytest.mark.parametrize(
    ("before", "ran", "expected"),
    [
        (0, 3600, Restart(1, 1)),  # a crash after a healthy run: restart after the base delay
        (4, 3600, Restart(1, 1)),  # ... and the count of fast failures starts again
        (0, 5, Restart(1, 1)),
        (1, 5, Restart(2, 2)),  # fast failures in a row double the delay
        (2, 5, Restart(4, 3)),
        (3, 5, Restart(8, 4)),
        (4, 5, Restart(8, 5)),  # capped
        (5, 5, GiveUp(6)),  # the sixth fast failure in a row: give up
        (5, 60, Restart(1, 1)),  # a run of stable_after seconds is healthy
    ],
)
def test_restart_policy(before: int, ran: float, expected: Restart | GiveUp) -> None:
    assert after_exit(POLICY, before, ran) == expected


class StandIn(ServiceProcess):
    """A ServiceProcess whose program is a small Python snippet instead of ``python -m services.<name>``."""

    code: str = "import time; time.sleep(600)"

    def argv(self) -> list[str]:
        return [sys.executable, "-c", self.code]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _supervisor(
    tmp_path: Path, svc: ServiceProcess, policy: RestartPolicy = POLICY
) -> tuple[Supervisor, CollectorRegistry, Clock]:
    registry, clock = CollectorRegistry(), Clock()
    return Supervisor([svc], policy, SupervisorMetrics(registry), tmp_path / "supervisor.json", clock), registry, clock


def _value(registry: CollectorRegistry, name: str, service: str) -> float | None:
    return registry.get_sample_value(name, {"service": service})


def test_a_killed_service_is_restarted_after_its_backoff(tmp_path: Path) -> None:
    svc = StandIn("normalise", tmp_path, 0)
    svc.start()
    first = svc.pid()
    assert first is not None
    sup, registry, clock = _supervisor(tmp_path, svc)
    try:
        sup.tick()
        assert _value(registry, "odc_service_up", "normalise") == 1
        assert _value(registry, "odc_service_restarts_total", "normalise") == 0

        clock.now += 120  # a healthy run, then kill -9
        os.kill(first, signal.SIGKILL)
        _wait_exited(first)
        sup.tick()
        state = json.loads((tmp_path / "supervisor.json").read_text())["services"]["normalise"]
        assert state["state"] == "backoff"
        assert state["last_exit"] == "killed by SIGKILL after 120.0s"
        assert _value(registry, "odc_service_up", "normalise") == 0
        assert svc.pid() is None

        clock.now += 0.5  # still inside the 1 s backoff
        sup.tick()
        assert svc.pid() is None
        clock.now += 0.6
        sup.tick()
        second = svc.pid()
        assert second is not None and second != first
        assert _value(registry, "odc_service_restarts_total", "normalise") == 1
        assert _value(registry, "odc_service_up", "normalise") == 1
        state = json.loads((tmp_path / "supervisor.json").read_text())["services"]["normalise"]
        assert (state["state"], state["restarts"], state["pid"]) == ("running", 1, second)
        logged = svc.log_path.read_text()
        assert "killed by SIGKILL after 120.0s" in logged and "restarted (restart 1" in logged
    finally:
        svc.kill()


def test_a_service_that_keeps_failing_is_given_up(tmp_path: Path) -> None:
    svc = StandIn("publish", tmp_path, 0)
    svc.code = "raise SystemExit(7)"
    policy = RestartPolicy(base_seconds=1, cap_seconds=8, stable_after_seconds=60, give_up_after=2)
    svc.start()
    sup, registry, clock = _supervisor(tmp_path, svc, policy)
    seen = []
    for _ in range(200):
        pid = svc.pid()
        if pid is not None:
            _wait_exited(pid)
        clock.now += 10
        sup.tick()
        seen.append(sup.watched[0].state)
        if seen[-1] == "given-up":
            break
    # two fast failures are retried; the third gives up (each exit is seen, then each restart)
    assert seen == ["backoff", "running", "backoff", "running", "given-up"]
    assert _value(registry, "odc_service_restarts_total", "publish") == 2
    assert _value(registry, "odc_service_given_up", "publish") == 1
    state = json.loads((tmp_path / "supervisor.json").read_text())["services"]["publish"]
    assert state["last_exit"] == "exited with status 7 after 10.0s"
    clock.now += 3600
    sup.tick()
    assert svc.pid() is None  # stays down
    assert "giving up" in svc.log_path.read_text()


def test_exit_descriptions() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(0) == "exited with status 0"
    assert describe_exit(None).startswith("exited (status unknown")
