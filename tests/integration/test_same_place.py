"""Same place, two records, on the real Kafka broker and PostGIS with the three services running: two
communes' records of one toilet become one canonical feature with two provenances and one published
feature; a market held on two days at one spot stays two; deletes remove one provenance at a time."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

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


def test_the_same_toilet_from_two_communes_8_m_apart_is_one_feature_with_two_provenances(pipeline: Pipeline) -> None:
    lyon_id, vil_id = new_gid(), new_gid()
    version = pipeline.latest_version("public_toilets")
    send(pipeline, "public_toilets", [toilet_event(lyon_id, seq=1, commune=LYON, lon=BORDER[0], lat=BORDER[1],
                                                   adresse="Lyon's record")])  # fmt: skip
    wait_for("Lyon's toilet published", lambda: published(pipeline, "public_toilets", LYON, lyon_id))
    vil = toilet_event(vil_id, seq=1, commune=VILLEURBANNE, lon=EIGHT_M_NORTH[0], lat=EIGHT_M_NORTH[1],
                       adresse="Villeurbanne's record")  # fmt: skip
    send(pipeline, "public_toilets", [later(vil, 1)])

    # one canonical feature (the first record's key), none for Villeurbanne's record, two provenances
    assert canonical(pipeline, VILLEURBANNE, vil_id) is None
    state = canonical(pipeline, LYON, lyon_id)
    assert state is not None and state[0] is False
    assert state[1]["adresse"] == "Villeurbanne's record"  # last writer by event time
    rows = pipeline.sql(
        "SELECT commune, feature_id, canonical_commune, canonical_feature_id, removed, round(distance_m) "
        "FROM feature_provenance WHERE dataset = 'public_toilets' AND canonical_feature_id = %s ORDER BY linked_at, commune",
        lyon_id,
    )
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        (LYON, lyon_id, LYON, lyon_id, False),
        (VILLEURBANNE, vil_id, LYON, lyon_id, False),
    ]
    assert 7 <= float(rows[1][5]) <= 9

    # one published feature, whose provenance subscribers see; no feature for Villeurbanne's key
    doc = wait_for(
        "the linked feature published",
        lambda: (d := published(pipeline, "public_toilets", LYON, lyon_id)) and "odc:provenance" in d and d,
    )
    assert [(m["commune"], m["feature_id"]) for m in doc["odc:provenance"]] == [(LYON, lyon_id), (VILLEURBANNE, vil_id)]  # type: ignore[index,union-attr]
    assert published(pipeline, "public_toilets", VILLEURBANNE, vil_id) is None
    # the versions say: one feature added, then that feature updated (the link), never a second feature
    diffs = pipeline.sql(
        "SELECT version, kind FROM version_diff WHERE dataset = 'public_toilets' AND version > %s "
        "AND feature_id IN (%s, %s) ORDER BY version",
        version,
        lyon_id,
        vil_id,
    )
    assert [k for _, k in diffs] == ["added", "updated"]


def test_a_market_on_two_days_at_one_spot_stays_two(pipeline: Pipeline) -> None:
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
    assert pipeline.sql(
        "SELECT count(*) FROM feature_provenance WHERE dataset = 'markets' AND feature_id = ANY(%s)",
        [str(i) for i in ids],
    ) == [(0,)]


def test_a_delete_from_one_source_keeps_the_feature_and_from_both_removes_it(pipeline: Pipeline) -> None:
    here = (BORDER[0] + 0.002, BORDER[1])  # 155 m east of the first test's toilet
    lyon_id, vil_id = new_gid(), new_gid()
    lyon = toilet_event(lyon_id, seq=1, commune=LYON, lon=here[0], lat=here[1], adresse="Lyon's record")
    vil = toilet_event(vil_id, seq=1, commune=VILLEURBANNE, lon=here[0], lat=here[1] + 5 / 111_195,
                       adresse="Villeurbanne's record")  # fmt: skip
    send(pipeline, "public_toilets", [lyon])  # Lyon's first, so that the feature is Lyon's key
    send(pipeline, "public_toilets", [later(vil, 1)])
    assert canonical(pipeline, VILLEURBANNE, vil_id) is None
    assert pipeline.sql(
        "SELECT count(*) FROM feature_provenance WHERE canonical_feature_id = %s AND NOT removed", lyon_id
    ) == [(2,)]

    # Lyon deletes its record: the feature stays, with Villeurbanne's content and provenance only
    send(pipeline, "public_toilets", [later(toilet_event(lyon_id, seq=2, commune=LYON, op=Operation.DELETE), 2)])
    state = canonical(pipeline, LYON, lyon_id)
    assert state is not None and state[0] is False and state[1]["adresse"] == "Villeurbanne's record"
    assert [m["commune"] for m in state[1]["odc:provenance"]] == [VILLEURBANNE]  # type: ignore[union-attr]
    doc = wait_for(
        "the published feature with one provenance",
        lambda: (
            (d := published(pipeline, "public_toilets", LYON, lyon_id))
            and len(d["odc:provenance"]) == 1  # type: ignore[arg-type]
            and d
        ),
    )
    assert doc["adresse"] == "Villeurbanne's record"

    # Villeurbanne deletes it too: the feature is gone, from the store and from what is published
    send(
        pipeline,
        "public_toilets",
        [later(toilet_event(vil_id, seq=2, commune=VILLEURBANNE, op=Operation.DELETE), 3)],
    )
    state = canonical(pipeline, LYON, lyon_id)
    assert state is not None and state[0] is True
    wait_for("the feature unpublished", lambda: published(pipeline, "public_toilets", LYON, lyon_id) is None or None)
    assert pipeline.sql(
        "SELECT count(*) FROM feature_provenance WHERE canonical_feature_id = %s AND removed", lyon_id
    ) == [(2,)]
