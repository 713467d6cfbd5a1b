"""The issue's integration tests, through the real Kafka broker and PostGIS, the services running as
processes. Tests run in file order and share the pipeline; each checks deltas, not absolute totals,
except the first (which starts from an empty store)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from services.contract.messages import Operation
from tests.integration.pipeline_harness import TOPICS, Pipeline, toilet_event, wait_for

pytestmark = pytest.mark.integration
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "grandlyon"


def live_features(p: Pipeline, dataset: str) -> int:
    return int(p.sql("SELECT count(*) FROM canonical_feature WHERE dataset = %s AND NOT deleted", dataset)[0][0])


def unpublished(p: Pipeline, dataset: str) -> set[tuple[str, str]]:
    """Live features of the store not in the published state, and published ones no longer live."""
    live = {(c, f) for c, f in p.sql(_LIVE, dataset)}
    published = {
        (c, f) for c, f in p.sql("SELECT commune, feature_id FROM published_feature WHERE dataset = %s", dataset)
    }
    return live ^ published


_LIVE = "SELECT commune, feature_id FROM canonical_feature WHERE dataset = %s AND NOT deleted"


def wait_at_rest(p: Pipeline, dataset: str, timeout: float = 60) -> None:
    """Until every change of the store is published: an earlier test's last change may still be on its way
    (a relay waits for older writing transactions anywhere in the cluster, docs/architecture.md); one that never
    arrives fails here, by name."""
    deadline = time.monotonic() + timeout
    while (diff := unpublished(p, dataset)) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not diff, f"store and published state of {dataset} still differ after {timeout:.0f} s: {sorted(diff)[:10]}"


def test_toilets_file_gives_480_features_and_one_version_notification(pipeline: Pipeline) -> None:
    """Counts the file's own features and the notifications it causes: independent of earlier tests."""
    wait_at_rest(pipeline, "public_toilets")
    file_ids = [
        str(f["properties"]["gid"]) for f in json.loads((SAMPLES / "toilettes.geojson").read_text())["features"]
    ]
    assert pipeline.sql(
        "SELECT count(*) FROM canonical_feature WHERE dataset = 'public_toilets' AND feature_id = ANY(%s)", file_ids
    ) == [(0,)], "the file was sent before this test"
    version_before = pipeline.latest_version("public_toilets")
    live_before = live_features(pipeline, "public_toilets")
    notes_before = len(pipeline.version_notifications("public_toilets"))
    before = pipeline.metric("normalise", "odc_events_received_total")
    summary = pipeline.send_file(SAMPLES / "toilettes.geojson", "public_toilets")
    assert summary.events == 480
    pipeline.settle("public_toilets", before, 480)
    mine = "dataset = 'public_toilets' AND feature_id = ANY(%s) AND NOT deleted"
    assert pipeline.sql(f"SELECT count(*) FROM canonical_feature WHERE {mine}", file_ids) == [(480,)]
    # every one of them lies in the Métropole, in lon/lat order, after the per-feature axis fix
    assert pipeline.sql(
        f"SELECT count(*) FROM canonical_feature WHERE {mine} AND "
        "ST_X(geom) BETWEEN 4.6 AND 5.1 AND ST_Y(geom) BETWEEN 45.5 AND 46.0",
        file_ids,
    ) == [(480,)]
    assert pipeline.sql(
        f"SELECT count(*) FROM canonical_feature WHERE {mine} AND corrections ? 'axis_swapped'", file_ids
    ) == [(479,)]
    notes = wait_for(
        "the version notification", lambda: (n := pipeline.version_notifications("public_toilets")[notes_before:]) and n
    )
    assert len(notes) == 1
    headers, data = notes[0]
    assert (data.version, data.added, data.updated, data.removed) == (version_before + 1, 480, 0, 0)
    assert data.feature_count == live_before + 480
    assert headers["ce_specversion"] == "1.0" and headers["ce_id"] == f"public_toilets:v{version_before + 1}"
    assert headers["ce_type"] == "fr.grandlyon.odc.dataset.version.published"
    assert headers["content-type"] == "application/avro"


def test_resending_the_same_file_changes_nothing_and_cuts_no_version(pipeline: Pipeline) -> None:
    version = pipeline.latest_version("public_toilets")
    live = live_features(pipeline, "public_toilets")
    notes = len(pipeline.version_notifications("public_toilets"))
    unchanged = pipeline.metric("normalise", "odc_events_accepted_total", dataset="public_toilets", outcome="unchanged")
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.send_file(SAMPLES / "toilettes.geojson", "public_toilets")
    pipeline.settle("public_toilets", before, 480)
    assert (
        pipeline.metric("normalise", "odc_events_accepted_total", dataset="public_toilets", outcome="unchanged")
        == unchanged + 480
    )
    assert pipeline.latest_version("public_toilets") == version
    assert live_features(pipeline, "public_toilets") == live
    assert len(pipeline.version_notifications("public_toilets")) == notes


