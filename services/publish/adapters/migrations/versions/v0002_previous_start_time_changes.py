"""What the release before migrations re-ran at every start, run once: the ``version_diff_feature`` index
for stores whose ``version_diff`` predates it, and the one-time fill of ``published_feature`` from the diffs
for datasets published before that table existed. A no-op on a store made by d9e54e3 or by v0001.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS version_diff_feature ON version_diff (dataset, commune, feature_id, version)"
    )
    # each feature's latest diff, for the datasets that have diffs but no published_feature row
    op.execute(
        "INSERT INTO published_feature (dataset, commune, feature_id, geom, geometry, attributes, content_hash, "
        "version) SELECT dataset, commune, feature_id, ST_SetSRID(ST_GeomFromGeoJSON(after_geometry), 4326), "
        "after_geometry, after_attributes, after_hash, version FROM (SELECT DISTINCT ON (dataset, commune, "
        "feature_id) * FROM version_diff vd WHERE NOT EXISTS (SELECT 1 FROM published_feature p WHERE "
        "p.dataset = vd.dataset) ORDER BY dataset, commune, feature_id, version DESC) latest "
        "WHERE after_hash IS NOT NULL"
    )


def downgrade() -> None:
    pass  # the index belongs to the baseline (v0001) now, and the filled rows are the published state
