"""A version's diff read from the change log instead of copied (issue #16.2: one row written fewer per change).

``version_diff`` becomes a view: per (dataset, version, commune, feature_id), the first change's ``before``
and the last change's ``after`` of the changes marked with that version (versioning.collapse, in SQL), left
out when nothing changed net (created then removed, or the same content hash). The diffs written before this
revision are kept as they were, in ``version_diff_before_0005`` (renamed, rows intact), and the view serves
them for their versions. Downgrade writes the derived diffs back into the table.

Revision 0005 of the publish schema (after 0004).
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

VIEW = """
CREATE VIEW version_diff AS
SELECT dataset, version, commune, feature_id, kind, before_geometry, before_attributes, before_hash,
  after_geometry, after_attributes, after_hash
FROM version_diff_before_0005
UNION ALL
SELECT g.dataset, g.version, g.commune, g.feature_id,
  CASE WHEN f.before_hash IS NULL THEN 'added' WHEN l.after_hash IS NULL THEN 'removed' ELSE 'updated' END,
  f.before_geometry, f.before_attributes, f.before_hash, l.after_geometry, l.after_attributes, l.after_hash
FROM (
  SELECT dataset, version, commune, feature_id, min(change_id) AS first_id, max(change_id) AS last_id
  FROM change_log WHERE version IS NOT NULL GROUP BY dataset, version, commune, feature_id
) g
JOIN change_log f ON f.change_id = g.first_id
JOIN change_log l ON l.change_id = g.last_id
WHERE f.before_hash IS DISTINCT FROM l.after_hash
  AND NOT EXISTS (SELECT 1 FROM version_diff_before_0005 o WHERE o.dataset = g.dataset AND o.version = g.version)
"""


def upgrade() -> None:
    op.rename_table("version_diff", "version_diff_before_0005")
    op.execute("ALTER INDEX version_diff_pk RENAME TO version_diff_before_0005_pk")
    op.execute("ALTER INDEX version_diff_feature RENAME TO version_diff_before_0005_feature")
    # the view's groups: a version's changes in (commune, feature_id, change_id) order; marked rows only
    op.execute(
        "CREATE INDEX change_log_version ON change_log (dataset, version, commune, feature_id, change_id) "
        "WHERE version IS NOT NULL"
    )
    op.execute(VIEW)


def downgrade() -> None:
    op.execute(
        "INSERT INTO version_diff_before_0005 SELECT * FROM version_diff v WHERE NOT EXISTS "
        "(SELECT 1 FROM version_diff_before_0005 o WHERE o.dataset = v.dataset AND o.version = v.version)"
    )
    op.execute("DROP VIEW version_diff")
    op.execute("DROP INDEX change_log_version")
    op.execute("ALTER INDEX version_diff_before_0005_feature RENAME TO version_diff_feature")
    op.execute("ALTER INDEX version_diff_before_0005_pk RENAME TO version_diff_pk")
    op.rename_table("version_diff_before_0005", "version_diff")
