"""Versions as ranges of the change log (issue #16.2): each change is written once, the version cut writes per
version, not per change.

``change_log`` becomes ``change_log_entry``, append-only: each row gets a ``position`` from the sequence
``change_log_position`` (taken under the dataset's shared cut lock, docs/architecture.md); ``dataset_version``
records the range it covers (``first_position`` .. ``last_position``) and ``dataset_state`` the position up to
which every change is in a version or absorbed (``cut_position``). The version column is no longer written:
``change_log`` is now a VIEW with the same columns, ``version`` derived from the ranges (null while pending),
for every reader of it (the ingest status read model among them); ``version_diff`` reads a version's range.

Existing stores: per dataset, the changes of each version get consecutive positions in version order (a change
absorbed under a version stays with it, so every version keeps exactly the changes it had), then the pending
ones, which the next version takes. Downgrade writes each change's version back into the column.

Revision 0007 of the publish schema (after 0006).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# A change's version: the last version starting at or before its position (a change absorbed after a version,
# with no net effect, belongs to the version before it, as the cut marked it before 0007; before any version,
# to version 0), once the dataset's cut has passed it; null while pending.
CHANGE_LOG_VIEW = """
CREATE VIEW change_log AS
SELECT e.change_id, e.dataset, e.commune, e.feature_id, e.kind, e.before_geometry, e.before_attributes,
  e.before_hash, e.after_geometry, e.after_attributes, e.after_hash, e.received_at,
  CASE WHEN e.position <= (SELECT s.cut_position FROM dataset_state s WHERE s.dataset = e.dataset)
    THEN coalesce((SELECT v.version FROM dataset_version v WHERE v.dataset = e.dataset
                   AND v.first_position <= e.position ORDER BY v.first_position DESC, v.version DESC LIMIT 1), 0)
  END AS version,
  e.position
FROM change_log_entry e
"""

# As in 0005, per feature the first change's before and the last change's after (change_id order), nil changes
# left out; a version's changes are now those of its range. Taken with window functions over the range rather
# than by looking the first and last change up again: the planner cannot estimate how many changes a range holds,
# and the lookups, joined plainly, hashed the whole change log for one version (measured in docs/performance.md).
# Filters on the view's dataset, version, commune and feature_id (the window's partition) reach the range scan.
VERSION_DIFF_VIEW = """
CREATE VIEW version_diff AS
SELECT dataset, version, commune, feature_id, kind, before_geometry, before_attributes, before_hash,
  after_geometry, after_attributes, after_hash
FROM version_diff_before_0005
UNION ALL
SELECT w.dataset, w.version, w.commune, w.feature_id,
  CASE WHEN w.before_hash IS NULL THEN 'added' WHEN w.after_hash IS NULL THEN 'removed' ELSE 'updated' END,
  w.before_geometry, w.before_attributes, w.before_hash, w.after_geometry, w.after_attributes, w.after_hash
