"""Issue 14's "Done when" on the real stack (the session's Kafka broker and PostGIS, the three services as
processes): a commune's file in its own layout ("lat, lon" in one column, Oui/Non, its own column names and
enum labels, one national field it does not have) gets in with ``odc profile suggest`` then ``odc send
--profile`` and the sender is told what is missing for national conformance; the same layout goes through
the push API with ``?profile=`` and through a connector running with the saved profile.

The file is derived from tests/fixtures/source-profiles/fontaines_commune.csv (SOURCE.md there) with its
"Conditions d'accès" column removed, so every record lacks ``conditions_acces`` (required by
datagouv/schema-fontaine-eau): the records are taken in as *incomplete*, not refused."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from deploy.local.kafka_access import COMMUNE_USERS
from tests.integration.pipeline_harness import Pipeline, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "tests" / "fixtures" / "source-profiles" / "fontaines_commune.csv"
DATASET = "drinking_fountains"
VILLEURBANNE = "69266"
# the commune's own header: its names, one "lat, lon" column, Oui/Non, no "Conditions d'accès"
HEADER = [
    "Identifiant",
    "Type de fontaine",
    "PMR",
    "Remplissage gourde",
    "Code INSEE",
    "Commune",
    "Coordonnées",
    "Source",
]


def odc(p: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ODC_DATABASE_URL": p.db.dsn,
        "ODC_INGEST_DATABASE_URL": p.db.dsn,
        "ODC_INGEST_KAFKA_BOOTSTRAP": p.broker.bootstrap,
        **p.broker.access.env("ODC_INGEST_", COMMUNE_USERS[0]),  # `odc send` as a commune's producer
        "COLUMNS": "200",
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


def without_access_column(tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    """The fixture with its "Conditions d'accès" column removed, each id made unique to this run."""
    rows = list(csv.DictReader(io.StringIO(SOURCE.read_text(encoding="utf-8")), delimiter=";"))
    tag = uuid.uuid4().hex[:5]
    for r in rows:
        r["Identifiant"] = f"{r['Identifiant']}-{tag}"
    out = tmp_path / f"fontaines-{tag}.csv"
    with out.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, HEADER, delimiter=";", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return out, rows


def villeurbanne_rows(tag: str) -> list[dict[str, str]]:
    """Three fountains of Villeurbanne in the same layout (distinct places ~200 m apart)."""
    return [
        {
            "Identifiant": f"VB-{tag}-{i}",
            "Type de fontaine": label,
            "PMR": pmr,
            "Remplissage gourde": fill,
            "Code INSEE": VILLEURBANNE,
            "Commune": "Villeurbanne",
            "Coordonnées": f"{45.7700 + 0.002 * i:.4f}, {4.8800 + 0.002 * i:.4f}",
            "Source": "services techniques",
        }
        for i, (label, pmr, fill) in enumerate(
            [("Wallace", "Oui", "Non"), ("Borne-fontaine", "Non", "oui"), ("Wallace", "Non", "Non")]
        )
    ]


def stored(p: Pipeline, ids: list[str]) -> dict[str, tuple[str, dict]]:  # type: ignore[type-arg]
    rows = p.sql(
        "SELECT feature_id, commune, attributes FROM canonical_feature "
        "WHERE dataset = %s AND feature_id = ANY(%s) AND NOT deleted",
        DATASET,
        ids,
    )
    return {fid: (commune, attrs) for fid, commune, attrs in rows}


def suggest_and_save(p: Pipeline, sample: Path, tmp_path: Path, *save_args: str) -> dict:  # type: ignore[type-arg]
    out = tmp_path / f"{uuid.uuid4().hex[:6]}.profile.json"
    suggested = odc(p, "profile", "suggest", str(sample), "--dataset", DATASET, "--out", str(out), "--json")
    assert suggested.returncode == 0, suggested.stderr
    saved = odc(p, "profile", "save", str(out), *save_args)
    assert saved.returncode == 0, (saved.stdout, saved.stderr)
    return json.loads(suggested.stdout)  # type: ignore[no-any-return]


def test_a_commune_file_in_its_own_layout_gets_in_and_the_sender_sees_what_is_missing(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    source, rows = without_access_column(tmp_path)
    ids = [r["Identifiant"] for r in rows]
    report = suggest_and_save(pipeline, source, tmp_path, "--all-communes", "--source", "mixed-export")
    # the suggestion read the commune's layout: the "lat, lon" column, Oui/Non, its labels, its INSEE column
    profile = report["profile"]
    assert profile["geometry"] == {
        "kind": "point_text",
        "columns": ["Coordonnées"],
        "crs": "EPSG:4326",
        "order": "latlon",
    }
    by_column = {f["column"]: f for f in profile["fields"]}
    assert by_column["PMR"]["field"] == "accessible_pmr" and by_column["PMR"]["values"] == {"Oui": True, "Non": False}
    assert by_column["Type de fontaine"]["values"]["Wallace"] == "fontaine type Wallace"
    assert profile["commune_column"] == "Code INSEE"
    # ...and says, before anything is sent, what the national schema requires that the file does not have
    assert [f["field"] for f in report["missing_fields"] if f["required"]] == ["conditions_acces"]
    assert report["unmapped_columns"] == ["Commune", "Source"]

    done = odc(
        pipeline, "send", str(source), "--dataset", DATASET, "--profile", "mixed-export", "--wait-seconds", "120"
    )
    # every record got in, as incomplete, and the sender is told what they lack
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"0 conforming, {len(ids)} incomplete, 0 refused" in done.stdout, done.stdout
    assert f"lack fields the national schema requires: conditions_acces ({len(ids)})" in done.stdout, done.stdout
    features = stored(pipeline, ids)
    assert set(features) == set(ids)
    first = rows[0]
    commune, attrs = features[first["Identifiant"]]
    assert commune == first["Code INSEE"]  # each record under its own commune, from the file's INSEE column
    assert attrs["odc:missing"] == ["conditions_acces"]
    assert attrs["accessible_pmr"] is (first["PMR"] == "Oui")
    lat, lon = (float(v) for v in first["Coordonnées"].split(","))
    assert (attrs["longitude"], attrs["latitude"]) == pytest.approx((lon, lat))
    # the columns no field takes ride along with the record (odc:extra), not dropped
    assert json.loads(attrs["odc:extra"]) == {"Commune": first["Commune"], "Source": first["Source"]}
    # the clerk's report (per commune) lists them with what they lack
    shown = odc(pipeline, "report", "--commune", commune, "--dataset", DATASET, "--json")
    assert shown.returncode == 0, shown.stderr
    lacking = {r["feature_id"]: r["missing"] for r in json.loads(shown.stdout)["incomplete"] if r["feature_id"] in ids}
    mine = [r["Identifiant"] for r in rows if r["Code INSEE"] == commune]
    assert lacking == {fid: ["conditions_acces"] for fid in mine}


def test_the_push_api_takes_records_in_the_communes_layout_with_its_saved_profile(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:5]
    records = villeurbanne_rows(tag)
    sample = tmp_path / "villeurbanne.csv"
    with sample.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, HEADER, delimiter=";")
        w.writeheader()
        w.writerows(records)
    suggest_and_save(pipeline, sample, tmp_path, "--commune", VILLEURBANNE, "--source", "sig-push")
    made = odc(pipeline, "token", "create", "--commune", VILLEURBANNE, "--label", f"Villeurbanne SIG {tag}")
    assert made.returncode == 0, made.stderr
    url = f"{pipeline.services['ingest'].base_url}/v1/datasets/{DATASET}/changes"
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}

    unknown = httpx.post(url, params={"profile": "no-such"}, json={"records": records}, headers=headers, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_profile", unknown.text
    # without the profile the commune's column names mean nothing to the dataset: nothing is taken as is
    raw = httpx.post(url, json={"records": records[:1]}, headers=headers, timeout=30)
    assert raw.status_code in (202, 422) and not raw.json().get("accepted"), raw.text

    answer = httpx.post(url, params={"profile": "sig-push"}, json={"records": records}, headers=headers, timeout=30)
    assert answer.status_code == 202, answer.text
    assert len(answer.json()["accepted"]) == len(records) and answer.json()["refused"] == []
    ids = [r["Identifiant"] for r in records]
    features = wait_for(
        "the pushed records to be stored", lambda: (s := stored(pipeline, ids)) and len(s) == 3 and s, 90
    )
    for r in records:
        commune, attrs = features[r["Identifiant"]]
        assert commune == VILLEURBANNE
        assert attrs["accessible_pmr"] is (r["PMR"] == "Oui")
        assert (
            attrs["type_fontaine"]
            == {"Wallace": "fontaine type Wallace", "Borne-fontaine": "borne fontaine"}[r["Type de fontaine"]]
        )
        assert attrs["odc:missing"] == ["conditions_acces"]
        lat, lon = (float(v) for v in r["Coordonnées"].split(","))
        assert (attrs["longitude"], attrs["latitude"]) == pytest.approx((lon, lat))


def test_a_connector_runs_with_the_communes_saved_profile(pipeline: Pipeline, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:5]
    records = villeurbanne_rows(tag)
    published = tmp_path / "fontaines-villeurbanne.csv"  # the file the commune publishes, in its own layout
    with published.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, HEADER, delimiter=";")
        w.writeheader()
        w.writerows(records)
    suggest_and_save(pipeline, published, tmp_path, "--commune", VILLEURBANNE, "--source", f"sig-file-{tag}")
    added = odc(
        pipeline,
        "connector",
        "add",
        "--name",
        f"fountains-{tag}",
        "--commune",
        VILLEURBANNE,
        "--dataset",
        DATASET,
        "--source",
        str(published),
        "--every",
        "1h",
        "--profile",
        f"sig-file-{tag}",
    )
    assert added.returncode == 0, added.stderr
    ids = [r["Identifiant"] for r in records]
    features = wait_for(
        "the scheduler to run the connector through its profile",
        lambda: (s := stored(pipeline, ids)) and len(s) == 3 and s,
        120,
    )
    for r in records:
        commune, attrs = features[r["Identifiant"]]
        assert commune == VILLEURBANNE and attrs["accessible_pmr"] is (r["PMR"] == "Oui")
        assert attrs["odc:missing"] == ["conditions_acces"]
    listed = {c["name"]: c for c in json.loads(odc(pipeline, "connector", "list", "--json").stdout)}
    assert listed[f"fountains-{tag}"]["last_status"] == "applied"
    assert listed[f"fountains-{tag}"]["profile"] == f"sig-file-{tag}"
