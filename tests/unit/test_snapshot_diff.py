"""Mirror semantics of snapshot connectors (pure): what is added, changed, removed; what the guard holds;
and the connector handler with fakes of its ports."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Any

import pytest

from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import GeometryEncoding, Operation, RawGeometry
from services.ingest.domain.snapshot_diff import (
    EMPTY_SNAPSHOT,
    TOO_MANY_DELETES,
    FeatureRef,
    business_fields,
    diff,
    fingerprint,
    hold_reason,
    index_snapshot,
    mirror_events,
)
from services.ingest.domain.source_records import SourceRecord
from services.ingest.service_layer.ports import ConnectorConfig
from services.ingest.service_layer.run_connector import APPLIED, DRY_RUN, FAILED, HELD, UP_TO_DATE, run_connector
from tests.fakes.ingest_ports import BytesFetcher, FakeClock, InMemoryConnectors, InMemoryProfiles, RecordingSink

CATALOGUE = DatasetCatalogue.load()
TOILETS = CATALOGUE.get("public_toilets")
assert TOILETS is not None


def rec(gid: int, adresse: str = "rue", commune: str = "69266", x: float = 4.88, **extra: Any) -> SourceRecord:
    geometry = RawGeometry(GeometryEncoding.GEOJSON, json.dumps({"type": "Point", "coordinates": [x, 45.77]}).encode())
    return SourceRecord(gid, {"gid": gid, "codinsee": commune, "adresse": adresse, **extra}, geometry)


def refs(*gids: int, commune: str = "69266") -> tuple[FeatureRef, ...]:
    return tuple(sorted(FeatureRef(commune, str(g)) for g in gids))


def state(records: list[SourceRecord], commune: str | None = None) -> dict[FeatureRef, str]:
    return {r: e.fingerprint for r, e in index_snapshot(records, TOILETS, commune=commune).entries.items()}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("before", "after", "added", "changed", "removed", "unchanged"),
    [
        ([], [rec(1), rec(2)], (1, 2), (), (), 0),
        ([rec(1), rec(2)], [rec(1), rec(2)], (), (), (), 2),
        ([rec(1), rec(2)], [rec(1, "avenue"), rec(2)], (), (1,), (), 1),
        ([rec(1), rec(2)], [rec(1, x=4.89), rec(2)], (), (1,), (), 1),  # geometry moved
        ([rec(1), rec(2), rec(3)], [rec(2), rec(4)], (4,), (), (1, 3), 1),
        # fields outside the schema (live counts, timestamps) never make a record "changed"
        (
            [rec(1, available_bikes=3, last_update="10:00")],
            [rec(1, available_bikes=9, last_update="11:00")],
            (),
            (),
            (),
            1,
        ),
        # a schema field sent under another spelling is the same field
        (
            [rec(1, infoloc="hall")],
            [replace(rec(1), attributes={**rec(1).attributes, "InfoLoc": "hall"})],
            (),
            (),
            (),
            1,
        ),
    ],
    ids=[
        "first-run",
        "same",
        "attribute-changed",
        "geometry-moved",
        "add-and-remove",
        "volatile-extras",
        "renamed-column",
    ],
)
def test_diff(
    before: list[SourceRecord],
    after: list[SourceRecord],
    added: tuple[int, ...],
    changed: tuple[int, ...],
    removed: tuple[int, ...],
    unchanged: int,
) -> None:
    d = diff(state(before), index_snapshot(after, TOILETS, commune=None))  # type: ignore[arg-type]
    assert (d.added, d.changed, d.removed, d.unchanged) == (refs(*added), refs(*changed), refs(*removed), unchanged)


def test_volatile_fields_of_the_definition_are_not_business_fields() -> None:
    volatile = replace(TOILETS, volatile_fields=("adresse",))  # type: ignore[type-var]
    assert "adresse" not in business_fields(volatile) and "adresse" in business_fields(TOILETS)  # type: ignore[arg-type]
    a, b = rec(1, "rue"), rec(1, "avenue")
    fields = business_fields(volatile)
    assert fingerprint(a, fields) == fingerprint(b, fields)


def test_a_commune_connector_mirrors_its_own_records_only() -> None:
    index = index_snapshot([rec(1), rec(2, commune="69123"), rec(3, commune="")], TOILETS, commune="69266")  # type: ignore[arg-type]
    assert set(index.entries) == set(refs(1, 3)) and index.other_commune == 1


def test_records_without_id_are_counted_not_mirrored_and_duplicates_keep_the_last() -> None:
    no_id = SourceRecord(9, {"codinsee": "69266", "adresse": "?"}, None)
    index = index_snapshot([rec(1, "a"), rec(1, "b"), no_id], TOILETS, commune=None)  # type: ignore[arg-type]
    assert (index.records, index.unidentified, index.duplicates) == (3, 1, 1)
    assert index.entries[FeatureRef("69266", "1")].record.attributes["adresse"] == "b"


@pytest.mark.parametrize(
    ("previous", "current", "share", "expected"),
    [
        (0, 0, 0.5, None),  # nothing before, nothing now
        (10, 0, 0.5, EMPTY_SNAPSHOT),
        (10, 5, 0.5, None),  # 5 of 10 deleted: exactly the share
        (10, 4, 0.5, TOO_MANY_DELETES),
        (10, 9, 0.0, TOO_MANY_DELETES),
        (10, 0, 1.0, EMPTY_SNAPSHOT),  # an empty feed is held whatever the share
    ],
)
def test_guard(previous: int, current: int, share: float, expected: str | None) -> None:
    before = [rec(i) for i in range(previous)]
    after = [rec(i) for i in range(current)]
    index = index_snapshot(after, TOILETS, commune=None)  # type: ignore[arg-type]
    assert hold_reason(previous, index, diff(state(before), index), share) == expected


def test_mirror_events_upsert_new_and_changed_then_delete_removed() -> None:
    index = index_snapshot([rec(1, "new"), rec(2)], TOILETS, commune=None)  # type: ignore[arg-type]
    d = diff({FeatureRef("69266", "1"): "old", FeatureRef("69266", "3"): "x"}, index)
    ids = itertools.count()
    events = list(
        mirror_events(
            index,
            d,
            TOILETS,
            source="connector:t",
            sequence=5,
            occurred_at=FakeClock().now(),
            new_id=lambda: f"e{next(ids)}",
        )  # type: ignore[arg-type]
    )
    assert [(e.operation, e.feature_id, e.commune) for e in events] == [
        (Operation.UPSERT, "2", "69266"),
        (Operation.UPSERT, "1", "69266"),
        (Operation.DELETE, "3", "69266"),
    ]
    assert events[0].attributes["adresse"] == "rue" and events[2].geometry is None


# ------------------------------------------------------------------------------- the handler, with fakes
def geojson(*records: SourceRecord) -> bytes:
    return json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "properties": r.attributes, "geometry": json.loads(r.geometry.value)}  # type: ignore[union-attr]
                for r in records
            ],
        }
    ).encode()


async def run(store: InMemoryConnectors, fetcher: BytesFetcher, sink: RecordingSink, **kw: Any):  # type: ignore[no-untyped-def]
    ids = itertools.count()
    return await run_connector(
        "c",
        store=store,
        fetcher=fetcher,
        sink=sink,
        catalogue=CATALOGUE,
        clock=FakeClock(),
        new_id=lambda: f"e{next(ids)}",
        **kw,
    )


async def test_a_connector_applies_then_finds_nothing_to_do_then_holds_an_empty_feed() -> None:
    store = InMemoryConnectors({"c": ConnectorConfig("c", "69266", "public_toilets", "f.geojson", None, 600, 0.5)})
    fetcher, sink = BytesFetcher({"f.geojson": geojson(rec(1), rec(2))}), RecordingSink()
    first = await run(store, fetcher, sink)
    assert (first.status, first.added, first.events_published) == (APPLIED, 2, 2)
    assert (await run(store, fetcher, sink)).status == UP_TO_DATE
    fetcher.files["f.geojson"] = geojson()
    held = await run(store, fetcher, sink)
    assert (held.status, held.hold_reason, held.removed) == (HELD, EMPTY_SNAPSHOT, 2)
    assert len(sink.events) == 2 and len(store.states["c"]) == 2  # nothing published, state kept
    confirmed = await run(store, fetcher, sink, confirm=True)
    assert (confirmed.status, confirmed.removed) == (APPLIED, 2) and store.states["c"] == {}
    assert [e.operation for e in sink.events[2:]] == [Operation.DELETE, Operation.DELETE]


async def test_a_dry_run_shows_the_diff_and_changes_nothing() -> None:
    store = InMemoryConnectors({"c": ConnectorConfig("c", None, "public_toilets", "f.geojson", None, 600, 0.5)})
    sink = RecordingSink()
    report = await run(store, BytesFetcher({"f.geojson": geojson(rec(1), rec(2))}), sink, dry_run=True)
    assert report.status == DRY_RUN and report.diff is not None and report.diff.added == refs(1, 2)
    assert not sink.events and not store.states and not store.runs


async def test_an_unreadable_or_missing_source_fails_the_run_and_changes_nothing() -> None:
    store = InMemoryConnectors({"c": ConnectorConfig("c", None, "public_toilets", "f.geojson", None, 600, 0.5)})
    sink = RecordingSink()
    assert (await run(store, BytesFetcher({"f.geojson": b"{not json"}), sink)).status == FAILED
    assert (await run(store, BytesFetcher({}), sink)).status == FAILED
    assert not sink.events and [r[1] for r in store.runs] == [FAILED, FAILED]


async def test_a_failed_publish_records_no_state_so_the_next_run_sends_the_same_diff() -> None:
    from services.ingest.service_layer.ports import PublishFailed

    store = InMemoryConnectors({"c": ConnectorConfig("c", None, "public_toilets", "f.geojson", None, 600, 0.5)})
    fetcher, sink = BytesFetcher({"f.geojson": geojson(rec(1))}), RecordingSink()
    sink.fail = True
    with pytest.raises(PublishFailed):
        await run(store, fetcher, sink)
    assert not store.states.get("c")
    sink.fail = False
    assert (await run(store, fetcher, sink)).added == 1


def test_a_definition_can_only_call_its_own_schema_fields_volatile() -> None:
    from services.contract.datasets.catalogue import DefinitionError, _definition_from_dict

    bike = CATALOGUE.get("bike_share_stations")
    assert bike is not None and bike.volatile_fields == ("last_update",)
    raw = {
        "id": "x",
        "title": {"fr": "x", "en": "x"},
        "identity_field": "a",
        "geometry": {"type": "None", "carrier": "none"},
        "volatile_fields": ["b"],
    }
    with pytest.raises(DefinitionError, match="volatile field"):
        _definition_from_dict(raw, {"fields": [{"name": "a"}]}, "x")


async def test_a_connector_reads_its_commune_layout_through_the_saved_profile() -> None:
    cfg = ConnectorConfig("c", None, "public_toilets", "f.csv", None, 600, 0.5, profile="sig")
    store, sink, profiles = InMemoryConnectors({"c": cfg}), RecordingSink(), InMemoryProfiles()
    csv_file = "Numéro;Rue;Code INSEE;Coordonnées;Remarque\n7;1 place Bellecour;69382;45.7578, 4.8320;près du kiosque\n"
    fetcher = BytesFetcher({"f.csv": csv_file.encode()})
    # without the saved profile the run fails and says which profile is missing; nothing is published
    missing = await run(store, fetcher, sink, profiles=profiles)
    assert missing.status == FAILED and "*/public_toilets/sig" in (missing.error or "") and not sink.events
    await profiles.save(
        "*",
        "public_toilets",
        "sig",
        {
            "dataset": "public_toilets",
            "fields": [{"column": "Numéro", "field": "gid"}, {"column": "Rue", "field": "adresse"}],
            "geometry": {"kind": "point_text", "columns": ["Coordonnées"], "crs": "EPSG:4326", "order": "latlon"},
            "commune_column": "Code INSEE",
        },
        "admin",
    )
    report = await run(store, fetcher, sink, profiles=profiles)
    assert (report.status, report.added) == (APPLIED, 1)
    (ev,) = sink.events
    assert (ev.commune, ev.feature_id, ev.attributes["adresse"]) == ("69382", "7", "1 place Bellecour")
    assert ev.attributes["odc:extra"] == '{"Remarque": "près du kiosque"}'
    assert ev.geometry is not None and ev.geometry.value == b"POINT (4.8320 45.7578)"