def test_changes_travel_as_one_message_per_dataset_batch_and_the_single_form_still_reads(pipeline: Pipeline) -> None:
    """Issue #16.3: odc.feature-changes carries FeatureChangeBatch messages, each of one dataset (its key) with
    its changes in change_id order; a single FeatureChange left on the topic from before the upgrade is still
    read by the publisher (here one already recorded: counted as a duplicate, nothing recorded twice)."""
    records = pipeline.read_topic(TOPICS["changes"])
    assert records
    changes = 0
    for r in records:
        assert pipeline.codecs.catalogue.writer_name(r.value) == "feature_change_batch"
        batch = pipeline.codecs.decode_feature_changes(r.value)
        assert batch and {c.dataset for c in batch} == {r.key.decode()}
        assert [c.change_id for c in batch] == sorted(c.change_id for c in batch)
        changes += len(batch)
    assert len(records) < changes  # fewer messages than changes: batches, not one per change
    old = pipeline.codecs.decode_feature_changes(records[0].value)[0]
    logged = int(pipeline.sql("SELECT count(*) FROM change_log")[0][0])
    duplicates = pipeline.metric("publish", "odc_feature_changes_received_total", outcome="duplicate")

    async def send_single_form() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=pipeline.broker.bootstrap, **pipeline.broker.admin_security().producer_kwargs()
        )
        await producer.start()
        try:
            await producer.send_and_wait(
                TOPICS["changes"], value=pipeline.codecs.encode_feature_change(old), key=old.dataset.encode()
            )
        finally:
            await producer.stop()

    asyncio.run(send_single_form())
    wait_for(
        "the single-form change counted as a duplicate",
        lambda: (
            pipeline.metric("publish", "odc_feature_changes_received_total", outcome="duplicate") > duplicates or None
        ),
    )
    assert int(pipeline.sql("SELECT count(*) FROM change_log")[0][0]) == logged


def test_parks_file_with_invalid_polygons_is_loaded_and_repaired(pipeline: Pipeline) -> None:
    uids = [f["properties"]["uid"] for f in json.loads((SAMPLES / "parcs.geojson").read_text())["features"]]
    mine = "dataset = 'parks_gardens' AND feature_id = ANY(%s) AND NOT deleted"
    assert pipeline.sql(f"SELECT count(*) FROM canonical_feature WHERE {mine}", uids) == [(0,)]
    version_before = pipeline.latest_version("parks_gardens")
    notes_before = len(pipeline.version_notifications("parks_gardens"))
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.send_file(SAMPLES / "parcs.geojson", "parks_gardens")
    pipeline.settle("parks_gardens", before, 510)
    assert pipeline.sql(f"SELECT count(*) FROM canonical_feature WHERE {mine}", uids) == [(510,)]
    assert pipeline.sql(f"SELECT count(*) FROM canonical_feature WHERE {mine} AND NOT ST_IsValid(geom)", uids) == [(0,)]
    assert pipeline.sql(f"SELECT count(*) FROM canonical_feature WHERE {mine} AND corrections ? 'repaired'", uids) == [
        (4,)
    ]
    assert pipeline.sql(f"SELECT array_agg(DISTINCT GeometryType(geom)) FROM canonical_feature WHERE {mine}", uids) == [
        (["MULTIPOLYGON"],)
    ]
    notes = wait_for(
        "the parks version notification",
        lambda: (n := pipeline.version_notifications("parks_gardens")[notes_before:]) and n,
    )
    assert [(d.version, d.added) for _, d in notes] == [(version_before + 1, 510)]


def test_the_same_event_twice_is_applied_once(pipeline: Pipeline) -> None:
    fid = str(900_000 + uuid.uuid4().int % 10_000)
    ev = toilet_event(fid, seq=1)
    dup = pipeline.metric("normalise", "odc_events_duplicate_total", dataset="public_toilets")
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.produce_events([ev, ev])
    pipeline.settle("public_toilets", before, 2)
    assert pipeline.metric("normalise", "odc_events_duplicate_total", dataset="public_toilets") == dup + 1
    assert pipeline.sql("SELECT count(*) FROM feature_change_outbox WHERE feature_id = %s", fid)[0][0] == 1
    assert pipeline.sql("SELECT count(*) FROM change_log WHERE feature_id = %s", fid)[0][0] == 1


