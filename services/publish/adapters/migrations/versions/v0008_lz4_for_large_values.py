"""Large values compressed with lz4 instead of pglz (issue #16: PostgreSQL's CPU per polygon event).

A polygon's geometry (GeoJSON text, or the geometry itself) and a record's attributes are mostly over the 2 kB at
which PostgreSQL compresses a value before storing it out of line, and pglz, its default, is slow to compress:
`python -m benchmarks.copy_format` (docs/performance.md, "lz4 for large values") measured the backend at 86 µs per
feature change row of parks with pglz against 29 with lz4, for the same size on disk (3,785 vs 3,883 bytes a row), and
`python -m benchmarks.profile_services --dataset parks_gardens --spread --toast-compression lz4` took PostgreSQL
from 324 to 255 µs per event. Points' values are mostly under 2 kB and are not compressed either way.

Only values written after the upgrade use lz4; older ones stay pglz, and PostgreSQL reads both. A server built
without lz4 (``default_toast_compression`` does not offer it) keeps pglz: the revision then changes nothing and
says so in a NOTICE, and nothing else depends on it.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# spelt out (DDL takes no bound parameters); the same columns in both, only the method differs
TO_LZ4 = (
    "DO $$ BEGIN "
    "IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
    "AND 'lz4' = ANY(enumvals)) THEN "
    "ALTER TABLE change_log_entry ALTER COLUMN before_geometry SET COMPRESSION lz4, "
    "ALTER COLUMN before_attributes SET COMPRESSION lz4, "
    "ALTER COLUMN after_geometry SET COMPRESSION lz4, "
    "ALTER COLUMN after_attributes SET COMPRESSION lz4; "
    "ALTER TABLE published_feature ALTER COLUMN geom SET COMPRESSION lz4, "
    "ALTER COLUMN geometry SET COMPRESSION lz4, "
    "ALTER COLUMN attributes SET COMPRESSION lz4; "
    "ALTER TABLE version_event ALTER COLUMN body SET COMPRESSION lz4; "
    "ALTER TABLE notification_outbox ALTER COLUMN payload SET COMPRESSION lz4; "
    "ELSE RAISE NOTICE 'this PostgreSQL has no lz4: large values stay compressed with pglz'; "
    "END IF; END $$"
)

TO_DEFAULT = (
    "DO $$ BEGIN "
    "IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
    "AND 'lz4' = ANY(enumvals)) THEN "
    "ALTER TABLE change_log_entry ALTER COLUMN before_geometry SET COMPRESSION default, "
    "ALTER COLUMN before_attributes SET COMPRESSION default, "
    "ALTER COLUMN after_geometry SET COMPRESSION default, "
    "ALTER COLUMN after_attributes SET COMPRESSION default; "
    "ALTER TABLE published_feature ALTER COLUMN geom SET COMPRESSION default, "
    "ALTER COLUMN geometry SET COMPRESSION default, "
    "ALTER COLUMN attributes SET COMPRESSION default; "
    "ALTER TABLE version_event ALTER COLUMN body SET COMPRESSION default; "
    "ALTER TABLE notification_outbox ALTER COLUMN payload SET COMPRESSION default; "
    "ELSE RAISE NOTICE 'this PostgreSQL has no lz4: large values stay compressed with pglz'; "
    "END IF; END $$"
)


def upgrade() -> None:
    op.execute(TO_LZ4)


def downgrade() -> None:
    op.execute(TO_DEFAULT)
