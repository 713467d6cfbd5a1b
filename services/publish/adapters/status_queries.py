"""Read-only queries behind ``odc status``: features and latest version per dataset."""

from __future__ import annotations

from typing import Any

import psycopg

# Source records refused and not accepted since (the rule of `odc report`), per dataset.
_OUTSTANDING_REFUSALS = """
SELECT r.dataset, count(DISTINCT (r.commune, CASE WHEN coalesce(r.feature_id, '') <> '' THEN r.feature_id
                                                  ELSE r.rejection_id END))
FROM rejection r
WHERE r.dataset IS NOT NULL AND r.resolved_at IS NULL AND NOT EXISTS (
  SELECT 1 FROM canonical_feature f
  WHERE f.dataset = r.dataset AND f.commune = r.commune AND f.feature_id = r.feature_id
    AND f.updated_at > r.rejected_at AND NOT f.deleted)
GROUP BY 1
"""


def dataset_status(database_url: str, dataset_ids: list[str]) -> list[dict[str, Any]]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, connect_timeout=5) as conn:
        counts: dict[str, tuple[int, int]] = {
            r[0]: (int(r[1]), int(r[2]))
            for r in conn.execute(
                "SELECT dataset, count(*), count(*) FILTER (WHERE attributes->>'odc:conformance' = 'incomplete') "
                "FROM canonical_feature WHERE NOT deleted GROUP BY dataset"
            ).fetchall()
        }
        features = {d: n for d, (n, _) in counts.items()}
        refused: dict[str, int] = dict(conn.execute(_OUTSTANDING_REFUSALS).fetchall())
        versions = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT dataset, last_version, feature_count, updated_at FROM dataset_state"
            ).fetchall()
        }
    out = []
    for d in dataset_ids:
        v = versions.get(d)
        out.append(
            {
                "id": d,
                "features": int(features.get(d, 0)),
                "conformance": {
                    "conforming": counts.get(d, (0, 0))[0] - counts.get(d, (0, 0))[1],
                    "incomplete": counts.get(d, (0, 0))[1],
                    "refused": int(refused.get(d, 0)),
                },
                "version": int(v[0]) if v else 0,
                "features_at_version": int(v[1]) if v else 0,
                "version_published_at": v[2].isoformat() if v else None,
            }
        )
    return out
