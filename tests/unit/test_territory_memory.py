"""Building a territory keeps only its own communes (issue #16): the bundled COG's 37,600 rows were kept as a
cached tuple of tuples of text, ~14 MB in every service for the life of the process."""

from __future__ import annotations

import json
import tracemalloc

from services.contract.territories import HERE, build_territory


def test_building_a_territory_keeps_little_memory_and_peaks_low() -> None:
    spec = json.loads((HERE / "metropole-de-lyon.json").read_text(encoding="utf-8"))
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        territory = build_territory(spec, "metropole-de-lyon", HERE)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(territory.communes) >= 59  # the Métropole's communes (and their former codes) are there
    assert after - before < 2_000_000, f"kept {after - before:,} bytes"
    assert peak - before < 6_000_000, f"peaked at {peak - before:,} bytes"
