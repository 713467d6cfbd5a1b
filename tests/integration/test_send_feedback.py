"""`odc send` tells the sender what became of the file, on the real stack (the CLI as a user runs it):
counts per conformance level, the rows and columns of the problems, a non-zero exit when nothing got in; a
record naming another commune than --commune is refused, not relabelled; a refused record that is later
accepted leaves `odc report`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from deploy.local.kafka_access import COMMUNE_USERS
from tests.integration.pipeline_harness import Pipeline

pytestmark = pytest.mark.integration
LYON = "69123"
HEADER = "id,type_fontaine,latitude,longitude,code_commune_insee,conditions_acces,accessible_pmr,remplissage_contenant_possible"


def odc(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ODC_INGEST_KAFKA_BOOTSTRAP": pipeline.broker.bootstrap,
        **pipeline.broker.access.env("ODC_INGEST_", COMMUNE_USERS[0]),  # `odc send` as a commune's producer
        "ODC_INGEST_DATABASE_URL": pipeline.db.dsn,
        "ODC_DATABASE_URL": pipeline.db.dsn,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write(tmp_path: Path, rows: list[str]) -> Path:
    f = tmp_path / f"fontaines-{uuid.uuid4().hex[:6]}.csv"
    f.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return f


def row(fid: str, lon: float, lat: float, commune: str = LYON) -> str:
    return f"{fid},robinet,{lat},{lon},{commune},aucune,true,false"


def report(pipeline: Pipeline) -> dict:  # type: ignore[type-arg]
    done = odc(pipeline, "report", "--commune", LYON, "--dataset", "drinking_fountains", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_file_where_every_record_is_refused_exits_non_zero_with_counts_and_rows(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    f = write(tmp_path, [row(f"R{tag}-{i}", 0, 0) for i in range(3)])  # placeholder positions: refused
    done = odc(pipeline, "send", str(f), "--dataset", "drinking_fountains", "--commune", LYON, "--wait-seconds", "90")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "0 conforming, 0 incomplete, 3 refused" in done.stdout
    assert "placeholder coordinates" in done.stdout and "(rows 2, 3, 4)" in done.stdout
    assert f"odc report --commune {LYON} --dataset drinking_fountains" in done.stdout
    # the report names each record's row and the file's columns
    listed = {r["feature_id"]: r for r in report(pipeline)["records"]}
    assert listed[f"R{tag}-0"]["source_row"] == 2
    assert {e.get("column") for e in listed[f"R{tag}-0"]["errors"]} == {"longitude, latitude"}


def test_a_record_naming_another_commune_is_refused_and_the_others_get_in(pipeline: Pipeline, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    f = write(
        tmp_path,
        [row(f"C{tag}-1", 4.8212, 45.7491), row(f"C{tag}-2", 4.8232, 45.7511, commune="69266")],
    )
    done = odc(pipeline, "send", str(f), "--dataset", "drinking_fountains", "--commune", LYON, "--wait-seconds", "90")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "1 conforming, 0 incomplete, 1 refused" in done.stdout
    assert "was sent for commune 69123" in done.stdout and "(rows 3)" in done.stdout
    stored = pipeline.sql(
        "SELECT commune, feature_id FROM canonical_feature WHERE dataset = 'drinking_fountains' AND feature_id LIKE %s",
        f"C{tag}-%",
    )
    assert stored == [(LYON, f"C{tag}-1")]  # the other one was not relabelled 69123


def test_a_refused_record_later_accepted_leaves_the_report(pipeline: Pipeline, tmp_path: Path) -> None:
    fid = f"L{uuid.uuid4().hex[:6]}"
    bad = odc(
        pipeline, "send", str(write(tmp_path, [row(fid, 0, 0)])), "--dataset", "drinking_fountains",
        "--commune", LYON, "--wait-seconds", "90",
    )  # fmt: skip
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert fid in {r["feature_id"] for r in report(pipeline)["records"]}
    good = odc(
        pipeline, "send", str(write(tmp_path, [row(fid, 4.8252, 45.7531)])), "--dataset", "drinking_fountains",
        "--commune", LYON, "--wait-seconds", "90",
    )  # fmt: skip
    assert good.returncode == 0 and "1 conforming, 0 incomplete, 0 refused" in good.stdout, good.stdout
    assert fid not in {r["feature_id"] for r in report(pipeline)["records"]}
    ((resolved,),) = pipeline.sql("SELECT resolved_at IS NOT NULL FROM rejection WHERE feature_id = %s", fid)
    assert resolved
    status = odc(pipeline, "status", "--commune", LYON, "--json")
    doc = json.loads(status.stdout)
    fountains = next(d for d in doc["datasets"] if d["id"] == "drinking_fountains")
    assert fountains["conformance"]["conforming"] >= 1


def test_an_incomplete_record_gets_in_and_the_report_says_what_it_lacks(pipeline: Pipeline, tmp_path: Path) -> None:
    fid = f"I{uuid.uuid4().hex[:6]}"
    f = write(tmp_path, [f"{fid},,45.7551,4.8272,{LYON},aucune,true,false"])  # no type_fontaine
    done = odc(pipeline, "send", str(f), "--dataset", "drinking_fountains", "--commune", LYON, "--wait-seconds", "90")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "0 conforming, 1 incomplete, 0 refused" in done.stdout
    assert "lack fields the national schema requires: type_fontaine (1)" in done.stdout
    doc = report(pipeline)
    mine = [r for r in doc["incomplete"] if r["feature_id"] == fid]
    assert mine == [{"dataset": "drinking_fountains", "feature_id": fid, "missing": ["type_fontaine"], "dropped": []}]
    assert doc["incomplete_lacking"]["type_fontaine"] >= 1
