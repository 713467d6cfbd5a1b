"""Tables owned by the publisher. Changed only through migrations (./migrations), upgraded to head at start."""

from __future__ import annotations

from pathlib import Path

from geoalchemy2 import Geometry
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from services.infrastructure.schema_migrations import SchemaOwner

metadata = MetaData()

dataset_state = Table(
    "dataset_state",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("last_version", BigInteger, nullable=False),
    Column("feature_count", BigInteger, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # live features marked incomplete (services/contract/conformance_levels.py); the others conform
    Column("incomplete", BigInteger, nullable=False, server_default=text("0")),
    # every change of the dataset up to this change-log position is in a version (or absorbed); after it, pending
    Column("cut_position", BigInteger, nullable=False, server_default=text("0")),
    # the changes after cut_position and when the newest of them was recorded, as of the last cut (which folds
    # in pending_tally): the cutter's summary without counting the log (0009)
    Column("pending_changes", BigInteger, nullable=False, server_default=text("0")),
    Column("newest_received_at", DateTime(timezone=True), nullable=True),
)

# Every canonical change received, kept and never rewritten: the dedup record (change_id), the row-level history,
# and the log versions are ranges of (publish migration 0007). ``position`` is taken from the sequence
# ``change_log_position`` under the dataset's shared cut lock, so a version (dataset_version.first_position ..
# last_position) holds exactly the changes committed before its cut (docs/architecture.md). The ``change_log`` VIEW
# serves these rows with the version that holds each (null while pending), as the table did before 0007.
change_log_entry = Table(
    "change_log_entry",
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
    Column("position", BigInteger, nullable=False),
)
Index(
    "change_log_feature",
    change_log_entry.c.dataset,
    change_log_entry.c.commune,
    change_log_entry.c.feature_id,
    change_log_entry.c.change_id,
)
# a dataset's pending changes (after its cut position) and a version's range
Index("change_log_entry_position", change_log_entry.c.dataset, change_log_entry.c.position, unique=True)

# How many changes each recording transaction added to the log, per dataset: appended (recorders of one dataset
# never wait for each other on a counter), folded into dataset_state and deleted by the dataset's next cut (0009).
pending_tally = Table(
    "pending_tally",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("dataset", Text, nullable=False),
    Column("changes", BigInteger, nullable=False),
    Column("newest_received_at", DateTime(timezone=True), nullable=False),
)
Index("pending_tally_dataset", pending_tally.c.dataset)

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
    Column("incomplete", BigInteger, nullable=False, server_default=text("0")),
    # the version's range of the change log (the dataset's changes at these positions, both ends included)
    Column("first_position", BigInteger, nullable=False),
    Column("last_position", BigInteger, nullable=False),
    PrimaryKeyConstraint("dataset", "version", name="dataset_version_pk"),
)
# the version that holds a change: the last one starting at or before its position (the change_log view)
Index(
    "dataset_version_first_position",
    dataset_version.c.dataset,
    dataset_version.c.first_position,
    dataset_version.c.version,
)

# The diffs of the versions cut before migration 0005, as they were written. ``version_diff`` is now a VIEW
# (migrations/versions/v0005_*, v0007_*): these rows for their versions, and for later versions each feature's net
# change derived from the version's range of the change log (first change's before, last change's after, nil
# changes left out).
version_diff_before_0005 = Table(
    "version_diff_before_0005",
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
    PrimaryKeyConstraint("dataset", "version", "commune", "feature_id", name="version_diff_before_0005_pk"),
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
Index(
    "version_diff_before_0005_feature",
    version_diff_before_0005.c.dataset,
    version_diff_before_0005.c.commune,
    version_diff_before_0005.c.feature_id,
    version_diff_before_0005.c.version,
)

# The current published state (the latest version's features), maintained per version in O(changes): what
# OGC API – Features and the "latest" downloads serve, with a spatial index for bbox queries.
published_feature = Table(
    "published_feature",
    metadata,
    Column("dataset", Text, nullable=False),
    Column("commune", Text, nullable=False),
    Column("feature_id", Text, nullable=False),
    Column("geom", Geometry("GEOMETRY", srid=4326, spatial_index=True), nullable=True),
    Column("geometry", Text),  # GeoJSON text exactly as in the version's diff
    Column("attributes", Text, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("version", BigInteger, nullable=False),  # the version that last changed it
    PrimaryKeyConstraint("dataset", "commune", "feature_id", name="published_feature_pk"),
)

# The structured CloudEvent (JSON) of each version: the body of webhook deliveries and SSE events.
version_event = Table(
    "version_event",
    metadata,
    Column("dataset", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("event_id", Text, nullable=False, unique=True),
    Column("body", LargeBinary, nullable=False),
    PrimaryKeyConstraint("dataset", "version", name="version_event_pk"),
)

webhook_subscription = Table(
    "webhook_subscription",
    metadata,
    Column("id", Text, primary_key=True),
    Column("url", Text, nullable=False),
    Column("datasets", ARRAY(Text), nullable=True),  # null: every dataset
    Column("secret", Text, nullable=False),  # needed to sign; never logged, never returned after creation
    Column("description", Text, nullable=False, server_default=""),
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Standard Webhooks (docs/api.md): the secret replaced by a rotation, still signed with until then
    Column("previous_secret", Text, nullable=True),
    Column("previous_secret_until", DateTime(timezone=True), nullable=True),
    # registered before Standard Webhooks: also gets the old X-Odc-Signature header (one release)
    Column("legacy_signature", Boolean, nullable=False, server_default="false"),
    Column("disabled_at", DateTime(timezone=True), nullable=True),  # the receiver answered 410 Gone
    Column("disabled_reason", Text, nullable=True),
)

# One row per (subscription, version): the per-subscription outbox, delivered in id order.
webhook_delivery = Table(
    "webhook_delivery",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("subscription_id", Text, nullable=False),
    Column("dataset", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("state", Text, nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_attempt_at", DateTime(timezone=True)),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("subscription_id", "event_id", name="webhook_delivery_once"),
)
Index(
    "webhook_delivery_pending",
    webhook_delivery.c.subscription_id,
    webhook_delivery.c.id,
    postgresql_where=webhook_delivery.c.state == "pending",
)

PUBLISH_SCHEMA = SchemaOwner("publish", Path(__file__).with_name("migrations"), (metadata,))
