"""A commune's file in its own layout gets in on the real stack: ``odc profile suggest`` proposes the mapping,
``odc profile save`` keeps it (versioned), ``odc send --profile`` publishes through it; the normaliser stores
canonical features. And the Métropole's own fountain layer goes through its suggested profile with its real
ids and communes: whatever is refused is refused for fields the layer does not have, nothing else."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local.kafka_access import COMMUNE_USERS
from services.ingest.entrypoints.profile_commands import suggestion_for
from services.ingest.entrypoints.send_command import send_file
from services.ingest.settings import IngestSettings
from tests.integration.pipeline_harness import Pipeline

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "tests" / "fixtures" / "source-profiles"
METROPOLE_REQUIRED = {"type_fontaine", "conditions_acces", "accessible_pmr", "remplissage_contenant_possible"}


def cli(p: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ODC_DATABASE_URL": p.db.dsn,
        "ODC_INGEST_DATABASE_URL": p.db.dsn,
        "ODC_INGEST_KAFKA_BOOTSTRAP": p.broker.bootstrap,
        **p.broker.access.env("ODC_INGEST_", COMMUNE_USERS[0]),  # `odc send` as a commune's producer
    }
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        check=False,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_commune_layout_gets_in_with_suggest_save_and_send(pipeline: Pipeline, tmp_path: Path) -> None:
    source = SAMPLES / "fontaines_commune.csv"
    ids = [line.split(";")[0] for line in source.read_text(encoding="utf-8").splitlines()[1:]]
    profile_file = tmp_path / "fountains.profile.json"
    suggested = cli(
        pipeline,
        "profile",
        "suggest",
        str(source),
        "--dataset",
        "drinking_fountains",
        "--out",
        str(profile_file),
        "--json",
    )
    assert suggested.returncode == 0, suggested.stderr
    report = json.loads(suggested.stdout)
    assert report["unmapped_columns"] == ["Commune", "Source"]
    assert not [f for f in report["missing_fields"] if f["required"]]
    saved = cli(pipeline, "profile", "save", str(profile_file), "--all-communes", "--source", "fountain-export")
    assert saved.returncode == 0, saved.stderr
    assert "version 1" in saved.stdout
    listed = json.loads(cli(pipeline, "profile", "list", "--dataset", "drinking_fountains", "--json").stdout)
    assert ("*", "fountain-export", 1) in [(r["commune"], r["source"], r["version"]) for r in listed]

    before = pipeline.metric("normalise", "odc_events_received_total")
    sent = cli(pipeline, "send", str(source), "--dataset", "drinking_fountains", "--profile", "fountain-export")
    assert sent.returncode == 0, sent.stderr
    pipeline.settle("drinking_fountains", before, len(ids))
    rows = pipeline.sql(
        "SELECT feature_id, commune, attributes FROM canonical_feature "
        "WHERE dataset = 'drinking_fountains' AND feature_id = ANY(%s) AND NOT deleted ORDER BY feature_id",
        ids,
    )
    assert len(rows) == len(ids) == 25
    by_id = {fid: (commune, attrs) for fid, commune, attrs in rows}
    commune, attrs = by_id["BF-1167"]
    assert commune == "69385"  # each record under its own commune, from the file's INSEE column
    assert attrs["type_fontaine"] == "borne fontaine" and attrs["accessible_pmr"] is True
    assert attrs["remplissage_contenant_possible"] is False and attrs["conditions_acces"] == "aucune"
    assert (attrs["longitude"], attrs["latitude"]) == pytest.approx((4.8158951, 45.7574587))
    assert {a["type_fontaine"] for _, a in by_id.values()} == {"borne fontaine", "robinet", "fontaine type Wallace"}
    assert not pipeline.sql(
        "SELECT 1 FROM rejection WHERE dataset = 'drinking_fountains' AND feature_id = ANY(%s)", ids
    )


def test_the_metropole_fountain_layer_goes_through_its_suggested_profile(pipeline: Pipeline) -> None:
    source = SAMPLES / "fontaines_potables.first40.geojson"
    features = json.loads(source.read_text(encoding="utf-8"))["features"]
    ids = [f["properties"]["id"] for f in features]
    suggestion = suggestion_for(source, "drinking_fountains")
    before = pipeline.metric("normalise", "odc_events_received_total")
    settings = IngestSettings(
        kafka_bootstrap=pipeline.broker.bootstrap,
        database_url=pipeline.db.dsn,
        **pipeline.broker.access.settings_kwargs(COMMUNE_USERS[0]),  # `odc send` as a commune's producer
    )
    summary = asyncio.run(send_file(source, "drinking_fountains", None, settings, profile=suggestion.profile))
    assert summary.events == 40
    pipeline.settle("drinking_fountains", before, 40)
    stored = pipeline.sql(
        "SELECT feature_id, commune FROM canonical_feature WHERE dataset = 'drinking_fountains' AND feature_id = ANY(%s)",
        ids,
    )
    refused = pipeline.sql(
        "SELECT feature_id, commune, reason, errors FROM rejection WHERE dataset = 'drinking_fountains' "
        "AND feature_id = ANY(%s)",
        ids,
    )
    # every record arrived under its real id and commune: either stored, or refused for what the layer lacks
    assert {fid for fid, _ in stored} | {r[0] for r in refused} == set(ids)
    expected_commune = {f["properties"]["id"]: f["properties"]["insee"] for f in features}
    assert all(expected_commune[fid] == commune for fid, commune in stored)
    for fid, commune, reason, errors in refused:
        assert commune == expected_commune[fid]
        assert {(e["field"], e["rule"]) for e in errors} <= {(f, "required") for f in METROPOLE_REQUIRED}, (
            reason,
            errors,
        )
