"""Same place, two records, on the real Kafka broker and PostGIS with the three services running: each
commune's record stays its own published feature and the newer one carries a link (`odc:same_place_as`);
the attack of issue #13 (a commune's record 6.8 m from a Lyon toilet, sent with its own push token) leaves
the Lyon feature unchanged byte for byte in every output; a market held on two days stays unlinked; a
group left by the previous model is dissolved back into one feature per record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from deploy.local.kafka_access import COMMUNE_USERS
from services.contract.messages import ChangeEvent, Operation
from tests.integration.pipeline_harness import Pipeline, toilet_event, wait_for

pytestmark = pytest.mark.integration
LYON, VILLEURBANNE, IRIGNY = "69123", "69266", "69100"
BORDER = (4.8717, 45.7675)  # on the Lyon / Villeurbanne border
EIGHT_M_NORTH = (BORDER[0], BORDER[1] + 8 / 111_195)


def new_gid() -> str:
    return str(uuid.uuid4().int % 10**9 + 10**9)


def later(ev: ChangeEvent, minutes: int) -> ChangeEvent:
    return ChangeEvent(
        ev.event_id, ev.dataset, ev.commune, ev.feature_id, ev.operation, ev.occurred_at + timedelta(minutes=minutes),
        ev.sequence, ev.source, ev.geometry, ev.attributes,
    )  # fmt: skip


def send(p: Pipeline, dataset: str, events: list[ChangeEvent]) -> None:
    before = p.metric("normalise", "odc_events_received_total")
    p.produce_events(events)
    p.settle(dataset, before, len(events))


def canonical(p: Pipeline, commune: str, fid: str) -> tuple[bool, dict[str, object]] | None:
    rows = p.sql(
        "SELECT deleted, attributes FROM canonical_feature WHERE dataset = 'public_toilets' AND commune = %s "
        "AND feature_id = %s",
        commune,
        fid,
    )
    return (rows[0][0], rows[0][1]) if rows else None


def published(p: Pipeline, dataset: str, commune: str, fid: str) -> dict[str, object] | None:
    rows = p.sql(
        "SELECT attributes FROM published_feature WHERE dataset = %s AND commune = %s AND feature_id = %s",
        dataset,
        commune,
        fid,
    )
    if not rows:
        return None
    value = rows[0][0]
    return json.loads(value) if isinstance(value, str) else value


def test_the_same_toilet_from_two_communes_8_m_apart_stays_two_features_and_the_newer_carries_a_link(
    pipeline: Pipeline,
) -> None:
    lyon_id, vil_id = new_gid(), new_gid()
    version = pipeline.latest_version("public_toilets")
    send(pipeline, "public_toilets", [toilet_event(lyon_id, seq=1, commune=LYON, lon=BORDER[0], lat=BORDER[1],
                                                   adresse="Lyon's record")])  # fmt: skip
    wait_for("Lyon's toilet published", lambda: published(pipeline, "public_toilets", LYON, lyon_id))
    vil = toilet_event(vil_id, seq=1, commune=VILLEURBANNE, lon=EIGHT_M_NORTH[0], lat=EIGHT_M_NORTH[1],
                       adresse="Villeurbanne's record")  # fmt: skip
    send(pipeline, "public_toilets", [later(vil, 1)])

    lyon_state, vil_state = canonical(pipeline, LYON, lyon_id), canonical(pipeline, VILLEURBANNE, vil_id)
    assert lyon_state is not None and lyon_state[1]["adresse"] == "Lyon's record"
    assert "odc:same_place_as" not in lyon_state[1]
    assert vil_state is not None and vil_state[1]["adresse"] == "Villeurbanne's record"
    (link,) = vil_state[1]["odc:same_place_as"]  # type: ignore[misc]
    assert (link["commune"], link["feature_id"]) == (LYON, lyon_id) and 7 <= link["distance_m"] <= 9  # type: ignore[index]
    doc = wait_for(
        "Villeurbanne's feature published", lambda: published(pipeline, "public_toilets", VILLEURBANNE, vil_id)
    )
    assert doc["odc:same_place_as"] == vil_state[1]["odc:same_place_as"]
    # the versions say: two features added, nothing of Lyon's updated
    diffs = pipeline.sql(
        "SELECT commune, kind FROM version_diff WHERE dataset = 'public_toilets' AND version > %s "
        "AND feature_id IN (%s, %s) ORDER BY version, commune",
        version,
        lyon_id,
        vil_id,
    )
    assert diffs == [(LYON, "added"), (VILLEURBANNE, "added")]
    assert pipeline.sql("SELECT count(*) FROM feature_provenance WHERE feature_id IN (%s, %s)", lyon_id, vil_id) == [
        (0,)
    ]


# ------------------------------------------------------------------------------------ the attack
def cli(p: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ODC_DATABASE_URL": p.db.dsn, "ODC_INGEST_DATABASE_URL": p.db.dsn,
           "ODC_INGEST_KAFKA_BOOTSTRAP": p.broker.bootstrap,
           **p.broker.access.env("ODC_INGEST_", COMMUNE_USERS[0])}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "services.cli.main", *args], check=False, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def push_token(p: Pipeline, commune: str) -> str:
    out = cli(p, "token", "create", "--commune", commune, "--label", f"{commune} attack test")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def every_output(p: Pipeline, commune: str, fid: str) -> dict[str, object]:
    """The feature as each output shows it: the store's row, the published row, the OGC API item, the latest
    GeoJSON and CSV exports (its feature / row) and its published history."""
    publish = p.services["publish"].base_url
    row = p.sql(
        "SELECT attributes::text, ST_AsEWKB(geom), content_hash, sequence, occurred_at, deleted FROM canonical_feature "
        "WHERE dataset = 'public_toilets' AND commune = %s AND feature_id = %s",
        commune,
        fid,
    )
    pub = p.sql(
        "SELECT * FROM published_feature WHERE dataset = 'public_toilets' AND commune = %s AND feature_id = %s",
        commune,
        fid,
    )
    item = httpx.get(
        f"{publish}/ogc/collections/public_toilets/items/{commune}:{fid}", timeout=30, follow_redirects=True
    )
    geojson = httpx.get(f"{publish}/datasets/public_toilets/features.geojson", follow_redirects=True, timeout=60)
    csv = httpx.get(f"{publish}/datasets/public_toilets/features.csv", follow_redirects=True, timeout=60)
    history = httpx.get(f"{publish}/datasets/public_toilets/features/{commune}:{fid}/history", timeout=30)
    assert item.status_code == geojson.status_code == csv.status_code == history.status_code == 200
    (feature,) = [f for f in geojson.json()["features"] if f["id"] == f"{commune}:{fid}"]
    csv_rows = [line for line in csv.text.splitlines() if fid in line]
    return {
        "store": row,
        "published": [tuple(r) for r in pub],
        "ogc_item": item.content,
        "geojson_feature": json.dumps(feature, sort_keys=True),
        "csv_rows": csv_rows,
        "history": history.content,
    }


def test_a_commune_cannot_rewrite_another_communes_feature_by_sending_a_record_next_to_it(pipeline: Pipeline) -> None:
    """Issue #13, as the reviewer did it: 69266, with only its own push token, sends its own new feature 6.8 m
    from a Lyon toilet with the address "DEFACED" (then updates and deletes it). The Lyon feature stays the
    same, byte for byte, in the store and in every output; no version lists it as changed."""
    where = (4.8460, 45.7600)  # Lyon 3e
    lyon_id, attacker_id = new_gid(), new_gid()
    send(pipeline, "public_toilets", [toilet_event(lyon_id, seq=1, commune=LYON, lon=where[0], lat=where[1],
                                                   adresse="1 rue de la Part-Dieu")])  # fmt: skip
    wait_for("Lyon's toilet published", lambda: published(pipeline, "public_toilets", LYON, lyon_id))
    pipeline.settle("public_toilets", pipeline.metric("normalise", "odc_events_received_total"), 0)
    version_before = pipeline.latest_version("public_toilets")
    before = every_output(pipeline, LYON, lyon_id)
    assert b"1 rue de la Part-Dieu" in before["ogc_item"] and before["csv_rows"]  # type: ignore[operator]

    tok = push_token(pipeline, VILLEURBANNE)
    ingest = pipeline.services["ingest"].base_url
    point = {"type": "Point", "coordinates": [where[0], where[1] + 6.8 / 111_195]}

    def push(records: list[dict[str, object]]) -> None:
        received = pipeline.metric("normalise", "odc_events_received_total")
        r = httpx.post(f"{ingest}/v1/datasets/public_toilets/changes", json={"records": records},
                       headers={"Authorization": f"Bearer {tok}"}, timeout=30)  # fmt: skip
        assert r.status_code == 202 and len(r.json()["accepted"]) == len(records), r.text
        pipeline.settle("public_toilets", received, len(records))

    push([{"gid": int(attacker_id), "adresse": "DEFACED", "geometry": point}])
    attacker = wait_for(
        "the attacker's own feature published",
        lambda: published(pipeline, "public_toilets", VILLEURBANNE, attacker_id),
    )
    assert attacker["adresse"] == "DEFACED" and attacker["codinsee"] == VILLEURBANNE
    assert attacker["odc:same_place_as"][0]["feature_id"] == lyon_id  # type: ignore[index]
    push([{"gid": int(attacker_id), "adresse": "DEFACED again", "geometry": point}])
    push([{"gid": int(attacker_id), "operation": "delete"}])
    wait_for(
        "the attacker's delete published",
        lambda: published(pipeline, "public_toilets", VILLEURBANNE, attacker_id) is None or None,
    )

    after = every_output(pipeline, LYON, lyon_id)
    for output in before:
        assert after[output] == before[output], f"the Lyon feature changed in {output}"
    assert pipeline.latest_version("public_toilets") > version_before  # the attacker's changes were published
    assert pipeline.sql(
        "SELECT count(*) FROM version_diff WHERE dataset = 'public_toilets' AND version > %s AND commune = %s "
        "AND feature_id = %s",
        version_before,
        LYON,
        lyon_id,
    ) == [(0,)]


def test_a_market_on_two_days_at_one_spot_stays_unlinked(pipeline: Pipeline) -> None:
    place = (4.8227235, 45.6724498)  # place de l'Europe, Irigny: the real layer has Saturday and Wednesday there
    ids = [uuid.uuid4().int % 10**8 for _ in range(2)]
    events = [
        ChangeEvent(
            str(uuid.uuid4()),
            "markets",
            commune,
            str(ident),
            Operation.UPSERT,
            datetime.now(UTC),
            1,
            "test",
            None,
            {
                "identifiant": ident,
                "insee": commune,
                "type": "mixte",
                "jourtenue": day,
                "lon": place[0],
                "lat": place[1],
            },
        )
        for ident, commune, day in ((ids[0], IRIGNY, "Samedi"), (ids[1], LYON, "Mercredi"))
    ]
    send(pipeline, "markets", events[:1])
    send(pipeline, "markets", events[1:])
    rows = pipeline.sql(
        "SELECT commune, deleted FROM canonical_feature WHERE dataset = 'markets' AND feature_id = ANY(%s) "
        "ORDER BY commune",
        [str(i) for i in ids],
    )
    assert rows == [(IRIGNY, False), (LYON, False)]
    attrs = pipeline.sql(
        "SELECT attributes FROM canonical_feature WHERE dataset = 'markets' AND feature_id = ANY(%s)",
        [str(i) for i in ids],
    )
    assert all("odc:same_place_as" not in a for (a,) in attrs)


def make_previous_model_group(pipeline: Pipeline, here: tuple[float, float]) -> tuple[str, str]:
    """What the model before issue #13 wrote for two communes' records of one toilet: Villeurbanne's newer
    record merged into Lyon's row (its content, a new hash, the group counter), two ``feature_provenance`` rows."""
    lyon_id, vil_id = new_gid(), new_gid()
    send(pipeline, "public_toilets", [toilet_event(lyon_id, seq=10, commune=LYON, lon=here[0], lat=here[1],
                                                   adresse="Lyon's record")])  # fmt: skip
    wait_for("Lyon's toilet published", lambda: published(pipeline, "public_toilets", LYON, lyon_id))
    # what the previous model wrote: Villeurbanne's newer record merged into Lyon's row, two provenance rows
    pipeline.execute(
        "INSERT INTO feature_provenance (dataset, commune, feature_id, canonical_commune, canonical_feature_id, "
        "source, sequence, occurred_at, removed, geom, attributes, content_hash, corrections, distance_m, linked_at, "
        "updated_at) SELECT dataset, commune, feature_id, commune, feature_id, 'test', sequence, occurred_at, false, "
        "geom, attributes, content_hash, corrections, 0, now(), now() FROM canonical_feature "
        "WHERE dataset = 'public_toilets' AND commune = %s AND feature_id = %s",
        LYON,
        lyon_id,
    )
    merged = {"gid": int(vil_id), "codinsee": VILLEURBANNE, "adresse": "Villeurbanne's record"}
    pipeline.execute(
        "INSERT INTO feature_provenance (dataset, commune, feature_id, canonical_commune, canonical_feature_id, "
        "source, sequence, occurred_at, removed, geom, attributes, content_hash, corrections, distance_m, linked_at, "
        "updated_at) SELECT dataset, %s, %s, commune, feature_id, 'test', 1, occurred_at, false, "
        "ST_Translate(geom, 0, 0.00004), CAST(%s AS jsonb), 'legacy', '[]', 4.4, now(), now() FROM canonical_feature "
        "WHERE dataset = 'public_toilets' AND commune = %s AND feature_id = %s",
        VILLEURBANNE,
        vil_id,
        json.dumps(merged),
        LYON,
        lyon_id,
    )
    pipeline.execute(
        "UPDATE canonical_feature SET attributes = CAST(%s AS jsonb), content_hash = 'merged', sequence = sequence + 1 "
        "WHERE dataset = 'public_toilets' AND commune = %s AND feature_id = %s",
        json.dumps(merged),
        LYON,
        lyon_id,
    )
    return lyon_id, vil_id


