"""Read-only queries behind ``odc status``: features and latest version per dataset."""

from __future__ import annotations

from typing import Any

import psycopg


def dataset_status(database_url: str, dataset_ids: list[str]) -> list[dict[str, Any]]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, connect_timeout=5) as conn:
        features: dict[str, int] = dict(
            conn.execute(
                "SELECT dataset, count(*) FROM canonical_feature WHERE NOT deleted GROUP BY dataset"
            ).fetchall()
        )
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
                "version": int(v[0]) if v else 0,
                "features_at_version": int(v[1]) if v else 0,
                "version_published_at": v[2].isoformat() if v else None,
            }
        )
    return out
