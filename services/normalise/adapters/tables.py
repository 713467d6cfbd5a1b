"""Tables owned by the normaliser (SQLAlchemy Core + GeoAlchemy2). Changed only through migrations
(./migrations), upgraded to head at start."""

from __future__ import annotations

from pathlib import Path

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from services.infrastructure.outbox_relay import Xid8
from services.infrastructure.schema_migrations import SchemaOwner

metadata = MetaData()

canonical_feature = Table(
    "canonical_feature",
    metadata,
    Column("dataset", Text, nullable=False),
    Column("commune", Text, nullable=False),
    Column("feature_id", Text, nullable=False),
    Column("geom", Geometry("GEOMETRY", srid=4326, spatial_index=True), nullable=True),
    Column("attributes", JSONB, nullable=True),
    Column("content_hash", Text, nullable=True),
    Column("sequence", BigInteger, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("last_event_id", Text, nullable=False),
    Column("corrections", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The folded text values of the dataset's same-place fields (domain.same_place.folded_text_values), so
    # the nearby search compares names instead of folding each one; NULL where not computed (a dataset that
    # links nothing, a deleted feature, rows written before the column existed: folded in SQL then).
    Column("compared_folded", JSONB, nullable=True),
    PrimaryKeyConstraint("dataset", "commune", "feature_id", name="canonical_feature_pk"),
)

# Events processed that wrote no change row (stale, unchanged...): an applied event's change row in
# feature_change_outbox is its record (migration 0007, docs/architecture.md)
processed_event = Table(
    "processed_event",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

feature_change_outbox = Table(
    "feature_change_outbox",
    metadata,
    Column("change_id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False),
    Column("dataset", Text, nullable=False),
    Column("commune", Text, nullable=False),
    Column("feature_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    Column("before_geometry", Text),
    Column("before_attributes", Text),
    Column("before_hash", Text),
    Column("after_geometry", Text),
    Column("after_attributes", Text),
    Column("after_hash", Text),
    # the writer's transaction: the relay's cursor is (txid, change_id) in outbox_cursor (migration 0006)
    Column("txid", Xid8, nullable=False, server_default=text("pg_current_xact_id()")),
)
Index("feature_change_outbox_by_txid", feature_change_outbox.c.txid, feature_change_outbox.c.change_id)
# the dedup lookup: an event id a change row carries was processed (migration 0007; not unique, the same-place
# path may write several change rows under one event's id)
Index("feature_change_outbox_event_id", feature_change_outbox.c.event_id)

rejection = Table(
    "rejection",
    metadata,
    Column("rejection_id", Text, primary_key=True),
    Column("rejected_at", DateTime(timezone=True), nullable=False),
    Column("stage", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("event_id", Text),
    Column("dataset", Text),
    Column("commune", Text),
    Column("feature_id", Text),
    Column("errors", JSONB, nullable=False),
    Column("source_topic", Text, nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    # the first REJECTION_ORIGINAL_PREFIX_BYTES of the message (services/contract/size_limits.py), with the
    # SHA-256 and size of the whole; both NULL on rows written before they existed (original whole then)
    Column("original", LargeBinary, nullable=False),
    Column("seq", BigInteger, nullable=False, server_default=text("nextval('rejection_seq')")),
    Column("original_sha256", Text),
    Column("original_size", BigInteger),
    # where the record is in the sent file (the event's source_row), and when the same source record was
    # later accepted (it then leaves `odc report`)
    Column("source_row", BigInteger, nullable=True),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("txid", Xid8, nullable=False, server_default=text("pg_current_xact_id()")),  # relay cursor (0006)
)
Index("rejection_by_txid", rejection.c.txid, rejection.c.seq)
Index("rejection_by_commune", rejection.c.commune, rejection.c.dataset, rejection.c.rejected_at)
Index("rejection_by_time", rejection.c.rejected_at)  # pruning by retention

# Where each outbox relay is: the last (txid, id) sent from the outbox table named ``outbox``
# (services/infrastructure/outbox_relay.py, TxidCursor); one row per table, moved once per relayed batch.
outbox_cursor = Table(
    "outbox_cursor",
    metadata,
    Column("outbox", Text, primary_key=True),
    Column("txid", Xid8, nullable=False),
    Column("last_id", BigInteger, nullable=False),
    Column("moved_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

# Accepted events per commune, counted in the batch transaction that claims their ids (so exactly once);
# read by the ingest's status for communes. Rejections are counted from ``rejection`` itself.
commune_event_tally = Table(
    "commune_event_tally",
    metadata,
    Column("dataset", Text, nullable=False),
    Column("commune", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("last_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("dataset", "commune", "outcome", name="commune_event_tally_pk"),
)

# Same place, two records: the source records (members) of linked canonical features, each with its own
# position and content; the canonical feature is canonical_feature's row at (dataset, canonical_commune,
# canonical_feature_id). Rows exist only for linked features (see normalise/domain/feature_links.py).
feature_provenance = Table(
    "feature_provenance",
    metadata,
    Column("dataset", Text, nullable=False),
    Column("commune", Text, nullable=False),
    Column("feature_id", Text, nullable=False),
    Column("canonical_commune", Text, nullable=False),
    Column("canonical_feature_id", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("removed", Boolean, nullable=False),
    Column("geom", Geometry("GEOMETRY", srid=4326, spatial_index=False), nullable=True),
    Column("attributes", JSONB, nullable=True),
    Column("content_hash", Text, nullable=True),
    Column("corrections", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("distance_m", Float, nullable=False),
    Column("linked_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("dataset", "commune", "feature_id", name="feature_provenance_pk"),
)
Index(
    "feature_provenance_by_canonical",
    feature_provenance.c.dataset,
    feature_provenance.c.canonical_commune,
    feature_provenance.c.canonical_feature_id,
)

NORMALISE_SCHEMA = SchemaOwner("normalise", Path(__file__).with_name("migrations"), (metadata,))
# each batch resolves the refusals of the records it accepted: only unresolved rows are looked up
Index(
    "rejection_unresolved",
    rejection.c.dataset,
    rejection.c.commune,
    rejection.c.feature_id,
    postgresql_where=rejection.c.resolved_at.is_(None),
)