def test_a_group_left_by_the_previous_model_is_dissolved_on_its_next_event(pipeline: Pipeline) -> None:
    """The next event of one record of a previous-model group gives each record its own feature back, published."""
    here = (BORDER[0] + 0.004, BORDER[1])  # 310 m east of the first test's toilet
    lyon_id, vil_id = make_previous_model_group(pipeline, here)
    # Villeurbanne updates its record: both get their own feature back
    send(pipeline, "public_toilets", [toilet_event(vil_id, seq=2, commune=VILLEURBANNE, lon=here[0],
                                                   lat=here[1] + 0.00004, adresse="Villeurbanne v2")])  # fmt: skip
    lyon_state, vil_state = canonical(pipeline, LYON, lyon_id), canonical(pipeline, VILLEURBANNE, vil_id)
    assert lyon_state is not None and lyon_state[1]["adresse"] == "Lyon's record" and lyon_state[1]["codinsee"] == LYON
    assert vil_state is not None and vil_state[1]["adresse"] == "Villeurbanne v2"
    assert vil_state[1]["odc:same_place_as"][0]["feature_id"] == lyon_id  # type: ignore[index]
    assert pipeline.sql("SELECT count(*) FROM feature_provenance WHERE canonical_feature_id = %s", lyon_id) == [(0,)]
    wait_for(
        "both features published as their own",
        lambda: (
            (
                (published(pipeline, "public_toilets", LYON, lyon_id) or {}).get("adresse") == "Lyon's record"
                and (published(pipeline, "public_toilets", VILLEURBANNE, vil_id) or {}).get("adresse")
                == "Villeurbanne v2"
            )
            or None
        ),
    )


