"""Read what became of sent events, from the tables the normaliser writes (read only): ``rejection`` (by event
id: the record was refused, with its problems), ``processed_event`` or a change row of ``feature_change_outbox``
carrying the event's id (the event was applied: an applied change's row is its dedup record, normalise migration
0007; ``processed_event`` holds the events that changed nothing), and the stored
feature's ``odc:missing`` / ``odc:dropped`` (conforming or incomplete). Used by ``odc send`` while it waits
and by the push API's receipts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.contract.conformance_levels import CONFORMING, INCOMPLETE, REFUSED
from services.ingest.domain.send_report import PENDING, Problem, RecordOutcome, SentRecord

_TABLES = ("rejection", "processed_event", "feature_change_outbox", "canonical_feature", "feature_provenance")

_REJECTED = "SELECT event_id, errors, reason, message FROM rejection WHERE event_id = ANY(CAST(:ids AS text[]))"
_PROCESSED = "SELECT event_id FROM processed_event WHERE event_id = ANY(CAST(:ids AS text[]))"
_CHANGED = "SELECT DISTINCT event_id FROM feature_change_outbox WHERE event_id = ANY(CAST(:ids AS text[]))"
# the record's stored state: its own canonical feature, or its provenance row when it joined another's
_STATE = """
SELECT k.commune, k.feature_id, coalesce(f.attributes, p.attributes) -> 'odc:missing',
       coalesce(f.attributes, p.attributes) -> 'odc:dropped'
FROM unnest(CAST(:cs AS text[]), CAST(:fs AS text[])) AS k(commune, feature_id)
LEFT JOIN canonical_feature f ON f.dataset = :d AND f.commune = k.commune AND f.feature_id = k.feature_id
LEFT JOIN feature_provenance p ON p.dataset = :d AND p.commune = k.commune AND p.feature_id = k.feature_id
"""


def _problems_of_refusal(errors: Any, reason: str, message: str) -> tuple[Problem, ...]:
    listed = tuple(
        Problem(
            str(e.get("rule") or reason),
            str(e.get("message_en") or ""),
            e.get("field"),
            e.get("column"),
        )
        for e in (errors or [])
        if isinstance(e, dict)
    )
    return listed or (Problem(reason, message),)


def _problems_of_state(missing: Any, dropped: Any) -> tuple[Problem, ...]:
    out = [Problem("required", f"{name}: a value is required", str(name)) for name in (missing or [])]
    out += [
        Problem("dropped", f"{name}: the value sent breaks the field's rule and was left out", str(name))
        for name in (dropped or [])
    ]
    return tuple(out)


class PostgresOutcomeReader:
    """The OutcomeReader port (service_layer/ports.py) on the pipeline's tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def read(self, dataset: str, sent: Sequence[SentRecord]) -> list[RecordOutcome]:
        return await read_outcomes(self._engine, dataset, sent)


async def read_outcomes(engine: AsyncEngine, dataset: str, events: Sequence[SentRecord]) -> list[RecordOutcome]:
    """One outcome per event, in the order given; ``pending`` where the pipeline has not answered yet."""
    ids = [e.event_id for e in events]
    async with engine.connect() as conn:
        present = {
            t for t in _TABLES if (await conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": t})).scalar()
        }
        refused: dict[str, tuple[Problem, ...]] = {}
        if "rejection" in present:
            for event_id, errors, reason, message in await conn.execute(text(_REJECTED), {"ids": ids}):
                refused[event_id] = _problems_of_refusal(errors, reason, message)
        processed: set[str] = set()
        if "processed_event" in present:
            processed = {r[0] for r in await conn.execute(text(_PROCESSED), {"ids": ids})}
        if "feature_change_outbox" in present:
            processed |= {r[0] for r in await conn.execute(text(_CHANGED), {"ids": ids})}
        applied = [e for e in events if e.event_id in processed and e.event_id not in refused]
        states: dict[tuple[str, str], tuple[Problem, ...]] = {}
        if applied and {"canonical_feature", "feature_provenance"} <= present:
            rows = await conn.execute(
                text(_STATE),
                {"d": dataset, "cs": [e.commune for e in applied], "fs": [e.feature_id for e in applied]},
            )
            states = {(c, f): _problems_of_state(m, d) for c, f, m, d in rows}
    out = []
    for e in events:
        if e.event_id in refused:
            out.append(RecordOutcome(REFUSED, e.source_row, e.feature_id, refused[e.event_id]))
        elif e.event_id in processed:
            problems = states.get((e.commune, e.feature_id), ())
            level = INCOMPLETE if any(p.rule == "required" for p in problems) else CONFORMING
            out.append(RecordOutcome(level, e.source_row, e.feature_id, problems))
        else:
            out.append(RecordOutcome(PENDING, e.source_row, e.feature_id))
    return out


async def wait_for_outcomes(
    engine: AsyncEngine, dataset: str, events: Sequence[SentRecord], wait_seconds: float, every: float = 0.5
) -> list[RecordOutcome]:
    """Poll until every event has an answer or ``wait_seconds`` have passed (bounded: a sender never hangs)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        outcomes = await read_outcomes(engine, dataset, events)
        if all(o.level != PENDING for o in outcomes) or time.monotonic() >= deadline:
            return outcomes
        await asyncio.sleep(every)
