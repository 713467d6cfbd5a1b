"""CPU time of process trees from ``/proc/<pid>/stat`` (utime + stime), for CPU microseconds per event.

A tree's CPU is, over every live process in it, its own utime + stime plus its cutime + cstime: the time
of children that have exited and been reaped by it (a PostgreSQL backend that ends during a stage is reaped
by the postmaster, so its CPU is not lost). A child that has exited but is not yet reaped is missed until
it is. The load generator runs inside the benchmark's own process: it is measured as that process alone
(``own_cpu_seconds``), around the sends only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    own_seconds: float  # utime + stime
    reaped_seconds: float  # cutime + cstime (children waited for)


def parse_stat(text: str, clk_tck: int = CLK_TCK) -> ProcStat:
    """One ``/proc/<pid>/stat`` line. The command name (field 2) may hold spaces and parentheses: the fields
    are counted from the last ``)``. Field n (1-based, n >= 3) is ``rest[n - 3]``."""
    rest = text.rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return ProcStat(int(rest[1]), (utime + stime) / clk_tck, (cutime + cstime) / clk_tck)


def snapshot_proc(proc: Path = Path("/proc")) -> dict[int, ProcStat]:
    out: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = parse_stat((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue  # gone between listing and reading
    return out


def tree_seconds(stats: Mapping[int, ProcStat], root: int) -> float:
    """CPU seconds of ``root`` and its live descendants, with the reaped children's time. 0 when gone."""
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        children.setdefault(st.ppid, []).append(pid)
    total, todo, seen = 0.0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid].own_seconds + stats[pid].reaped_seconds
        todo.extend(children.get(pid, []))
    return total


def own_cpu_seconds(pid: int | None = None) -> float:
    """This process's (or ``pid``'s) own CPU, all threads, without its children."""
    return parse_stat(Path(f"/proc/{pid or os.getpid()}/stat").read_text()).own_seconds


@dataclass(frozen=True)
class CpuMeter:
    """Named process trees (service name -> root pid) measured together in one pass over /proc."""

    roots: Mapping[str, int]

    def snapshot(self) -> dict[str, float]:
        stats = snapshot_proc()
        return {name: tree_seconds(stats, pid) for name, pid in self.roots.items()}


def per_event_us(before: Mapping[str, float], after: Mapping[str, float], events: int) -> dict[str, float]:
    """CPU microseconds per event of each tree between two snapshots, and their total (empty for no events)."""
    if events <= 0:
        return {}
    out: dict[str, float] = {}
    for name in after:
        if name in before:
            out[name] = (after[name] - before[name]) * 1e6 / events
    out["total"] = sum(out.values())
    return out