FROM (
  SELECT v.dataset, v.version, e.commune, e.feature_id,
    first_value(e.before_geometry) OVER g AS before_geometry,
    first_value(e.before_attributes) OVER g AS before_attributes,
    first_value(e.before_hash) OVER g AS before_hash,
    last_value(e.after_geometry) OVER g AS after_geometry,
    last_value(e.after_attributes) OVER g AS after_attributes,
    last_value(e.after_hash) OVER g AS after_hash,
    row_number() OVER g AS n
  FROM dataset_version v
  JOIN change_log_entry e ON e.dataset = v.dataset AND e.position >= v.first_position
    AND e.position <= v.last_position
  WINDOW g AS (PARTITION BY v.dataset, v.version, e.commune, e.feature_id ORDER BY e.change_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
) w
WHERE w.n = 1 AND w.before_hash IS DISTINCT FROM w.after_hash
  AND NOT EXISTS (SELECT 1 FROM version_diff_before_0005 o WHERE o.dataset = w.dataset AND o.version = w.version)
"""

# revision 0005's view, restored by downgrade
VERSION_DIFF_VIEW_0005 = """
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
    op.execute("DROP VIEW version_diff")
    op.execute("DROP INDEX change_log_pending")
    op.execute("DROP INDEX change_log_version")
    op.execute("ALTER TABLE change_log RENAME TO change_log_entry")
    op.execute("ALTER INDEX change_log_pkey RENAME TO change_log_entry_pkey")
    # CACHE 1 (the default): values are handed out in the order nextval is called, across sessions
    op.execute("CREATE SEQUENCE change_log_position AS bigint CACHE 1")
    op.execute("ALTER TABLE change_log_entry ADD COLUMN position bigint")
    op.execute(
        "UPDATE change_log_entry e SET position = o.n FROM (SELECT change_id, row_number() OVER "
        "(ORDER BY dataset, version NULLS LAST, change_id) AS n FROM change_log_entry) o WHERE o.change_id = e.change_id"
    )
    op.execute(
        "SELECT setval('change_log_position', coalesce((SELECT max(position) FROM change_log_entry), 0) + 1, false)"
    )
    op.execute("ALTER TABLE change_log_entry ALTER COLUMN position SET NOT NULL")
    op.execute("CREATE UNIQUE INDEX change_log_entry_position ON change_log_entry (dataset, position)")

    op.execute("ALTER TABLE dataset_version ADD COLUMN first_position bigint, ADD COLUMN last_position bigint")
    op.execute(
        "UPDATE dataset_version v SET first_position = r.lo, last_position = r.hi FROM (SELECT dataset, version, "
        "min(position) AS lo, max(position) AS hi FROM change_log_entry WHERE version IS NOT NULL "
        "GROUP BY dataset, version) r WHERE r.dataset = v.dataset AND r.version = v.version"
    )
    # a version with no change left (the cut never makes one; a store edited by hand): an empty range after the
    # changes of the versions before it
    op.execute(
        "UPDATE dataset_version v SET first_position = p.after + 1, last_position = p.after FROM (SELECT d.dataset, "
        "d.version, coalesce((SELECT max(e.position) FROM change_log_entry e WHERE e.dataset = d.dataset "
        "AND e.version < d.version), 0) AS after FROM dataset_version d WHERE d.first_position IS NULL) p "
        "WHERE p.dataset = v.dataset AND p.version = v.version"
    )
    op.execute(
        "ALTER TABLE dataset_version ALTER COLUMN first_position SET NOT NULL, ALTER COLUMN last_position SET NOT NULL"
    )
    op.execute("CREATE INDEX dataset_version_first_position ON dataset_version (dataset, first_position, version)")

    op.execute("ALTER TABLE dataset_state ADD COLUMN cut_position bigint NOT NULL DEFAULT 0")
    op.execute(
        "UPDATE dataset_state s SET cut_position = m.p FROM (SELECT dataset, max(position) AS p FROM change_log_entry "
        "WHERE version IS NOT NULL GROUP BY dataset) m WHERE m.dataset = s.dataset"
    )
    op.execute("ALTER TABLE change_log_entry DROP COLUMN version")
    op.execute(CHANGE_LOG_VIEW)
    op.execute(VERSION_DIFF_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW version_diff")
    op.execute("ALTER TABLE change_log_entry ADD COLUMN version bigint")
    op.execute("UPDATE change_log_entry e SET version = c.version FROM change_log c WHERE c.change_id = e.change_id")
    op.execute("DROP VIEW change_log")
    op.execute("ALTER TABLE dataset_state DROP COLUMN cut_position")
    op.execute("DROP INDEX dataset_version_first_position")
    op.execute("ALTER TABLE dataset_version DROP COLUMN first_position, DROP COLUMN last_position")
    op.execute("DROP INDEX change_log_entry_position")
    op.execute("ALTER TABLE change_log_entry DROP COLUMN position")
    op.execute("DROP SEQUENCE change_log_position")
    op.execute("ALTER INDEX change_log_entry_pkey RENAME TO change_log_pkey")
    op.execute("ALTER TABLE change_log_entry RENAME TO change_log")
    op.execute("CREATE INDEX change_log_pending ON change_log (dataset, change_id) WHERE version IS NULL")
    op.execute(
        "CREATE INDEX change_log_version ON change_log (dataset, version, commune, feature_id, change_id) "
        "WHERE version IS NOT NULL"
    )
    op.execute(VERSION_DIFF_VIEW_0005)