def test_groups_that_no_event_reaches_are_dissolved_when_the_normaliser_starts(pipeline: Pipeline) -> None:
    here = (BORDER[0] + 0.008, BORDER[1])  # 620 m east of the first test's toilet
    lyon_id, vil_id = make_previous_model_group(pipeline, here)
    assert canonical(pipeline, LYON, lyon_id)[1]["adresse"] == "Villeurbanne's record"  # type: ignore[index]
    normaliser = pipeline.services["normalise"]
    normaliser.stop()
    normaliser.start()
    normaliser.wait_ready(timeout=120)
    assert pipeline.sql("SELECT count(*) FROM feature_provenance") == [(0,)]
    lyon_state, vil_state = canonical(pipeline, LYON, lyon_id), canonical(pipeline, VILLEURBANNE, vil_id)
    assert lyon_state is not None and lyon_state[1]["adresse"] == "Lyon's record" and lyon_state[1]["codinsee"] == LYON
    assert vil_state is not None and vil_state[1]["adresse"] == "Villeurbanne's record"
    assert vil_state[1]["odc:same_place_as"][0]["feature_id"] == lyon_id  # type: ignore[index]
    wait_for(
        "both features published as their own",
        lambda: (
            (
                (published(pipeline, "public_toilets", LYON, lyon_id) or {}).get("adresse") == "Lyon's record"
                and (published(pipeline, "public_toilets", VILLEURBANNE, vil_id) or {}).get("adresse")
                == "Villeurbanne's record"
            )
            or None
        ),
    )
