"""The acceptance manifest (acceptance/manifest.py) names real datasets, loadable territories and profile
edits that a profile document can take, and the report writer prints every figure it is given; so a broken
manifest fails here rather than half-way through `make acceptance` on a throwaway stack."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from acceptance.__main__ import ExportCheck, FileResult, write_report
from acceptance.manifest import ENTRIES, EXCLUDED, Entry
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.territories import load_territory
from services.ingest.domain.source_profiles import profile_from_dict


@pytest.mark.parametrize("territory", sorted({e.territory for e in ENTRIES}))
def test_every_territory_of_the_manifest_loads_and_knows_every_dataset(territory: str) -> None:
    assert load_territory(territory).communes
    catalogue = DatasetCatalogue.load(territory=territory)
    for e in ENTRIES:
        if e.territory == territory:
            assert catalogue.get(e.dataset) is not None, e.path


def test_every_file_is_sent_once_and_every_commune_belongs_to_its_territory() -> None:
    assert not [p for p, n in Counter(e.path for e in ENTRIES).items() if n > 1]
    for e in ENTRIES:
        if e.commune is not None and e.territory != "metropole-de-lyon":  # national files: any COG commune
            assert e.commune in load_territory(e.territory).communes, e.path
    assert not {e.path for e in ENTRIES} & {x.path for x in EXCLUDED}


def test_profile_edits_are_profile_members_and_say_why() -> None:
    base = {
        "format": "odc-source-profile/1",
        "dataset": "public_toilets",
        "fields": [],
        "geometry": {"kind": "feature", "columns": [], "crs": "EPSG:4326", "order": "lonlat"},
        "id_columns": [],
        "commune_column": None,
    }
    for e in ENTRIES:
        if e.profile_edit:
            assert set(e.profile_edit) <= set(base), e.path
            assert e.edit_why, e.path
            profile_from_dict({**base, **e.profile_edit, "dataset": e.dataset})


def test_the_report_shows_levels_missing_fields_refusals_and_exports(tmp_path: Path) -> None:
    r = FileResult(Entry("x/fountains.geojson", "drinking_fountains", territory="departement:34", note="why"))
    r.records = 10
    r.levels.update({"conforming": 6, "incomplete": 3})
    r.missing.update({"type_fontaine": 3})
    r.rejected.update({"invalid_geometry": 1})
    r.rules.update({("geometry", "geometry_required"): 1})
    out = tmp_path / "dq.md"
    write_report([r], [ExportCheck("drinking_fountains", 2, 6, "3 incomplete record(s) left out: ...", True)], 1.0, out)
    text = out.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `x/fountains.geojson`"))
    assert "| departement:34 |" in row and "| 6 | 3 (type_fontaine 3) | invalid_geometry 1 | 90% |" in row
    assert "Files with at least 90% of their records in: 1 of 1" in text
    assert "| drinking_fountains | 2 | 6 | 3 incomplete record(s) left out | valid |" in text
    assert "| geometry | geometry_required | 1 |" in text
