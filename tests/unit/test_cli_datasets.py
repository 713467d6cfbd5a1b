"""`odc datasets` is readable at 80 columns: no line wider, every id (and identity field) whole on its line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.contract.datasets.catalogue import DatasetCatalogue

ROOT = Path(__file__).resolve().parents[2]


def odc_datasets(columns: int, *extra: str, territory: str | None = None) -> str:
    env = {**os.environ, "COLUMNS": str(columns)}
    env.pop("ODC_TERRITORY", None)
    if territory:
        env["ODC_TERRITORY"] = territory
    out = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "datasets", *extra],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


@pytest.mark.parametrize("columns", [80, 100])
def test_every_id_is_whole_and_no_line_is_wider_than_the_terminal(columns: int) -> None:
    text = odc_datasets(columns)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= columns
    starts = {line.split()[0] for line in lines if line.strip()}
    for d in DatasetCatalogue.load():
        assert d.id in starts, f"{d.id} cut or missing"
        row = next(line for line in lines if line.startswith(d.id + " "))
        assert f" {d.identity_field} " in row + " " and "…" not in row
    assert "territory: Métropole de Lyon" in text


def test_the_table_names_the_territory_and_json_keeps_the_full_schema_name() -> None:
    assert "territory: Montpellier Méditerranée Métropole" in odc_datasets(
        80, territory="montpellier-mediterranee-metropole"
    )
    rows = json.loads(odc_datasets(80, "--json"))
    assert {"id": "carpool_places", "national_schema": "etalab/schema-lieux-covoiturage 0.2.8"}.items() <= next(
        r for r in rows if r["id"] == "carpool_places"
    ).items()
