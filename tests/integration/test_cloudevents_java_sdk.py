"""The version notifications read by a subscriber on the CloudEvents project's own Java SDK (docs/api.md, "Kafka
(CloudEvents 1.0, binary mode)"): `io.cloudevents:cloudevents-kafka` 4.0.1, whose `CloudEventDeserializer` is the
consumer's value deserializer, on kafka-clients 4.1.2, reading `odc.dataset-versions` from the beginning over
SASL_SSL/SCRAM with the broker's CA. No subscriber principal exists on the broker (docs/security.md, "Kafka
broker": only the admin and the publisher may read the topic), so it reads as the admin, as the tests' own
Python reader does.

Every record must deserialise with the SDK, and what it reads must be what the publisher documents and what the
Python `cloudevents` SDK reads from the same records. The jars come from Maven Central through
tests/integration/kafka_clients/pom.xml into `.local/cloudevents-java/libs` once; later runs need no Maven."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from deploy.local.kafka import KafkaBroker
from deploy.local.kafka_access import ADMIN
from services.publish.domain.notifications import CONTENT_TYPE, DATASCHEMA, EVENT_TYPE, sequence
from tests.integration.java_clients import CLIENTS, client_properties, compile_client
from tests.integration.pipeline_harness import TOPICS, Pipeline, toilet_event, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POM = CLIENTS / "pom.xml"
LIBS = REPO / ".local" / "cloudevents-java" / "libs"
REQUIRED_JARS = ("cloudevents-kafka-4.0.1", "cloudevents-core-4.0.1", "cloudevents-api-4.0.1", "kafka-clients-4.1.2")
DATASET = "public_toilets"
DOCUMENTED_EXTENSIONS = {"partitionkey", "sequence"}  # dataschema and subject are attributes of CloudEvents 1.0


def subscriber_jars() -> list[Path]:
    """The SDK's classpath in ``.local/cloudevents-java/libs``, resolved with Maven only when missing or made from
    another pom (a marker holds the pom's sha256). No Maven or no network the first time is a failure."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()
    marker = LIBS / ".odc-complete"

    def complete() -> bool:
        names = [p.name for p in LIBS.glob("*.jar")]
        return (
            marker.is_file()
            and marker.read_text().strip() == digest
            and all(any(n.startswith(r) for n in names) for r in REQUIRED_JARS)
        )

    if not complete():
        LIBS.parent.mkdir(parents=True, exist_ok=True)
        with (LIBS.parent / ".libs.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not complete():
                mvn = shutil.which("mvn")
                assert mvn, "Maven ('mvn') is needed once to fetch the CloudEvents Java SDK (apt-get install maven)"
                if LIBS.exists():
                    shutil.rmtree(LIBS)
                cmd = [
                    mvn,
                    "-B",
                    "-q",
                    "-f",
                    str(POM),
                    f"-Dodc.cloudevents.libs={LIBS}",
                    "dependency:copy-dependencies",
                ]
                done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
                assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
                marker.write_text(digest + "\n")
                assert complete(), sorted(p.name for p in LIBS.glob("*.jar"))
    return sorted(LIBS.glob("*.jar"))


@pytest.fixture(scope="module")
def java_subscribe(
    kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], subprocess.CompletedProcess[str]]:
    """Compile CloudEventsSubscriber.java once; the returned function reads the versions topic with it."""
    jars, out = subscriber_jars(), tmp_path_factory.mktemp("java-cloudevents")
    classpath = ":".join(map(str, jars))
    java = compile_client("CloudEventsSubscriber.java", jars, out)
    properties = client_properties(kafka_broker, ADMIN, out / "subscriber.properties")

    def subscribe() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [java, "-cp", f"{classpath}:{out}", "CloudEventsSubscriber", str(properties), TOPICS["versions"]],
            check=False,
            capture_output=True,
            text=True,
            timeout=90,
        )

    return subscribe


def python_sdk_reading(record: Any) -> dict[str, Any]:
    """What the Python ``cloudevents`` SDK reads from the same record, in the Java subscriber's terms."""
    event = from_binary(KafkaMessage(dict(record.headers), record.key, record.value), JSONFormat())
    attrs = event.get_attributes()
    time = event.get_time()
    assert isinstance(time, datetime)
    return {
        "partition": record.partition,
        "offset": record.offset,
        "specversion": event.get_specversion(),
        "id": event.get_id(),
        "source": event.get_source(),
        "type": event.get_type(),
        "time": time,
        "datacontenttype": event.get_datacontenttype(),
        "dataschema": event.get_dataschema(),
        "subject": event.get_subject(),
        "extensions": {k: str(v) for k, v in attrs.items() if k not in REQUIRED_AND_OPTIONAL},
        "data_length": len(record.value),
    }


REQUIRED_AND_OPTIONAL = {"specversion", "id", "source", "type", "time", "datacontenttype", "dataschema", "subject"}


def java_sdk_reading(line: str) -> dict[str, Any]:
    e = json.loads(line)
    e["time"] = datetime.fromisoformat(e["time"])  # compared as instants: both are RFC 3339, digits may differ
    return dict(e)


def test_every_version_notification_deserialises_with_the_cloudevents_java_sdk(
    pipeline: Pipeline, java_subscribe: Callable[[], subprocess.CompletedProcess[str]]
) -> None:
    base = 600_000 + uuid.uuid4().int % 10_000 * 10
    before_version = pipeline.latest_version(DATASET)
    before = pipeline.metric("normalise", "odc_events_received_total")
    pipeline.produce_events([toilet_event(str(base + i), seq=1, adresse=f"java sdk {i}") for i in range(2)])
    pipeline.settle(DATASET, before, 2)
    latest = wait_for("a new version", lambda: (v := pipeline.latest_version(DATASET)) > before_version and v)

    def with_the_new_version() -> list[Any] | None:
        rs = pipeline.read_topic(TOPICS["versions"])
        return rs if any(dict(r.headers).get("ce_id") == f"{DATASET}:v{latest}".encode() for r in rs) else None

    records = wait_for("the new version on Kafka", with_the_new_version)

    done = java_subscribe()
    failures = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert not failures and done.returncode == 0, (failures or done.stdout[-3000:], done.stderr[-3000:])
    print(done.stdout)  # what the SDK read (pytest -s shows it)
    java = {(e["partition"], e["offset"]): e for e in map(java_sdk_reading, done.stdout.splitlines())}
    python = {(r.partition, r.offset): python_sdk_reading(r) for r in records}
    assert java.keys() >= python.keys()  # every record, and the same reading in both SDKs
    assert {k: java[k] for k in python} == python

    publish_api = pipeline.services["publish"].base_url
    for e in java.values():  # what docs/api.md and the AsyncAPI document say
        dataset, version = e["id"].rsplit(":v", 1)
        assert e["specversion"] == "1.0" and e["type"] == EVENT_TYPE and e["subject"] == dataset
        assert e["datacontenttype"] == CONTENT_TYPE and e["data_length"] > 0
        assert e["source"] == "urn:odc:publish"
        assert e["dataschema"].split("://", 1)[0] in ("http", "https") and e["dataschema"].endswith(f"/{DATASCHEMA}")
        assert e["extensions"] == {"partitionkey": dataset, "sequence": sequence(int(version))}
        assert e["time"].utcoffset() is not None
    mine = [e for e in java.values() if e["id"] == f"{DATASET}:v{latest}"]
    assert len(mine) == 1 and mine[0]["dataschema"] == f"{publish_api}/{DATASCHEMA}"
    assert set(mine[0]["extensions"]) == DOCUMENTED_EXTENSIONS
