"""When the local supervisor restarts a crashed service, and when it gives up: a plain function of plain data.

A run that lasted at least ``stable_after`` seconds was healthy: its crash starts a fresh count. A shorter
run is a *fast failure*; the n-th fast failure in a row waits ``min(cap, base * 2**(n-1))`` seconds before
the next start, and the supervisor gives up after ``give_up_after`` fast failures in a row (the service
stays down, ``make status`` says so and exits non-zero) rather than restarting a broken service forever."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    base_seconds: float = 1.0
    cap_seconds: float = 30.0
    stable_after_seconds: float = 60.0
    give_up_after: int = 5


@dataclass(frozen=True)
class Restart:
    delay_seconds: float
    fast_failures: int  # in a row, this one included


@dataclass(frozen=True)
class GiveUp:
    fast_failures: int


def after_exit(policy: RestartPolicy, fast_failures_before: int, ran_seconds: float) -> Restart | GiveUp:
    """What to do when a supervised process has exited after running ``ran_seconds``."""
    failures = 1 if ran_seconds >= policy.stable_after_seconds else fast_failures_before + 1
    if failures > policy.give_up_after:
        return GiveUp(failures)
    return Restart(min(policy.cap_seconds, policy.base_seconds * 2 ** (failures - 1)), failures)
