"""Tables owned by the publisher."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

dataset_state = Table(
    "dataset_state",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("last_version", BigInteger, nullable=False),
    Column("feature_count", BigInteger, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Every canonical change received, kept: the dedup record (change_id) and the row-level history.
change_log = Table(
    "change_log",
    metadata,
    Column("change_id", BigInteger, primary_key=True, autoincrement=False),
    Column("dataset", Text, nullable=False),
    Column("commune", Text, nullable=False),
    Column("feature_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("before_geometry", Text),
    Column("before_attributes", Text),
    Column("before_hash", Text),
    Column("after_geometry", Text),
    Column("after_attributes", Text),
    Column("after_hash", Text),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("version", BigInteger, nullable=True),  # null while pending
)
Index(
    "change_log_pending", change_log.c.dataset, change_log.c.change_id, postgresql_where=change_log.c.version.is_(None)
)
Index("change_log_feature", change_log.c.dataset, change_log.c.commune, change_log.c.feature_id, change_log.c.change_id)

dataset_version = Table(
    "dataset_version",
    metadata,
    Column("dataset", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=False),
    Column("added", Integer, nullable=False),
    Column("updated", Integer, nullable=False),
    Column("removed", Integer, nullable=False),
    Column("feature_count", BigInteger, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("first_change_id", BigInteger, nullable=False),
    Column("last_change_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("dataset", "version", name="dataset_version_pk"),
)

version_diff = Table(
    "version_diff",
    metadata,
    Column("dataset", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("commune", Text, nullable=False),
    Column("feature_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("before_geometry", Text),
    Column("before_attributes", Text),
    Column("before_hash", Text),
    Column("after_geometry", Text),
    Column("after_attributes", Text),
    Column("after_hash", Text),
    PrimaryKeyConstraint("dataset", "version", "commune", "feature_id", name="version_diff_pk"),
)

notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("dataset", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("event_id", Text, nullable=False, unique=True),
    Column("headers", JSONB, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
)
Index("notification_outbox_unsent", notification_outbox.c.id, postgresql_where=notification_outbox.c.sent_at.is_(None))
