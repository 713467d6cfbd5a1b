"""Read-only query behind ``odc report``: a commune's outstanding rejections, from the ``rejection`` table.

Outstanding means the latest rejection of a feature that no later accepted record has resolved (the
commune fixed it and re-sent it: ``resolved_at``, set in the batch that accepted it, or a later live state for
rows written before that column); a record with no usable identity is kept as it is, one line each.
"""

from __future__ import annotations

import psycopg

from services.normalise.domain.rejection_summary import RejectedRecord

_OUTSTANDING = """
SELECT dataset, commune, feature_id, rejected_at, reason, errors, source_row FROM (
  SELECT DISTINCT ON (r.dataset, CASE WHEN coalesce(r.feature_id, '') <> '' THEN r.feature_id ELSE r.rejection_id END)
    r.dataset, r.commune, coalesce(r.feature_id, '') AS feature_id, r.rejected_at, r.reason, r.errors, r.source_row
  FROM rejection r
  WHERE r.commune = %(commune)s AND (%(dataset)s::text IS NULL OR r.dataset = %(dataset)s)
    AND r.resolved_at IS NULL
    AND NOT EXISTS (
      SELECT 1 FROM canonical_feature f
      WHERE f.dataset = r.dataset AND f.commune = r.commune AND f.feature_id = r.feature_id
        AND f.updated_at > r.rejected_at AND NOT f.deleted)
  ORDER BY r.dataset, CASE WHEN coalesce(r.feature_id, '') <> '' THEN r.feature_id ELSE r.rejection_id END,
    r.rejected_at DESC
) latest
ORDER BY rejected_at DESC, dataset, feature_id
LIMIT %(limit)s
"""


def outstanding_rejections(
    database_url: str, commune: str, dataset: str | None = None, limit: int = 10_000
) -> list[RejectedRecord]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(_OUTSTANDING, {"commune": commune, "dataset": dataset, "limit": limit}).fetchall()
    return [
        RejectedRecord(d or "", c or "", fid, at.isoformat(), reason, list(errors or []), row)
        for d, c, fid, at, reason, errors, row in rows
    ]


_INCOMPLETE = """
SELECT dataset, feature_id, attributes -> 'odc:missing', attributes -> 'odc:dropped' FROM canonical_feature
WHERE commune = %(commune)s AND (%(dataset)s::text IS NULL OR dataset = %(dataset)s) AND NOT deleted
  AND attributes ->> 'odc:conformance' = 'incomplete'
ORDER BY dataset, feature_id
LIMIT %(limit)s
"""


def incomplete_records(
    database_url: str, commune: str, dataset: str | None = None, limit: int = 10_000
) -> list[tuple[str, str, list[str], list[str]]]:
    """The commune's live records that got in incomplete: (dataset, feature id, missing fields, values left out)."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(_INCOMPLETE, {"commune": commune, "dataset": dataset, "limit": limit}).fetchall()
    return [(d, fid, list(missing or []), list(dropped or [])) for d, fid, missing, dropped in rows]
