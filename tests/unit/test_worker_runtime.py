"""The worker runtime both workers are wired onto: the supervisor is the one place that exits on a bug (70,
before anything else runs) and stops cleanly on SIGTERM; the relay loop drains its outboxes, then sleeps until
a wake-up or its poll; a wake-up set while the loop works is not lost."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field

import pytest

from services.infrastructure.worker_runtime import EXIT_BUG, Wakeup, relay_loop

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from services.infrastructure.worker_runtime import Supervisor

    CASE = sys.argv[1]

    async def main():
        sup = Supervisor("test")

        async def prepare():
            print("prepared", flush=True)

        async def loop():
            if CASE == "raises":
                raise RuntimeError("a bug")
            if CASE == "ends":
                return
            if CASE == "crash":
                sup.crash("told to")
            await sup.stopping.wait()
            print("loop stopped", flush=True)

        async def cleanup():
            print("cleaned up", flush=True)

        await sup.run(prepare=prepare, tasks={"loop": loop}, cleanup=cleanup)
        print("returned", flush=True)

    asyncio.run(main())
    """
)


def run_case(case: str, *, terminate: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, case], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if terminate:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "prepared"
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, ("prepared\n" if terminate else "") + out, err)


@pytest.mark.parametrize("case", ["raises", "ends", "crash"])
def test_a_bug_exits_70_at_once_and_loudly_without_running_cleanup(case: str) -> None:
    result = run_case(case)
    assert result.returncode == EXIT_BUG == 70
    assert "cleaned up" not in result.stdout and "returned" not in result.stdout
    assert "CRITICAL" in result.stderr or "exiting with 70" in result.stderr


def test_sigterm_stops_the_tasks_and_cleans_up_with_exit_0() -> None:
    result = run_case("waits", terminate=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["prepared", "loop", "stopped", "cleaned", "up", "returned"]


@dataclass
class FakeSpec:
    name: str


@dataclass
class FakeRelay:
    """Our own relay's shape: ``relay_once`` sends up to ``batch`` pending rows and says how many."""

    name: str
    pending: int = 0
    batch: int = 2
    fail_next: int = 0
    calls: list[int] = field(default_factory=list)

    @property
    def spec(self) -> FakeSpec:
        return FakeSpec(self.name)

    async def relay_once(self) -> int:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("broker down")
        n = min(self.batch, self.pending)
        self.pending -= n
        self.calls.append(n)
        return n


async def test_wakeup_returns_at_once_when_set_and_after_the_timeout_otherwise() -> None:
    w = Wakeup()
    started = time.monotonic()
    assert not await w.wait(0.05)
    assert time.monotonic() - started >= 0.04
    w.set()
    assert await w.wait(10)  # set before the wait: not lost
    assert not await w.wait(0.01)  # and consumed


async def test_relay_loop_drains_then_waits_for_a_wakeup_instead_of_its_poll() -> None:
    relay, wakeup, stop = FakeRelay("o", pending=5), Wakeup(), asyncio.Event()
    health: list[bool] = []
    task = asyncio.create_task(
        relay_loop(
            [relay],  # type: ignore[list-item]
            wakeup=wakeup,
            poll_seconds=30.0,  # the fallback: far longer than this test
            stopping=stop.is_set,
            on_health=health.append,
            on_failure=lambda name, error: None,
        )
    )
    await asyncio.sleep(0.1)
    assert relay.calls == [2, 2, 1, 0]  # drained without waiting, then one empty round
    relay.pending = 3
    wakeup.set()
    await asyncio.sleep(0.1)
    assert relay.calls == [2, 2, 1, 0, 2, 1, 0]  # woken, drained again, well before the 30 s poll
    stop.set()
    wakeup.set()
    await asyncio.wait_for(task, 5)
    assert all(health)


async def test_relay_loop_reports_a_failed_send_and_sends_on_the_next_round() -> None:
    relay, wakeup, stop = FakeRelay("o", pending=1, fail_next=1), Wakeup(), asyncio.Event()
    health: list[bool] = []
    failures: list[str] = []
    task = asyncio.create_task(
        relay_loop(
            [relay],  # type: ignore[list-item]
            wakeup=wakeup,
            poll_seconds=0.05,
            stopping=stop.is_set,
            on_health=health.append,
            on_failure=lambda name, error: failures.append(name),
        )
    )
    for _ in range(60):
        if relay.pending == 0:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert failures == ["o"] and health[0] is False and health[-1] is True and relay.pending == 0
