"""Build a stream of real events with fresh ids, and reconcile what was sent with what PostGIS, the
versions and the notifications hold: zero lost, zero applied twice, versions gap-free and notified."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import ChangeEvent
from services.ingest.domain.change_events import upsert_events
from services.ingest.domain.source_records import read_geojson
from services.normalise.adapters.outboxes import FEATURE_CHANGES_CURSOR
from tests.integration.pipeline_harness import Pipeline, wait_for

TOILETS = Path(__file__).resolve().parents[2] / "samples" / "grandlyon" / "toilettes.geojson"
DATASET = "public_toilets"


def toilet_stream(n: int, tag: str) -> list[ChangeEvent]:
    """``n`` creations built from the real toilets file, each with a fresh feature id."""
    definition = DatasetCatalogue.load().get(DATASET)
    assert definition is not None
    base = list(
        upsert_events(
            read_geojson(TOILETS.read_bytes()),
            definition,
            commune=None,
            source="faults",
            sequence=1,
            occurred_at=datetime.now(UTC),
            new_id=lambda: str(uuid.uuid4()),
        )
    )
    return [replace(base[i % len(base)], event_id=str(uuid.uuid4()), feature_id=f"{tag}-{i}") for i in range(n)]


def send_in_background(
    p: Pipeline, events: list[ChangeEvent], chunk: int = 2000, pause: float = 0.0
) -> threading.Thread:
    """Produce ``events`` in chunks from a thread; ``pause`` seconds after each chunk but the last."""

    def run() -> None:
        for i in range(0, len(events), chunk):
            p.produce_events(events[i : i + chunk])
            if pause and i + chunk < len(events):
                time.sleep(pause)

    t = threading.Thread(target=run, name="fault-test-producer", daemon=True)
    t.start()
    return t


def applied_count(p: Pipeline, tag: str) -> int:
    return int(
        p.sql("SELECT count(*) FROM canonical_feature WHERE dataset = %s AND feature_id LIKE %s", DATASET, f"{tag}-%")[
            0
        ][0]
    )


@dataclass
class Reconciliation:
    sent: int
    stored: int
    lost: int
    applied_twice: int
    changes_recorded_twice: int
    versions: list[int]
    notified_versions: list[int]
    features_in_versions: int

    def assert_clean(self) -> None:
        assert self.lost == 0, f"{self.lost} of {self.sent} events lost"
        assert self.applied_twice == 0, f"{self.applied_twice} events applied more than once"
        assert self.changes_recorded_twice == 0, f"{self.changes_recorded_twice} features added in two versions"
        assert self.versions == list(range(1, len(self.versions) + 1)), f"versions not gap-free: {self.versions}"
        assert sorted(set(self.notified_versions)) == self.versions, (
            f"notified {sorted(set(self.notified_versions))}, published {self.versions}"
        )
        first_seen = list(dict.fromkeys(self.notified_versions))
        assert first_seen == sorted(first_seen), f"notifications out of order: {first_seen}"
        assert self.features_in_versions == self.sent, f"{self.features_in_versions} of {self.sent} in versions"


def reconcile(p: Pipeline, events: list[ChangeEvent], tag: str, timeout: float = 300) -> Reconciliation:
    """Wait for the pipeline to settle, then compare. Only features of this stream (``tag``) are counted."""
    wait_for(f"all {len(events)} features stored", lambda: applied_count(p, tag) >= len(events), timeout)
    wait_for(
        "the outboxes to drain",
        lambda: (
            p.sql(
                f"SELECT ({FEATURE_CHANGES_CURSOR.pending_sql()}) + "
                "(SELECT count(*) FROM notification_outbox WHERE sent_at IS NULL)"
            )[0][0]
            == 0
        ),
        timeout,
    )
    # the outbox is marked sent before the publisher has consumed it: wait until it has recorded every change
    # (else "nothing pending" can be read while the last changes are still on their way)
    wait_for(
        "the publisher to record every canonical change",
        lambda: p.sql(
            "SELECT (SELECT count(*) FROM feature_change_outbox WHERE feature_id LIKE %s) <= "
            "(SELECT count(*) FROM change_log WHERE dataset = %s AND feature_id LIKE %s)",
            f"{tag}-%",
            DATASET,
            f"{tag}-%",
        )[0][0],
        timeout,
    )
    wait_for("every change to be in a version", lambda: p.pending_changes(DATASET) == 0 or None, timeout)
    like = f"{tag}-%"
    stored = applied_count(p, tag)
    twice = int(
        p.sql(
            "SELECT count(*) FROM (SELECT event_id FROM feature_change_outbox WHERE feature_id LIKE %s "
            "GROUP BY event_id HAVING count(*) > 1) s",
            like,
        )[0][0]
    )
    per_feature = int(
        p.sql(
            "SELECT count(*) FROM (SELECT feature_id FROM version_diff WHERE dataset = %s AND "
            "feature_id LIKE %s GROUP BY feature_id HAVING count(*) > 1) s",
            DATASET,
            like,
        )[0][0]
    )
    in_versions = int(
        p.sql(
            "SELECT count(DISTINCT feature_id) FROM version_diff WHERE dataset = %s AND "
            "feature_id LIKE %s AND kind = 'added'",
            DATASET,
            like,
        )[0][0]
    )
    versions = [
        int(r[0]) for r in p.sql("SELECT version FROM dataset_version WHERE dataset = %s ORDER BY version", DATASET)
    ]
    notified = wait_for(
        "notifications of every version",
        lambda: (n := [d.version for _, d in p.version_notifications(DATASET)]) and set(n) >= set(versions) and n,
        timeout,
    )
    return Reconciliation(
        len(events), stored, len(events) - stored, twice, per_feature, versions, notified, in_versions
    )
