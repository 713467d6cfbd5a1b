"""Writes per applied event, measured with ``pg_stat_statements`` (issue #16: "at most four writes").

The local cluster preloads ``pg_stat_statements`` with ``track = all`` (deploy/local/postgres.py), so
statements run inside functions and triggers are counted too. The procedure: reset the statistics, run N
events through the real pipeline, wait until the database stops writing (the publisher finishes after the
normaliser), then read every INSERT / UPDATE / DELETE / MERGE / COPY ... FROM statement: its calls and the
rows it wrote, per role and per statement, divided by the events applied. A COPY or an ``unnest`` INSERT is
one call for a whole batch: rows per event is the measure of "how many times an event is written"; calls per
event says how many statements it takes.

In the benchmark stack each service connects as its own role (``odc_normalise``, ``odc_publish``,
``odc_ingest``: see ``BenchStack(service_roles=True)``), so the rows split by service; the normaliser's relay
child shares the normaliser's role. Elsewhere (``make run``, tests) every service connects as the one app role.

Standalone: ``python -m benchmarks.write_count --dataset public_toilets --events 5000`` (a throwaway stack).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*", re.S)
_LOCKING = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+|KEY\s+)?(?:UPDATE|SHARE)\b|\bDO\s+UPDATE\b|\bDO\s+NOTHING\b", re.I)
_LEADING = re.compile(r"^\s*\(?\s*(INSERT|UPDATE|DELETE|MERGE|COPY|WITH)\b", re.I)
_MODIFYING = re.compile(
    r"\b(INSERT\s+INTO|UPDATE\s+(?:ONLY\s+)?[\w\".]+\s+(?:AS\s+\w+\s+)?SET|DELETE\s+FROM|MERGE\s+INTO)\b", re.I
)


def write_kind(query: str) -> str | None:
    """The kind of write a (normalised) statement does, or None for a read. ``COPY ... FROM`` writes,
    ``COPY ... TO`` reads; a ``WITH`` statement writes when one of its parts is a data-modifying statement
    (``FOR UPDATE`` and ``ON CONFLICT DO UPDATE`` are not parts of their own)."""
    text = _COMMENTS.sub(" ", query)
    m = _LEADING.match(text)
    if m is None:
        return None
    verb = m.group(1).upper()
    if verb == "COPY":
        return "COPY" if re.search(r"\bFROM\s+(?:STDIN|'|PROGRAM)", text, re.I) else None
    if verb != "WITH":
        return verb
    found = _MODIFYING.search(_LOCKING.sub(" ", text))
    return found.group(1).split()[0].upper() if found else None


@dataclass(frozen=True)
class StatementStat:
    role: str
    query: str
    calls: int
    rows: int
    toplevel: bool


def summarise(stats: Iterable[StatementStat], events: int, top: int = 12) -> dict[str, Any]:
    """Per applied event: rows written and write statements called, in total, per role, per kind and per
    statement (the ``top`` statements by rows). Zero events: nothing to divide by, an empty summary."""
    writes = [(s, k) for s in stats if (k := write_kind(s.query)) is not None]
    if events <= 0:
        return {"events": 0, "rows_per_event": None, "calls_per_event": None, "by_role": {}, "by_kind": {}, "top": []}

    def per(group: dict[str, list[StatementStat]]) -> dict[str, dict[str, float]]:
        return {
            name: {
                "rows_per_event": sum(s.rows for s in items) / events,
                "calls_per_event": sum(s.calls for s in items) / events,
            }
            for name, items in sorted(group.items())
        }

    by_role: dict[str, list[StatementStat]] = {}
    by_kind: dict[str, list[StatementStat]] = {}
    for s, kind in writes:
        by_role.setdefault(s.role, []).append(s)
        by_kind.setdefault(kind, []).append(s)
    ranked = sorted(writes, key=lambda sk: (-sk[0].rows, -sk[0].calls))
    return {
        "events": events,
        "rows_per_event": sum(s.rows for s, _ in writes) / events,
        "calls_per_event": sum(s.calls for s, _ in writes) / events,
        "by_role": per(by_role),
        "by_kind": per(by_kind),
        "top": [
            {
                "role": s.role,
                "kind": kind,
                "rows_per_event": s.rows / events,
                "calls_per_event": s.calls / events,
                "toplevel": s.toplevel,
                "query": re.sub(r"\s+", " ", s.query).strip()[:300],
            }
            for s, kind in ranked[:top]
        ],
    }


def ensure_extension(dsn: str) -> None:
    """``CREATE EXTENSION IF NOT EXISTS pg_stat_statements`` and check the library is loaded (a cluster
    started before the setting was added must be restarted once)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        try:
            conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()
        except psycopg.errors.ObjectNotInPrerequisiteState as e:
            raise RuntimeError(
                "pg_stat_statements is not loaded: restart the cluster (deploy/local/postgres.py preloads it)"
            ) from e


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def read(dsn: str) -> list[StatementStat]:
    """Every statement recorded since the reset, in every database of the cluster."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT coalesce(r.rolname, s.userid::text), s.query, s.calls, s.rows, s.toplevel "
            "FROM pg_stat_statements s LEFT JOIN pg_roles r ON r.oid = s.userid"
        ).fetchall()
    return [StatementStat(str(role), str(q), int(c), int(n), bool(t)) for role, q, c, n, t in rows]


def wal_totals(dsn: str) -> dict[str, int]:
    """The cluster's WAL written so far (pg_stat_wal: records, full-page images, bytes) and its checkpoints
    (pg_stat_bgwriter, timed and requested): per-stage deltas say what the writes cost in WAL."""
    with psycopg.connect(dsn) as conn:
        records, fpi, size = conn.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()
        (checkpoints,) = conn.execute("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter").fetchone()
    return {"records": int(records), "fpi": int(fpi), "bytes": int(size), "checkpoints": int(checkpoints)}


def wal_per_event(before: dict[str, int], after: dict[str, int], events: int) -> dict[str, float]:
    n = max(events, 1)
    return {
        "records_per_event": round((after["records"] - before["records"]) / n, 2),
        "full_page_images_per_event": round((after["fpi"] - before["fpi"]) / n, 3),
        "bytes_per_event": round((after["bytes"] - before["bytes"]) / n),
        "checkpoints": after["checkpoints"] - before["checkpoints"],
    }


def written_rows(dsn: str) -> int:
    return sum(s.rows for s in read(dsn) if write_kind(s.query) is not None)


def wait_until_quiet(
    dsn: str,
    *,
    quiet: float = 5.0,
    poll: float = 0.25,
    timeout: float = 600,
    on_poll: Callable[[], Any] | None = None,
) -> Any:
    """Poll the rows written until they have not grown for ``quiet`` seconds (the publisher is done with what
    the normaliser applied: ``quiet`` must exceed the datasets' versioning quiet period, 2 s for parks). Returns what ``on_poll()`` returned at the poll where the count last grew (e.g.
    a CPU snapshot), so that the idle wait is not counted."""
    last, at_last = -1, None
    changed = started = time.monotonic()
    while True:
        n = written_rows(dsn)
        snap = on_poll() if on_poll is not None else None
        now = time.monotonic()
        if n != last:
            last, at_last, changed = n, snap, now
        elif now - changed >= quiet:
            return at_last
        if now - started > timeout:
            raise RuntimeError(f"the database kept writing for {timeout:.0f} s")
        time.sleep(poll)


def render(summary: dict[str, Any]) -> str:
    if not summary.get("events"):
        return "no events: nothing measured"
    lines = [
        f"{summary['events']:,} events applied: {summary['rows_per_event']:.2f} rows written per event in "
        f"{summary['calls_per_event']:.3f} write statements per event",
        "by role: "
        + ", ".join(
            f"{k} {v['rows_per_event']:.2f} rows / {v['calls_per_event']:.3f} calls"
            for k, v in summary["by_role"].items()
        ),
        "by kind: " + ", ".join(f"{k} {v['rows_per_event']:.2f} rows" for k, v in summary["by_kind"].items()),
        "top statements (rows per event, calls per event, role):",
    ]
    lines += [
        f"  {t['rows_per_event']:6.2f}  {t['calls_per_event']:7.3f}  {t['role']:14s} {t['query'][:140]}"
        for t in summary["top"]
    ]
    return "\n".join(lines)


def main() -> None:
    from benchmarks.pipeline_throughput import build_events, produce, signed_values
    from benchmarks.stack import PROCESSED_EVENTS_SQL, BenchStack, wait_until_counted

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="public_toilets")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    stack = BenchStack(service_roles=True)
    try:
        stack.start()
        assert stack.db is not None and stack.broker is not None
        dsn = stack.db.dsn
        ensure_extension(dsn)
        events = build_events(args.dataset, args.events, seq=time.time_ns() // 1000)
        values = signed_values(stack, events)
        before = int(stack.sql(PROCESSED_EVENTS_SQL)[0][0])
        reset(dsn)
        t0 = time.monotonic()
        asyncio.run(produce(stack.broker, values))
        applied = lambda: int(stack.sql(PROCESSED_EVENTS_SQL)[0][0]) - before  # noqa: E731
        wait_until_counted(applied, len(events), started=t0, timeout=1800, what="events applied")
        wait_until_quiet(dsn)
        summary = summarise(read(dsn), applied())
    finally:
        stack.stop()
    print(json.dumps(summary, indent=2) if args.json else render(summary))


if __name__ == "__main__":
    main()
