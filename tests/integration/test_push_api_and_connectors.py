"""Issue #5 on the real stack (the session's Kafka broker and PostGIS, the three services as processes):
the push API, the Kafka path held to the same per-commune rule, snapshot connectors on real files, and
the communes' status. Expected diffs are computed here from the raw files, independently of the
connector's code. Runs after the pipeline's own tests (file order) and checks deltas, so the shared
datasets may already hold features."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.event_signature import SigningKey
from services.contract.messages import Operation
from services.infrastructure.database import make_engine
from services.infrastructure.signing_keys import issue_signing_key
from tests.integration.pipeline_harness import TOPICS, Pipeline, toilet_event, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
PARKS_2021 = FIXTURES / "grandlyon-parcs-jardins-2021" / "com_donnees_communales.comparcjardin_1_0_0.geojson"
PARKS_2024 = REPO / "samples" / "grandlyon" / "parcs.geojson"
BNLC = FIXTURES / "bnlc-lieux-covoiturage"
VELOV = FIXTURES / "grandlyon-velov-snapshots"
CATALOGUE = DatasetCatalogue.load()
POINT = {"type": "Point", "coordinates": [4.8800, 45.7700]}
# Lyon's records lie in Lyon (place Bellecour): at Villeurbanne's POINT they would be the same toilet as
# Villeurbanne's and be linked to one feature (same place, two records)
LYON_POINT = {"type": "Point", "coordinates": [4.8320, 45.7578]}


# ------------------------------------------------------------------------------------------ helpers
def cli(p: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ODC_DATABASE_URL": p.db.dsn,
        "ODC_INGEST_DATABASE_URL": p.db.dsn,
        "ODC_INGEST_KAFKA_BOOTSTRAP": p.broker.bootstrap,
        **p.broker.access.service_env("ingest"),  # connectors run as the ingest service's principal
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


def token(p: Pipeline, *args: str) -> str:
    out = cli(p, "token", "create", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def villeurbanne(pipeline: Pipeline) -> str:
    """A push API token of Villeurbanne (69266), made with the CLI."""
    return token(pipeline, "--commune", "69266", "--label", "Villeurbanne SIG")


def input_size(p: Pipeline) -> int:
    """Messages ever written to the input topic (sum of end offsets): proves 'nothing was written'."""

    async def go() -> int:
        c = AIOKafkaConsumer(
            TOPICS["input"],
            bootstrap_servers=p.broker.bootstrap,
            group_id=None,
            **p.broker.admin_security().client_kwargs(),
        )
        await c.start()
        try:
            deadline = time.monotonic() + 30
            while not c.assignment() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            parts = sorted(c.assignment())
            assert parts, "no partition of the input topic was assigned"
            return sum((await c.end_offsets(parts)).values())
        finally:
            await c.stop()

    return asyncio.run(go())


def received(p: Pipeline) -> float:
    return p.metric("normalise", "odc_events_received_total")


def api(p: Pipeline) -> str:
    return p.services["ingest"].base_url


def push(p: Pipeline, tok: str | None, records: Any, dataset: str = "public_toilets", **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    headers.update(kw.pop("headers", {}))
    if "content" in kw:
        return httpx.post(f"{api(p)}/v1/datasets/{dataset}/changes", headers=headers, timeout=30, **kw)
    return httpx.post(f"{api(p)}/v1/datasets/{dataset}/changes", json={"records": records}, headers=headers, timeout=30)


def gid() -> int:
    return 800_000 + uuid.uuid4().int % 100_000


def live(p: Pipeline, dataset: str, commune: str, fid: str) -> bool:
    rows = p.sql(
        "SELECT deleted FROM canonical_feature WHERE dataset = %s AND commune = %s AND feature_id = %s",
        dataset,
        commune,
        fid,
    )
    return bool(rows) and not rows[0][0]


# ----------------------------------------------------------------------------------- the push API
def test_a_commune_pushes_records_over_http_and_sees_them_applied_and_versioned(
    pipeline: Pipeline, villeurbanne: str
) -> None:
    tok = villeurbanne
    a, b, bad = gid(), gid(), gid()
    before = received(pipeline)
    r = push(
        pipeline,
        tok,
        [
            {"type": "Feature", "id": a, "properties": {"adresse": "place Lazare Goujon"}, "geometry": POINT},
            {"gid": b, "adresse": "cours Émile Zola", "geometry": "POINT (4.8801 45.7701)"},
            # shape fine, content not: a NUL refuses the record in the stream (a value breaking only its field's
            # rule would be left out instead, docs/validation.md)
            {"gid": bad, "adresse": "nul\u0000inside", "geometry": POINT},
            {"adresse": "no id"},  # refused at once
        ],
    )
    assert r.status_code == 202, r.text
    doc = r.json()
    assert [x["index"] for x in doc["accepted"]] == [0, 1, 2] and [x["index"] for x in doc["refused"]] == [3]
    assert doc["refused"][0]["reason"] == "invalid_envelope"
    pipeline.settle("public_toilets", before, 3)
    assert live(pipeline, "public_toilets", "69266", str(a)) and live(pipeline, "public_toilets", "69266", str(b))
    assert not live(pipeline, "public_toilets", "69266", str(bad))
    (reason,) = pipeline.sql("SELECT reason FROM rejection WHERE event_id = %s", doc["accepted"][2]["event_id"])[0]
    assert reason == "invalid_attributes"

    def toilets_status() -> dict[str, Any] | None:
        r = httpx.get(f"{api(pipeline)}/v1/communes/69266/status", headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 200
        doc = next(d for d in r.json()["datasets"] if d["id"] == "public_toilets")
        last = doc["last_change_applied"]
        return {**r.json(), **doc} if last and last["feature_id"] in {str(a), str(b)} and last["published"] else None

    # the publisher records the change and cuts the version after the normaliser applied it
    toilets = wait_for("the commune's last change to be in a published version", toilets_status)
    assert toilets["accepted"] >= 2 and toilets["rejected_by_reason"].get("invalid_attributes", 0) >= 1
    assert toilets["events_received"] == toilets["accepted"] + toilets["rejected"]
    last = toilets["last_change_applied"]
    assert last["feature_id"] in {str(a), str(b)} and last["version"] is not None
    assert last["version"] <= toilets["dataset_latest_version"]
    assert any(x["event_id"] == doc["accepted"][2]["event_id"] for x in toilets["recent_rejections"])
    # the same numbers from the command line
    out = cli(pipeline, "status", "--commune", "69266", "--json")
    assert out.returncode == 0, out.stderr
    cli_toilets = next(d for d in json.loads(out.stdout)["datasets"] if d["id"] == "public_toilets")
    assert (cli_toilets["accepted"], cli_toilets["rejected"]) == (toilets["accepted"], toilets["rejected"])

    # the receipt: each record's outcome, read from the pipeline's tables (PostgresReceiptStore, the outcome
    # reader), the refusal at the door and the stream's refusal side by side
    def receipt() -> dict[str, Any] | None:
        r = httpx.get(f"{api(pipeline)}{doc['receipt_url']}", headers={"Authorization": f"Bearer {tok}"}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json() if r.json()["complete"] else None  # type: ignore[no-any-return]

    got = wait_for("the receipt complete", receipt)
    assert got["counts"] == {"conforming": 2, "incomplete": 0, "refused": 2, "pending": 0}
    assert [(x["index"], x["level"]) for x in got["records"]] == [
        (0, "conforming"), (1, "conforming"), (2, "refused"), (3, "refused")
    ]  # fmt: skip
    assert {p["rule"] for p in got["records"][2]["problems"]} == {"control_character"}


def test_a_commune_token_cannot_write_or_read_another_commune(pipeline: Pipeline, villeurbanne: str) -> None:
    tok = villeurbanne
    fid = gid()
    size, before = input_size(pipeline), received(pipeline)
    r = push(pipeline, tok, [{"gid": fid, "codinsee": "69123", "geometry": LYON_POINT}])
    assert r.status_code == 403 and r.json()["error"] == "forbidden_commune"
    assert (
        httpx.get(f"{api(pipeline)}/v1/communes/69123/status", headers={"Authorization": f"Bearer {tok}"}).status_code
        == 403
    )
    assert input_size(pipeline) == size
    # a record that follows shows the pipeline kept going and the refused one never arrived
    ok = push(pipeline, tok, [{"gid": fid, "geometry": POINT}])
    assert ok.status_code == 202
    pipeline.settle("public_toilets", before, 1)
    assert not live(pipeline, "public_toilets", "69123", str(fid)) and live(
        pipeline, "public_toilets", "69266", str(fid)
    )


def test_the_metropoles_admin_token_writes_any_commune(pipeline: Pipeline) -> None:
    tok = token(pipeline, "--admin", "--label", "Métropole")
    fid = gid()
    before = received(pipeline)
    r = push(pipeline, tok, [{"gid": fid, "codinsee": "69123", "geometry": LYON_POINT}])
    assert r.status_code == 202, r.text
    pipeline.settle("public_toilets", before, 1)
    assert live(pipeline, "public_toilets", "69123", str(fid))


@pytest.mark.parametrize(
    ("auth", "kwargs", "status", "code"),
    [
        (None, {"content": b'{"records": []}'}, 401, "unauthenticated"),
        ("odc_000000000000_" + "A" * 43, {"content": b'{"records": []}'}, 401, "unauthenticated"),
        ("valid", {"content": b'{"records": [{"gid": 1}'}, 400, "malformed_body"),
        ("valid", {"content": b"\xff\xfe not utf-8"}, 400, "malformed_body"),
        ("valid", {"content": b'["not", "a", "batch"]'}, 400, "malformed_body"),
        ("valid", {"content": b" " * (5 * 1024 * 1024 + 1)}, 413, "payload_too_large"),
    ],
    ids=["no-token", "unknown-token", "truncated-json", "not-utf8", "array", "oversized"],
)
def test_bad_requests_get_the_right_status_and_nothing_is_written(
    pipeline: Pipeline, villeurbanne: str, auth: str | None, kwargs: dict[str, Any], status: int, code: str
) -> None:
    tok = villeurbanne if auth == "valid" else auth
    size = input_size(pipeline)
    r = push(pipeline, tok, None, headers={"Content-Type": "application/json"}, **kwargs)
    assert (r.status_code, r.json()["error"]) == (status, code), r.text
    assert r.json()["message"]
    assert input_size(pipeline) == size


def test_a_revoked_token_is_refused(pipeline: Pipeline) -> None:
    tok = token(pipeline, "--commune", "69266")
    token_id = tok.split("_")[1]
    assert cli(pipeline, "token", "revoke", token_id).returncode == 0
    assert push(pipeline, tok, [{"gid": gid(), "geometry": POINT}]).status_code == 401
    listed = json.loads(cli(pipeline, "token", "list", "--commune", "69266", "--json").stdout)
    assert next(t for t in listed if t["token_id"] == token_id)["revoked_at"] is not None
    assert all("secret" not in json.dumps(t) and tok not in json.dumps(t) for t in listed)
    (stored,) = pipeline.sql("SELECT secret_sha256 FROM api_token WHERE token_id = %s", token_id)[0]
    assert tok.split("_", 2)[2] not in stored


def test_an_idempotency_key_replays_the_answer_and_publishes_once(pipeline: Pipeline, villeurbanne: str) -> None:
    tok = villeurbanne
    headers = {"Idempotency-Key": f"sig-export-{uuid.uuid4()}"}
    records = [{"gid": gid(), "geometry": POINT}]
    size = input_size(pipeline)
    first = push(pipeline, tok, None, content=json.dumps({"records": records}).encode(), headers=headers)
    again = push(pipeline, tok, None, content=json.dumps({"records": records}).encode(), headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers.get("Idempotent-Replayed") == "true"
    assert input_size(pipeline) == size + 1
    other = push(pipeline, tok, None, content=json.dumps({"records": [{"gid": 1}]}).encode(), headers=headers)
    assert other.status_code == 422 and input_size(pipeline) == size + 1


# ------------------------------------------------------------------------------------ the Kafka path
def issue_key(p: Pipeline, commune: str) -> SigningKey:
    async def go() -> SigningKey:
        engine = make_engine(p.db.dsn, pool_size=1)
        try:
            return (await issue_signing_key(engine, commune, "test producer")).as_signing_key()
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_on_kafka_a_communes_key_cannot_change_another_communes_feature(pipeline: Pipeline) -> None:
    villeurbanne = issue_key(pipeline, "69266")
    own, foreign, unsigned = gid(), gid(), gid()
    # Lyon's feature exists; Villeurbanne's producer tries to overwrite and then delete it
    before = received(pipeline)
    pipeline.produce_events(
        [toilet_event(str(foreign), seq=1, commune="69123", adresse="Lyon's own", lon=4.832, lat=45.7578)]
    )
    pipeline.settle("public_toilets", before, 1)
    overwrite = toilet_event(str(foreign), seq=2, commune="69123", adresse="hijacked")
    delete = toilet_event(str(foreign), seq=3, commune="69123", op=Operation.DELETE)
    mine = toilet_event(str(own), seq=1, commune="69266")
    bare = toilet_event(str(unsigned), seq=1, commune="69266")
    pipeline.produce_events([overwrite, delete, mine], key=villeurbanne)
    pipeline.produce([pipeline.codecs.encode_change_event(bare)])
    pipeline.settle("public_toilets", before, 5)
    ((adresse, deleted),) = pipeline.sql(
        "SELECT attributes->>'adresse', deleted FROM canonical_feature WHERE commune = '69123' AND feature_id = %s",
        str(foreign),
    )
    assert (adresse, deleted) == ("Lyon's own", False)
    assert live(pipeline, "public_toilets", "69266", str(own))
    assert not live(pipeline, "public_toilets", "69266", str(unsigned))
    reasons = dict(
        pipeline.sql(
            "SELECT event_id, reason FROM rejection WHERE event_id = ANY(%s)",
            [overwrite.event_id, delete.event_id, bare.event_id],
        )
    )
    assert reasons == {
        overwrite.event_id: "forbidden_commune",
        delete.event_id: "forbidden_commune",
        bare.event_id: "unauthenticated",
    }
    found = wait_for(
        "the rejections on the rejected topic",
        lambda: (rs := [r for r in pipeline.rejections() if r.event_id in reasons]) and len(rs) == 3 and rs,
    )
    assert {r.errors[0].rule for r in found} == {"forbidden_commune", "signature_missing"}


# -------------------------------------------------------------------------------------- connectors
def connector(p: Pipeline, name: str, dataset: str, source: Path, *extra: str) -> None:
    out = cli(
        p,
        "connector",
        "add",
        "--name",
        name,
        "--dataset",
        dataset,
        "--source",
        str(source),
        "--every",
        "manual",
        *extra,
    )
    assert out.returncode == 0, out.stderr


def run_connector(p: Pipeline, name: str, *extra: str) -> tuple[int, dict[str, Any]]:
    out = cli(p, "connector", "run", name, "--json", *extra)
    assert out.stdout.strip(), out.stderr
    return out.returncode, json.loads(out.stdout)


def business(props: dict[str, Any], dataset: str) -> dict[str, Any]:
    definition = CATALOGUE.get(dataset)
    assert definition is not None
    fields = [f for f in definition.field_names if f not in definition.volatile_fields]
    return {f: props.get(f) for f in fields}


def geojson_by_uid(path: Path) -> dict[str, dict[str, Any]]:
    return {str(f["properties"]["uid"]): f for f in json.loads(path.read_bytes())["features"]}


def test_parks_2021_then_2024_mirror_exactly_the_direct_comparison(pipeline: Pipeline, tmp_path: Path) -> None:
    old, new = geojson_by_uid(PARKS_2021), geojson_by_uid(PARKS_2024)
    want_added = set(new) - set(old)
    want_removed = set(old) - set(new)
    want_changed = {
        u
        for u in set(old) & set(new)
        if business(old[u]["properties"], "parks_gardens") != business(new[u]["properties"], "parks_gardens")
        or old[u]["geometry"] != new[u]["geometry"]
    }
    published = tmp_path / "parcs.geojson"  # the URL a commune publishes to: same place, new content
    shutil.copyfile(PARKS_2021, published)
    connector(pipeline, "metropole-parks", "parks_gardens", published, "--all-communes", "--max-delete-share", "0.2")

    before = received(pipeline)
    code, first = run_connector(pipeline, "metropole-parks")
    assert (code, first["status"], first["added"], first["events_published"]) == (0, "applied", len(old), len(old))
    pipeline.settle("parks_gardens", before, len(old))
    parks = "SELECT feature_id, deleted FROM canonical_feature WHERE dataset = 'parks_gardens'"
    live_2021_only = {u for u, deleted in pipeline.sql(parks) if u in want_removed and not deleted}
    assert live_2021_only, "the 2021-only parks were applied by the first run"

    shutil.copyfile(PARKS_2024, published)
    dry = cli(pipeline, "connector", "run", "metropole-parks", "--dry-run")
    assert dry.returncode == 0 and "delete" in dry.stdout
    code, second = run_connector(pipeline, "metropole-parks")
    assert code == 0 and second["status"] == "applied"
    assert (second["added"], second["changed"], second["removed"]) == (
        len(want_added),
        len(want_changed),
        len(want_removed),
    )
    assert (len(want_added), len(want_removed)) == (167, 21)  # as the data's SOURCE.md says
    assert second["events_published"] == len(want_added) + len(want_changed) + len(want_removed)
    pipeline.settle("parks_gardens", before, len(old) + second["events_published"])

    rows = dict(pipeline.sql(parks))
    assert all(rows.get(u) is False for u in new), "every 2024 park is live"
    assert all(rows.get(u, True) is True for u in want_removed), "every park gone in 2024 is deleted"
    version = pipeline.latest_version("parks_gardens")
    removed_in_version = {
        r[0]
        for r in pipeline.sql(
            "SELECT feature_id FROM version_diff WHERE dataset = 'parks_gardens' AND version = %s AND kind = 'removed'",
            version,
        )
    }
    assert removed_in_version == live_2021_only


def test_bnlc_2026_05_19_then_05_21_gives_exactly_one_delete(pipeline: Pipeline, tmp_path: Path) -> None:
    import csv

    def ids(path: Path) -> set[str]:
        return {row["id_lieu"] for row in csv.DictReader(path.read_text(encoding="utf-8").splitlines())}

    expected_removed = ids(BNLC / "bnlc-_2026-05-19.csv") - ids(BNLC / "bnlc-_2026-05-21.csv")
    assert expected_removed == {"63308-C-001"}
    published = tmp_path / "bnlc.csv"
    shutil.copyfile(BNLC / "bnlc-_2026-05-19.csv", published)
    connector(pipeline, "national-carpool", "carpool_places", published, "--all-communes")
    before = received(pipeline)
    _, first = run_connector(pipeline, "national-carpool")
    pipeline.settle("carpool_places", before, first["events_published"])
    assert live(pipeline, "carpool_places", "63308", "63308-C-001")
    size = input_size(pipeline)

    shutil.copyfile(BNLC / "bnlc-_2026-05-21.csv", published)
    code, second = run_connector(pipeline, "national-carpool")
    assert code == 0
    assert (second["added"], second["changed"], second["removed"], second["events_published"]) == (0, 0, 1, 1)
    assert input_size(pipeline) == size + 1
    pipeline.settle("carpool_places", before, first["events_published"] + 1)
    assert not live(pipeline, "carpool_places", "63308", "63308-C-001")


def velov_changed(a: Path, b: Path) -> set[str]:
    """Stations present in both whose business fields differ (computed from the raw files)."""
    old = {str(s["number"]): s for s in json.loads(a.read_bytes()) if s.get("code_insee")}
    new = {str(s["number"]): s for s in json.loads(b.read_bytes()) if s.get("code_insee")}
    return {
        n
        for n in set(old) & set(new)
        if business(old[n], "bike_share_stations") != business(new[n], "bike_share_stations")
    }


def test_velov_snapshots_change_only_what_changed_and_the_empty_feed_is_held(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    snaps = [
        VELOV / "velov_2026-06-23T19-23-00Z.json",
        VELOV / "velov_2026-06-23T21-09-53Z.json",
        VELOV / "velov_2026-06-23T22-37-12Z_EMPTY.json",
        VELOV / "velov_2026-06-23T23-38-18Z.json",
    ]
    # every station's live counts or timestamps move between snapshots; its business fields mostly do not
    raw = [json.loads(s.read_bytes()) for s in snaps[:2]]
    assert all(x != y for x, y in zip(raw[0], raw[1], strict=True))
    published = tmp_path / "velov.json"
    shutil.copyfile(snaps[0], published)
    connector(pipeline, "velov", "bike_share_stations", published, "--all-communes")
    before = received(pipeline)
    _, first = run_connector(pipeline, "velov")
    assert first["status"] == "applied" and first["unidentified"] == 2  # two stations without an INSEE code
    sent = first["events_published"]
    pipeline.settle("bike_share_stations", before, sent)

    shutil.copyfile(snaps[1], published)
    want = velov_changed(snaps[0], snaps[1])
    _, second = run_connector(pipeline, "velov")
    assert (second["added"], second["changed"], second["removed"]) == (0, len(want), 0)
    assert second["events_published"] == len(want) and second["unchanged"] == first["features"] - len(want)
    sent += second["events_published"]
    pipeline.settle("bike_share_stations", before, sent)

    shutil.copyfile(snaps[2], published)  # the feed outage: []
    size = input_size(pipeline)
    code, held = run_connector(pipeline, "velov")
    assert (code, held["status"], held["hold_reason"], held["removed"]) == (
        3,
        "held",
        "empty_snapshot",
        first["features"],
    )
    assert input_size(pipeline) == size
    listed = {c["name"]: c for c in json.loads(cli(pipeline, "connector", "list", "--json").stdout)}
    assert listed["velov"]["last_status"] == "held" and listed["velov"]["features"] == first["features"]

    shutil.copyfile(snaps[3], published)  # the feed is back: compared with the last applied snapshot
    want = velov_changed(snaps[1], snaps[3])
    _, fourth = run_connector(pipeline, "velov")
    assert (fourth["status"], fourth["changed"], fourth["removed"], fourth["events_published"]) == (
        "applied",
        len(want),
        0,
        len(want),
    )
    sent += fourth["events_published"]
    pipeline.settle("bike_share_stations", before, sent)
    for n in want:
        (banking,) = pipeline.sql(
            "SELECT attributes->>'banking' FROM canonical_feature WHERE dataset = 'bike_share_stations' AND feature_id = %s",
            n,
        )[0]
        station = next(s for s in json.loads(snaps[3].read_bytes()) if str(s["number"]) == n)
        assert banking == str(station["banking"]).lower()


def test_the_ingest_service_runs_connectors_that_are_due(pipeline: Pipeline, tmp_path: Path) -> None:
    published = tmp_path / "toilets.geojson"
    fid = gid()
    published.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "properties": {"gid": fid, "codinsee": "69266"}, "geometry": POINT}],
            }
        )
    )
    out = cli(
        pipeline,
        "connector",
        "add",
        "--name",
        "scheduled",
        "--commune",
        "69266",
        "--dataset",
        "public_toilets",
        "--source",
        str(published),
        "--every",
        "1h",
    )
    assert out.returncode == 0, out.stderr
    wait_for("the scheduler to apply the connector", lambda: live(pipeline, "public_toilets", "69266", str(fid)), 90)
    listed = {c["name"]: c for c in json.loads(cli(pipeline, "connector", "list", "--json").stdout)}
    assert listed["scheduled"]["last_status"] == "applied"


def test_served_openapi_document_is_the_committed_one(pipeline: Pipeline) -> None:
    committed = json.loads((REPO / "docs" / "openapi" / "ingest.json").read_text(encoding="utf-8"))
    assert httpx.get(f"{api(pipeline)}/openapi.json", timeout=10).json() == committed
    assert httpx.get(f"{api(pipeline)}/readyz", timeout=10).json()["connector_scheduler"] is True


def test_a_communes_producer_sends_a_file_signed_with_its_key_file(pipeline: Pipeline, tmp_path: Path) -> None:
    key_file = tmp_path / "villeurbanne.key"
    out = cli(pipeline, "key", "create", "--commune", "69266", "--out", str(key_file))
    assert out.returncode == 0, out.stderr
    assert json.loads(key_file.read_text())["commune"] == "69266" and key_file.stat().st_mode & 0o077 == 0
    fid = gid()
    data = tmp_path / "toilettes.geojson"
    data.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "properties": {"gid": fid, "codinsee": "69266"}, "geometry": POINT}],
            }
        )
    )
    refused = cli(
        pipeline, "send", str(data), "--dataset", "public_toilets", "--commune", "69123", "--key-file", str(key_file)
    )
    assert refused.returncode == 2 and "signs for commune 69266" in refused.stderr
    before = received(pipeline)
    sent = cli(pipeline, "send", str(data), "--dataset", "public_toilets", "--key-file", str(key_file))
    assert sent.returncode == 0, sent.stderr
    pipeline.settle("public_toilets", before, 1)
    assert live(pipeline, "public_toilets", "69266", str(fid))
