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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from services.infrastructure.worker_runtime import (
    EXIT_BUG,
    HELD_BACK_FIRST_WAIT_SECONDS,
    CommitChain,
    Wakeup,
    held_back_wait,
    relay_loop,
)

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
    held: int = 0  # rounds in which rows are there but held back (an older transaction still open)
    held_back: bool = False
    calls: list[int] = field(default_factory=list)

    @property
    def spec(self) -> FakeSpec:
        return FakeSpec(self.name)

    async def relay_once(self) -> int:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("broker down")
        if self.held:
            self.held -= 1
            self.held_back = True
            self.calls.append(0)
            return 0
        self.held_back = False
        n = min(self.batch, self.pending)
        self.pending -= n
        self.calls.append(n)
        return n


def start_relay_loop(
    relay: FakeRelay,
    wakeup: Wakeup,
    stop: asyncio.Event,
    poll_seconds: float,
    on_health: Callable[[bool], None] = lambda ok: None,
    on_failure: Callable[[str, BaseException], None] = lambda name, error: None,
) -> asyncio.Task[None]:
    return asyncio.create_task(
        relay_loop(
            [relay],  # type: ignore[list-item]
            wakeup=wakeup,
            poll_seconds=poll_seconds,
            stopping=stop.is_set,
            on_health=on_health,
            on_failure=on_failure,
        )
    )


async def until_sent(relay: FakeRelay, rounds: int) -> None:
    """Let the loop run until the relay has nothing pending, or ``rounds`` × 50 ms have passed."""
    for _ in range(rounds):
        if relay.pending == 0:
            break
        await asyncio.sleep(0.05)


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
    task = start_relay_loop(relay, wakeup, stop, 30.0, on_health=health.append)  # 30 s: far longer than the test
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
    task = start_relay_loop(
        relay, wakeup, stop, 0.05, on_health=health.append, on_failure=lambda name, error: failures.append(name)
    )
    await until_sent(relay, 60)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert failures == ["o"] and health[0] is False and health[-1] is True and relay.pending == 0


async def test_relay_loop_looks_again_soon_at_rows_held_back_not_at_its_poll() -> None:
    """No NOTIFY comes when the older transaction holding rows back ends: without the short retry the rows
    would wait for the fallback poll (an hour here)."""
    relay, wakeup, stop = FakeRelay("o", pending=2, held=3), Wakeup(), asyncio.Event()
    task = start_relay_loop(relay, wakeup, stop, 3600.0)
    await until_sent(relay, 200)
    stop.set()
    wakeup.set()
    await asyncio.wait_for(task, 5)
    assert relay.pending == 0 and relay.calls[:4] == [0, 0, 0, 2]  # held back three rounds, then sent


def test_held_back_wait_starts_short_doubles_and_stops_at_the_poll() -> None:
    first = held_back_wait(None, 1.0)
    assert first == HELD_BACK_FIRST_WAIT_SECONDS
    assert held_back_wait(first, 1.0) == 2 * first
    assert held_back_wait(0.8, 1.0) == 1.0
    assert held_back_wait(None, 0.001) == 0.001  # never longer than the poll


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never met")


async def test_commit_chain_starts_the_next_transaction_while_the_previous_offsets_commit() -> None:
    chain, log = CommitChain(), []
    gates = {n: asyncio.Event() for n in (1, 2)}

    def apply(n: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            log.append(f"apply {n}")

        return run

    def commit(n: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            log.append(f"commit {n} starts")
            await gates[n].wait()
            log.append(f"commit {n}")

        return run

    await chain.start(apply(1), commit(1))
    await _until(lambda: "commit 1 starts" in log)
    await chain.start(apply(2), commit(2))  # returns although commit 1 is still waiting
    await _until(lambda: "apply 2" in log)
    assert "commit 1" not in log  # transaction 2 ran while batch 1's offsets were on their way
    for _ in range(20):
        await asyncio.sleep(0)
    assert "commit 2 starts" not in log  # batch 2's offsets wait for batch 1's
    gates[2].set()
    gates[1].set()
    await chain.drain()
    assert log == ["apply 1", "commit 1 starts", "apply 2", "commit 1", "commit 2 starts", "commit 2"]


async def test_commit_chain_transactions_one_after_the_other_and_commits_after_their_own() -> None:
    chain, log = CommitChain(), []
    gate = asyncio.Event()

    async def slow_apply() -> None:
        log.append("apply 1 starts")
        await gate.wait()
        log.append("apply 1")

    async def apply_2() -> None:
        log.append("apply 2")

    async def commit(n: int) -> None:
        log.append(f"commit {n}")

    await chain.start(slow_apply, lambda: commit(1))
    starting = asyncio.create_task(chain.start(apply_2, lambda: commit(2)))
    await _until(lambda: "apply 1 starts" in log)
    for _ in range(20):
        await asyncio.sleep(0)
    assert log == ["apply 1 starts"] and not starting.done()  # transaction 2 waits for transaction 1
    gate.set()
    await starting
    await chain.drain()
    assert log == ["apply 1 starts", "apply 1", "commit 1", "apply 2", "commit 2"]


async def test_commit_chain_holds_at_most_max_uncommitted_batches_waiting_for_their_commit() -> None:
    chain, gate = CommitChain(max_uncommitted=2), asyncio.Event()
    applied: list[int] = []

    def apply(n: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            applied.append(n)

        return run

    async def held_commit() -> None:
        await gate.wait()  # the broker away: commits do not finish

    await chain.start(apply(1), held_commit)
    await chain.start(apply(2), held_commit)
    third = asyncio.create_task(chain.start(apply(3), held_commit))
    for _ in range(50):
        await asyncio.sleep(0)
    assert applied == [1, 2] and not third.done()  # batch 3 waits until a commit ends
    gate.set()
    await third
    await chain.drain()
    assert applied == [1, 2, 3]
