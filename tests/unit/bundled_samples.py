"""Change events built from the bundled sample files (samples/grandlyon), as ``odc send`` builds them, for unit
tests that want real records. Pure: the files are read, nothing is sent."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import ChangeEvent
from services.ingest.domain.change_events import upsert_events
from services.ingest.domain.source_records import read_geojson

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = {
    "public_toilets": ROOT / "samples/grandlyon/toilettes.geojson",
    "parks_gardens": ROOT / "samples/grandlyon/parcs.geojson",
}


def sample_events(dataset: str, n: int, occurred_at: datetime | None = None) -> list[ChangeEvent]:
    """``n`` upserts of the dataset's sample file, repeated under new feature ids when ``n`` is larger."""
    definition = DatasetCatalogue.load().get(dataset)
    assert definition is not None
    counter = itertools.count()
    base = list(
        upsert_events(
            list(read_geojson(SAMPLES[dataset].read_bytes())),
            definition,
            commune=None,
            source="unit-test",
            sequence=1,
            occurred_at=occurred_at or datetime(2026, 11, 1, tzinfo=UTC),
            new_id=lambda: f"ev-{next(counter)}",
        )
    )
    return [
        replace(ev, event_id=f"{ev.event_id}-r{i // len(base)}", feature_id=f"{ev.feature_id}-r{i // len(base)}")
        for i, ev in ((i, base[i % len(base)]) for i in range(n))
    ]
