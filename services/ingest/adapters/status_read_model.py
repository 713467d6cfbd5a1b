"""Read model behind ``GET /v1/communes/{insee}/status`` and ``odc status --commune``: what became of a
commune's events, from the tables the pipeline writes (read only):

- ``commune_event_tally`` (normalise): accepted events per outcome, counted in the batch transaction;
- ``rejection`` (normalise): every rejected event with its reason and field errors;
- ``feature_change_outbox`` (normalise): the last change applied to the commune's features;
- ``change_log`` / ``dataset_state`` (publish): the version that published that change, the latest version.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

TABLES = (
    "commune_event_tally",
    "rejection",
    "feature_change_outbox",
    "change_log",
    "dataset_state",
    "canonical_feature",
)


# Source records refused and not accepted since (the same rule as `odc report`: a later live state of the
# feature supersedes its refusal), counted once per record.
OUTSTANDING_REFUSALS = """
SELECT coalesce(r.dataset, ''), count(DISTINCT CASE WHEN coalesce(r.feature_id, '') <> '' THEN r.feature_id
                                                    ELSE r.rejection_id END)
FROM rejection r
WHERE r.commune = :c AND r.resolved_at IS NULL AND NOT EXISTS (
  SELECT 1 FROM canonical_feature f
  WHERE f.dataset = r.dataset AND f.commune = r.commune AND f.feature_id = r.feature_id
    AND f.updated_at > r.rejected_at AND NOT f.deleted)
GROUP BY 1
"""


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _blank(dataset: str) -> dict[str, Any]:
    return {
        "id": dataset,
        "events_received": 0,
        "accepted": 0,
        "accepted_by_outcome": {},
        "rejected": 0,
        "rejected_by_reason": {},
        "live_features": 0,
        # conformance levels (docs/validation.md): live features conforming / incomplete, and the source
        # records refused and not accepted since (what `odc report` lists)
        "conformance": {"conforming": 0, "incomplete": 0, "refused": 0},
        "last_change_applied": None,
        "dataset_latest_version": 0,
    }


class PostgresStatusReadModel:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def commune_status(self, commune: str, datasets: list[str], recent: int = 20) -> dict[str, Any]:
        per: dict[str, dict[str, Any]] = {d: _blank(d) for d in datasets}

        def entry(d: str) -> dict[str, Any]:
            return per.setdefault(d, _blank(d))

        recent_rejections: list[dict[str, Any]] = []
        async with self._engine.connect() as conn:
            present = {
                t for t in TABLES if (await conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": t})).scalar()
            }
            c = {"c": commune}
            if "commune_event_tally" in present:
                for d, outcome, n in await conn.execute(
                    text("SELECT dataset, outcome, events FROM commune_event_tally WHERE commune = :c"), c
                ):
                    e = entry(d)
                    e["accepted_by_outcome"][outcome] = int(n)
                    e["accepted"] += int(n)
            if "rejection" in present:
                for d, reason, n in await conn.execute(
                    text(
                        "SELECT coalesce(dataset, ''), reason, count(*) FROM rejection WHERE commune = :c GROUP BY 1, 2"
                    ),
                    c,
                ):
                    e = entry(d)
                    e["rejected_by_reason"][reason] = int(n)
                    e["rejected"] += int(n)
                rows = await conn.execute(
                    text(
                        "SELECT rejected_at, dataset, reason, message, event_id, feature_id, errors FROM rejection "
                        "WHERE commune = :c ORDER BY rejected_at DESC, seq DESC LIMIT :n"
                    ),
                    {"c": commune, "n": recent},
                )
                recent_rejections = [
                    {
                        "rejected_at": _iso(at),
                        "dataset": d,
                        "reason": reason,
                        "message": message,
                        "event_id": event_id,
                        "feature_id": feature_id,
                        "errors": errors,
                    }
                    for at, d, reason, message, event_id, feature_id, errors in rows
                ]
            if "canonical_feature" in present:
                for d, n, incomplete in await conn.execute(
                    text(
                        "SELECT dataset, count(*), count(*) FILTER (WHERE attributes->>'odc:conformance' = "
                        "'incomplete') FROM canonical_feature WHERE commune = :c AND NOT deleted GROUP BY 1"
                    ),
                    c,
                ):
                    e = entry(d)
                    e["live_features"] = int(n)
                    e["conformance"]["conforming"] = int(n) - int(incomplete)
                    e["conformance"]["incomplete"] = int(incomplete)
                if "rejection" in present:
                    for d, n in await conn.execute(text(OUTSTANDING_REFUSALS), c):
                        entry(d)["conformance"]["refused"] = int(n)
            if "feature_change_outbox" in present:
                last = {
                    r[0]: r
                    for r in await conn.execute(
                        text(
                            "SELECT DISTINCT ON (dataset) dataset, change_id, feature_id, kind, applied_at, event_id "
                            "FROM feature_change_outbox WHERE commune = :c ORDER BY dataset, change_id DESC"
                        ),
                        c,
                    )
                }
                versions: dict[int, Any] = {}
                if last and "change_log" in present:
                    versions = dict(
                        (
                            await conn.execute(
                                text("SELECT change_id, version FROM change_log WHERE change_id = ANY(:ids)"),
                                {"ids": [int(r[1]) for r in last.values()]},
                            )
                        ).all()
                    )
                for d, change_id, feature_id, kind, applied_at, event_id in last.values():
                    version = versions.get(change_id)
                    entry(d)["last_change_applied"] = {
                        "change_id": int(change_id),
                        "feature_id": feature_id,
                        "kind": kind.lower(),
                        "event_id": event_id,
                        "applied_at": _iso(applied_at),
                        "version": None if version is None else int(version),
                        "published": version is not None,
                    }
            if "dataset_state" in present:
                for d, v in await conn.execute(text("SELECT dataset, last_version FROM dataset_state")):
                    if d in per:
                        per[d]["dataset_latest_version"] = int(v)
        for e in per.values():
            e["events_received"] = e["accepted"] + e["rejected"]
        return {"commune": commune, "datasets": list(per.values()), "recent_rejections": recent_rejections}
