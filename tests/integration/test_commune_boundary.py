"""Positions checked against the sending commune's boundary, on the real stack: a toilet is flagged (its
dataset's policy), a polling station rejected with a specific reason, and the records around them flow."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from services.contract.messages import ChangeEvent, GeometryEncoding, Operation, RawGeometry
from tests.integration.pipeline_harness import Pipeline, toilet_event, wait_for

pytestmark = pytest.mark.integration
VILLEURBANNE = "69266"
TERREAUX = (4.8336, 45.7676)  # place des Terreaux, Lyon 1st: 2.0 km outside Villeurbanne (other tests use Bellecour)
VILLEURBANNE_TOWN_HALL = (4.8796, 45.7663)


def station(number: int, where: tuple[float, float]) -> ChangeEvent:
    ident = f"{VILLEURBANNE}-{number}"
    return ChangeEvent(
        str(uuid.uuid4()),
        "polling_stations",
        VILLEURBANNE,
        ident,
        Operation.UPSERT,
        datetime.now(UTC),
        1,
        "test",
        RawGeometry(GeometryEncoding.GEOJSON, json.dumps({"type": "Point", "coordinates": where}).encode()),
        {"id_bureau": ident, "code_insee": VILLEURBANNE, "numero": number, "nom_lieu": "École"},
    )


def test_a_position_outside_the_sending_commune_is_flagged_or_rejected_per_dataset(pipeline: Pipeline) -> None:
    base = uuid.uuid4().int % 10**8 + 5 * 10**8
    flagged = toilet_event(str(base), seq=1, commune=VILLEURBANNE, lon=TERREAUX[0], lat=TERREAUX[1])
    inside = toilet_event(str(base + 1), seq=1, commune=VILLEURBANNE, lon=VILLEURBANNE_TOWN_HALL[0] + 0.0005,
                          lat=VILLEURBANNE_TOWN_HALL[1])  # fmt: skip
    number = base % 9000 + 1
    refused, accepted = station(number, TERREAUX), station(number + 1, VILLEURBANNE_TOWN_HALL)
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.produce_events([flagged, inside, refused, accepted])
    wait_for(
        "the four events read",
        lambda: pipeline.metric("normalise", "odc_events_received_total") >= before + 4 or None,
    )
    wait_for(
        "the accepted records stored",
        lambda: (
            pipeline.sql(
                "SELECT count(*) FROM canonical_feature WHERE (dataset, feature_id) IN "
                "(('public_toilets', %s), ('public_toilets', %s), ('polling_stations', %s))",
                str(base),
                str(base + 1),
                accepted.feature_id,
            )[0][0]
            == 3
            or None
        ),
    )
    corrections = dict(
        pipeline.sql(
            "SELECT feature_id, corrections FROM canonical_feature WHERE dataset = 'public_toilets' "
            "AND feature_id = ANY(%s)",
            [str(base), str(base + 1)],
        )
    )
    flags = [c for c in corrections[str(base)] if c.startswith("outside_commune:")]
    assert len(flags) == 1 and flags[0].startswith(f"outside_commune:{VILLEURBANNE}:")
    assert 1_000 < int(flags[0].rsplit(":", 1)[1].rstrip("m")) < 3_000
    assert not [c for c in corrections[str(base + 1)] if c.startswith("outside_commune:")]
    rows = wait_for(
        "the polling station's rejection",
        lambda: pipeline.sql("SELECT reason, errors FROM rejection WHERE event_id = %s", refused.event_id) or None,
    )
    ((reason, errors),) = rows
    assert reason == "invalid_geometry" and [e["rule"] for e in errors] == ["outside_commune"]
    assert not pipeline.sql(
        "SELECT 1 FROM canonical_feature WHERE dataset = 'polling_stations' AND feature_id = %s", refused.feature_id
    )