def test_events_in_compressed_batches_of_every_kafka_codec_are_applied(pipeline: Pipeline) -> None:
    """A commune's own client may compress what it produces (Kafka Connect, kcat and the Java client offer gzip,
    snappy, lz4 and zstd). Every codec is read: without the codec's library (cramjam, aiokafka's) the consumer
    raised UnsupportedCodecError at the batch, and the normaliser stopped there."""
    before = pipeline.metric("normalise", "odc_events_received_total")
    ids = {}
    for n, codec in enumerate(("gzip", "snappy", "lz4", "zstd")):
        ids[codec] = [str(930_000 + n * 1_000 + uuid.uuid4().int % 1_000 + k) for k in range(0, 30, 10)]
        pipeline.produce_events([toilet_event(f, seq=1, adresse=codec) for f in ids[codec]], compression=codec)
    pipeline.settle("public_toilets", before, 12)
    for codec, fids in ids.items():
        rows = pipeline.sql(
            "SELECT attributes->>'adresse' FROM canonical_feature WHERE dataset = 'public_toilets' "
            "AND feature_id = ANY(%s) AND NOT deleted",
            fids,
        )
        assert rows == [(codec,)] * 3, codec


def test_an_older_event_after_a_newer_one_is_ignored(pipeline: Pipeline) -> None:
    fid = str(910_000 + uuid.uuid4().int % 10_000)
    stale = pipeline.metric("normalise", "odc_events_stale_total", dataset="public_toilets")
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.produce_events([toilet_event(fid, seq=10, adresse="newer"), toilet_event(fid, seq=9, adresse="older")])
    pipeline.settle("public_toilets", before, 2)
    assert pipeline.metric("normalise", "odc_events_stale_total", dataset="public_toilets") == stale + 1
    ((adresse,),) = pipeline.sql("SELECT attributes->>'adresse' FROM canonical_feature WHERE feature_id = %s", fid)
    assert adresse == "newer"


def test_a_delete_removes_the_feature_and_is_counted_in_the_next_version(pipeline: Pipeline) -> None:
    fid = str(920_000 + uuid.uuid4().int % 10_000)
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.produce_events([toilet_event(fid, seq=1)])
    pipeline.settle("public_toilets", before, 1)
    created_in = pipeline.latest_version("public_toilets")
    count = live_features(pipeline, "public_toilets")
    pipeline.produce_events([toilet_event(fid, seq=2, op=Operation.DELETE)])
    pipeline.settle("public_toilets", before, 2)
    assert live_features(pipeline, "public_toilets") == count - 1
    version = pipeline.latest_version("public_toilets")
    assert version == created_in + 1
    assert pipeline.sql(
        "SELECT kind FROM version_diff WHERE dataset = 'public_toilets' AND version = %s AND feature_id = %s",
        version,
        fid,
    ) == [("removed",)]
    notes = pipeline.version_notifications("public_toilets")
    assert [d.version for _, d in notes] == list(range(1, version + 1))  # in order, gap-free
    assert notes[-1][1].removed == 1
    # a late upsert older than the delete does not bring it back
    pipeline.produce_events([toilet_event(fid, seq=1, adresse="late")])
    pipeline.settle("public_toilets", before, 3)
    assert pipeline.sql("SELECT deleted FROM canonical_feature WHERE feature_id = %s", fid) == [(True,)]


def test_undecodable_bytes_and_unknown_dataset_are_rejected_while_good_events_flow(pipeline: Pipeline) -> None:
    fid = str(930_000 + uuid.uuid4().int % 10_000)
    before = pipeline.metric("normalise", "odc_events_received_total")
    garbage = b"\x00\x01 definitely not avro " + uuid.uuid4().bytes
    unknown = toilet_event("1", seq=1, dataset="swimming_pools")
    pipeline.produce([garbage])
    pipeline.produce_events([unknown, toilet_event(fid, seq=1)])
    pipeline.settle("public_toilets", before, 3)
    assert pipeline.sql("SELECT count(*) FROM canonical_feature WHERE feature_id = %s AND NOT deleted", fid)[0][0] == 1

    def rejected() -> list:  # type: ignore[type-arg]
        return [r for r in pipeline.rejections() if r.original == garbage or r.event_id == unknown.event_id]

    found = wait_for("both rejections on the rejected topic", lambda: (r := rejected()) and len(r) == 2 and r)
    by_reason = {r.reason: r for r in found}
    assert set(by_reason) == {"undecodable", "unknown_dataset"}
    assert by_reason["undecodable"].original == garbage
    assert by_reason["unknown_dataset"].dataset == "swimming_pools"
    assert by_reason["unknown_dataset"].errors[0].message_fr
    assert pipeline.metric("normalise", "odc_events_rejected_total", reason="undecodable") >= 1
