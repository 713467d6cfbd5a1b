"""A second territory by the setting alone, on the real stack: the normaliser run with
ODC_TERRITORY=montpellier-mediterranee-metropole (its own database and topics on the session's broker and
PostGIS) takes in a toilet of Montpellier (34172) at a Montpellier position and refuses one sent as Lyon
(69123), naming the territory in words."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from deploy.local.kafka import KafkaBroker
from deploy.local.postgres import PostgresCluster
from tests.integration.pipeline_harness import Pipeline, toilet_event, wait_for

pytestmark = pytest.mark.integration
TERRITORY = "montpellier-mediterranee-metropole"
DATABASE = "odc_territory_montpellier"
COMEDIE = (3.8800, 43.6085)  # place de la Comédie, Montpellier
BELLECOUR = (4.8320, 45.7578)  # place Bellecour, Lyon


@dataclass(frozen=True)
class Database:
    dsn: str


@pytest.fixture(scope="module")
def montpellier(
    kafka_broker: KafkaBroker, postgis: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    with psycopg.connect(**postgis.superuser_conninfo(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), sql.Identifier(postgis.user))
            )
    with psycopg.connect(**postgis.superuser_conninfo(DATABASE), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    db = Database(postgis.dsn.rsplit("/", 1)[0] + "/" + DATABASE)
    p = Pipeline(kafka_broker, db, tmp_path_factory.mktemp("montpellier"), input_topic="odc.mtp.change-events")  # type: ignore[arg-type]
    p.admin_key()  # the signing key exists before the normaliser reads the keys
    p.start(
        ("normalise",),
        extra_env={
            "ODC_TERRITORY": TERRITORY,  # the one setting that makes it another territory
            # its own topics and group, so that the session's Lyon pipeline and this one do not share events
            "ODC_NORMALISE_TOPIC_CHANGE_EVENTS": "odc.mtp.change-events",
            "ODC_NORMALISE_TOPIC_FEATURE_CHANGES": "odc.mtp.feature-changes",
            "ODC_NORMALISE_TOPIC_REJECTED": "odc.mtp.rejected",
            "ODC_NORMALISE_GROUP_ID": "odc-normalise-mtp",
            # the broker's ACLs name the deployment's own topics (odc.change-events, ...): these extra topics of a
            # second deployment on the same broker have none for odc-normalise, so this normaliser acts as the admin
            "ODC_NORMALISE_KAFKA_USERNAME": kafka_broker.admin_security().username,
            "ODC_NORMALISE_KAFKA_PASSWORD": kafka_broker.admin_security().password.get_secret_value(),
        },
    )
    try:
        yield p
    finally:
        p.stop()


def test_the_montpellier_territory_takes_its_communes_and_refuses_lyon(montpellier: Pipeline) -> None:
    accepted = toilet_event("34172001", seq=1, commune="34172", lon=COMEDIE[0], lat=COMEDIE[1])
    refused = toilet_event("69123001", seq=1, commune="69123", lon=BELLECOUR[0], lat=BELLECOUR[1])
    montpellier.produce_events([accepted, refused])
    rows = wait_for(
        "the Montpellier toilet stored",
        lambda: (
            montpellier.sql(
                "SELECT commune, attributes->>'codinsee', corrections FROM canonical_feature "
                "WHERE dataset = 'public_toilets' AND feature_id = %s",
                accepted.feature_id,
            )
            or None
        ),
    )
    ((commune, codinsee, corrections),) = rows
    assert (commune, codinsee) == ("34172", "34172")
    assert not [c for c in corrections if c.startswith("outside_commune")]  # inside Montpellier's boundary
    ((reason, errors),) = wait_for(
        "the Lyon toilet's rejection",
        lambda: montpellier.sql("SELECT reason, errors FROM rejection WHERE event_id = %s", refused.event_id) or None,
    )
    by_rule = {e["rule"]: e for e in errors}
    assert by_rule["pattern"]["field"] == "codinsee"
    assert (
        "a 5-character INSEE code of a commune of Montpellier Méditerranée Métropole, e.g. 34172"
        in by_rule["pattern"]["message_en"]
    )
    assert "outside the territory of Montpellier Méditerranée Métropole" in by_rule["out_of_area"]["message_en"]
    assert not any("^" in e["message_en"] or "[0-9]" in e["message_en"] for e in errors)
    assert reason == "invalid_attributes"
    assert not montpellier.sql(
        "SELECT 1 FROM canonical_feature WHERE dataset = 'public_toilets' AND feature_id = %s", refused.feature_id
    )
