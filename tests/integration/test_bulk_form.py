"""The bulk form of odc.change-events (change_event_batch, issue #16.3) on the real stack (the session's
broker and PostGIS, the three services as processes): a bulk message through the real normaliser into
PostGIS, every event's outcome as if it had come alone; `odc send` and the push API write bulk messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.contract.event_signature import sign
from services.contract.messages import ChangeEvent, Operation
from services.ingest.adapters.kafka_event_publisher import bulk_key
from tests.integration.pipeline_harness import TOPICS, Pipeline, toilet_event, wait_for
from tests.integration.test_push_api_and_connectors import POINT, cli, gid, live, push, received, token

pytestmark = pytest.mark.integration


def input_offsets(p: Pipeline) -> set[tuple[int, int]]:
    return {(r.partition, r.offset) for r in p.read_topic(TOPICS["input"], timeout=20)}


def new_input_messages(p: Pipeline, before: set[tuple[int, int]]) -> list[Any]:
    return [r for r in p.read_topic(TOPICS["input"], timeout=20) if (r.partition, r.offset) not in before]


def stored(p: Pipeline, fid: str) -> tuple[str, bool] | None:
    rows = p.sql(
        "SELECT attributes->>'adresse', deleted FROM canonical_feature "
        "WHERE dataset = 'public_toilets' AND commune = '69266' AND feature_id = %s",
        fid,
    )
    return (rows[0][0], rows[0][1]) if rows else None


def test_a_bulk_message_goes_through_the_real_normaliser_into_postgis_as_its_events_alone(
    pipeline: Pipeline,
) -> None:
    """One signed bulk message mixing valid, invalid, duplicate, stale, tombstoned and foreign-commune events:
    each gets the outcome it would get alone, in PostGIS and on the rejected topic; nothing is lost."""
    old, gone, dup = str(gid()), str(gid()), str(gid())
    before = received(pipeline)
    pipeline.produce_events(
        [
            toilet_event(old, seq=5, adresse="newest"),
            toilet_event(gone, seq=1),
            toilet_event(gone, seq=3, op=Operation.DELETE),
        ]
    )
    pipeline.settle("public_toilets", before, 3)
    assert stored(pipeline, old) == ("newest", False) and stored(pipeline, gone) is not None

    new_a, new_b, bad = str(gid()), str(gid()), str(gid())
    twice = toilet_event(dup, seq=1, adresse="once")
    events: list[ChangeEvent] = [
        toilet_event(new_a, seq=1, adresse="bulk a"),
        toilet_event(bad, seq=1, lon=0.0, lat=0.0),  # placeholder coordinates: invalid_geometry
        twice,
        toilet_event(old, seq=4, adresse="older"),  # stale
        toilet_event(gone, seq=2, adresse="late"),  # older than the delete: stale, stays deleted
        twice,  # the same event id again: duplicate
        toilet_event(str(gid()), seq=1, commune="69123", lon=4.832, lat=45.7578),  # not the message's commune
        toilet_event(new_b, seq=1, adresse="bulk b"),
    ]
    foreign = events[6]
    value = pipeline.codecs.encode_change_event_batch("public_toilets", "69266", events)
    before = received(pipeline)
    counted = {
        name: pipeline.metric("normalise", name, dataset="public_toilets")
        for name in ("odc_events_duplicate_total", "odc_events_stale_total")
    }
    pipeline.produce(
        [value],
        [bulk_key("public_toilets", "69266")],
        [sign(value, pipeline.admin_key())],
    )
    pipeline.settle("public_toilets", before, len(events))
    assert received(pipeline) - before == len(events)  # the normaliser counts the events, not the message

    assert stored(pipeline, new_a) == ("bulk a", False) and stored(pipeline, new_b) == ("bulk b", False)
    assert stored(pipeline, dup) == ("once", False)
    assert stored(pipeline, old) == ("newest", False)
    assert stored(pipeline, gone) is not None and stored(pipeline, gone)[1] is True  # type: ignore[index]
    assert stored(pipeline, bad) is None
    assert not pipeline.sql("SELECT 1 FROM canonical_feature WHERE feature_id = %s", foreign.feature_id)
    # the same counts as the events alone: one duplicate (the id twice), two stale
    assert pipeline.metric("normalise", "odc_events_duplicate_total", dataset="public_toilets") == (
        counted["odc_events_duplicate_total"] + 1
    )
    assert pipeline.metric("normalise", "odc_events_stale_total", dataset="public_toilets") == (
        counted["odc_events_stale_total"] + 2
    )

    ids = [e.event_id for e in events]
    rows = pipeline.sql(
        "SELECT event_id, reason, errors, original, source_topic FROM rejection WHERE event_id = ANY(%s)", ids
    )
    reasons = {r[0]: r[1] for r in rows}
    assert reasons == {events[1].event_id: "invalid_geometry", foreign.event_id: "invalid_envelope"}
    by_id = {r[0]: r for r in rows}
    assert [e["rule"] for e in by_id[foreign.event_id][2]] == ["bulk_mismatch"]
    for event_id, original in ((events[1].event_id, events[1]), (foreign.event_id, foreign)):
        kept = bytes(by_id[event_id][3])
        assert kept == pipeline.codecs.encode_change_event(original)  # the event alone: replayable
        assert by_id[event_id][4] == TOPICS["input"]
    # the processed ids: every valid event once (the stale ones too), none of the refused
    processed = {r[0] for r in pipeline.sql("SELECT event_id FROM processed_event WHERE event_id = ANY(%s)", ids)}
    assert processed == {e.event_id for e in events} - set(reasons)
    on_topic = wait_for(
        "the two rejections on the rejected topic",
        lambda: (rs := [r for r in pipeline.rejections() if r.event_id in reasons]) and len(rs) == 2 and rs,
    )
    assert {r.reason for r in on_topic} == {"invalid_geometry", "invalid_envelope"}


def test_odc_send_writes_bulk_messages(pipeline: Pipeline, tmp_path: Path) -> None:
    fids = [gid() for _ in range(25)]
    data = tmp_path / "toilettes.geojson"
    data.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"gid": f, "codinsee": "69266", "adresse": f"{n} rue du test"},
                        "geometry": {"type": "Point", "coordinates": [4.88 + n * 0.0005, 45.77]},
                    }
                    for n, f in enumerate(fids)
                ],
            }
        )
    )
    offsets = input_offsets(pipeline)
    before = received(pipeline)
    sent = cli(pipeline, "send", str(data), "--dataset", "public_toilets", "--commune", "69266")
    assert sent.returncode == 0, sent.stderr
    pipeline.settle("public_toilets", before, len(fids))
    assert all(live(pipeline, "public_toilets", "69266", str(f)) for f in fids)
    (message,) = new_input_messages(pipeline, offsets)  # 25 events, one window: one bulk message
    assert pipeline.codecs.catalogue.writer_name(message.value) == "change_event_batch"
    assert message.key == bulk_key("public_toilets", "69266")
    assert {k for k, _ in message.headers} >= {"odc-key-id", "odc-signature"}
    carried = pipeline.codecs.decode_change_events(message.value)
    assert (carried.dataset, carried.commune) == ("public_toilets", "69266")
    assert [e.feature_id for e in carried.events] == [str(f) for f in fids]


def test_the_push_api_writes_one_bulk_message_per_request_and_keeps_its_per_record_answers(
    pipeline: Pipeline,
) -> None:
    tok = token(pipeline, "--commune", "69266", "--label", "bulk form test")
    a, b, c = gid(), gid(), gid()
    offsets = input_offsets(pipeline)
    before = received(pipeline)
    r = push(
        pipeline,
        tok,
        [
            {"gid": a, "adresse": "rue A", "geometry": POINT},
            {"adresse": "no id"},  # refused at once, never sent
            {"gid": b, "adresse": "rue B", "geometry": "POINT (4.8801 45.7701)"},
            {"gid": c, "adresse": "nul\u0000inside", "geometry": POINT},  # refused in the stream
        ],
    )
    assert r.status_code == 202, r.text
    doc = r.json()
    assert [x["index"] for x in doc["accepted"]] == [0, 2, 3] and [x["index"] for x in doc["refused"]] == [1]
    pipeline.settle("public_toilets", before, 3)
    assert live(pipeline, "public_toilets", "69266", str(a)) and live(pipeline, "public_toilets", "69266", str(b))
    (message,) = new_input_messages(pipeline, offsets)
    assert pipeline.codecs.catalogue.writer_name(message.value) == "change_event_batch"
    carried = pipeline.codecs.decode_change_events(message.value)
    assert [e.event_id for e in carried.events] == [x["event_id"] for x in doc["accepted"]]
    (reason,) = pipeline.sql("SELECT reason FROM rejection WHERE event_id = %s", doc["accepted"][2]["event_id"])[0]
    assert reason == "invalid_attributes"
