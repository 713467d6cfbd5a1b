"""Honest answers in an outage, on a real broker and a real PostGIS of their own (stopped and started here,
never the session-wide ones), with the three services as processes (issue #13, point 4):

- broker stopped: the push API answers 503 + Retry-After within its bound (the HTTP client's timeout fails a
  hang), every service's /readyz is 503; after the broker is back, 202 again and /readyz 200; the records of
  the requests answered 503 never reach the input topic (this fails if the publisher keeps its buffer); an
  ingest service started while the broker is down starts and answers 503 too;
- database stopped: the same, 503 (never a bare 500), then 202 after recovery;
- a 3 MB attribute under the 5 MB body limit: 202 with that record refused (``record_too_large``), never 503;
- ``odc send`` with the broker down from the start: exit code 1, one line saying what was and was not sent,
  no traceback and no client log flood.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.local.kafka import KafkaBroker
from deploy.local.ports import free_port
from deploy.local.postgres import PostgresCluster
from services.contract.codecs import Codecs
from services.contract.size_limits import MAX_RECORD_BYTES
from services.infrastructure.api_tokens import PostgresTokenStore, create_api_token_schema
from services.infrastructure.database import make_engine
from tests.conftest import postgres_data_dir
from tests.integration.pipeline_harness import TOPICS, Pipeline, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
URL = "/v1/datasets/public_toilets/changes"
POINT = {"type": "Point", "coordinates": [4.8800, 45.7700]}
ANSWER_WITHIN = 4.0  # ODC_INGEST_ANSWER_TIMEOUT_SECONDS for this stack
HANG = ANSWER_WITHIN + 11  # the HTTP client gives up here: a hang fails the test, it measures nothing


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, str]]:
    broker = KafkaBroker(tmp_path_factory.mktemp("okafka"), free_port(), free_port())
    broker.start(timeout=120)
    pg_root = postgres_data_dir("outage-pg")
    db = PostgresCluster(pg_root, free_port())
    try:
        db.start(timeout=120)
        p = Pipeline(broker, db, tmp_path_factory.mktemp("oservices"))
        try:
            p.start(
                extra_env={
                    "ODC_INGEST_ANSWER_TIMEOUT_SECONDS": str(ANSWER_WITHIN),
                    "ODC_INGEST_PUBLISH_TIMEOUT_SECONDS": "2",
                    "ODC_INGEST_RETRY_AFTER_SECONDS": "3",
                }
            )

            async def token() -> str:
                engine = make_engine(db.dsn, pool_size=1)
                try:
                    await create_api_token_schema(engine)
                    return (await PostgresTokenStore(engine).issue("69266", "outage tests"))[1]
                finally:
                    await engine.dispose()

            yield p, asyncio.run(token())
        finally:
            p.stop()
    finally:
        if db.is_running():
            db.stop()
        shutil.rmtree(pg_root, ignore_errors=True)
        if broker.is_running():
            broker.stop()


def push(p: Pipeline, token: str, feature_ids: list[str], key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    records = [{"gid": f, "adresse": "Place Lazare Goujon", "geometry": POINT} for f in feature_ids]
    return httpx.post(f"{p.services['ingest'].base_url}{URL}", json={"records": records}, headers=headers, timeout=HANG)


def readiness(p: Pipeline) -> dict[str, int]:
    return {name: httpx.get(f"{svc.base_url}/readyz", timeout=HANG).status_code for name, svc in p.services.items()}


def healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def input_feature_ids(p: Pipeline) -> set[str]:
    codecs = Codecs()
    # either form: the push API sends bulk messages (change_event_batch) by default
    return {
        ev.feature_id
        for r in p.read_topic(TOPICS["input"], timeout=20)
        for ev in codecs.decode_change_events(r.value).events
    }


def assert_outage_answer(r: httpx.Response, error: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "3"
    assert r.json()["error"] == error


def test_a_3_mb_attribute_under_the_body_limit_is_refused_at_once_not_503(outage_stack: tuple[Pipeline, str]) -> None:
    p, token = outage_stack
    records = [
        {"gid": "too-large", "adresse": "x" * 3_000_000, "geometry": POINT},
        {"gid": "beside-too-large", "adresse": "Place Lazare Goujon", "geometry": POINT},
    ]
    r = httpx.post(
        f"{p.services['ingest'].base_url}{URL}",
        json={"records": records},
        headers={"Authorization": f"Bearer {token}"},
        timeout=HANG,
    )
    assert r.status_code == 202, r.text[:500]
    [refused] = r.json()["refused"]
    assert refused["reason"] == "record_too_large" and str(MAX_RECORD_BYTES) in refused["message"]
    assert [a["feature_id"] for a in r.json()["accepted"]] == ["beside-too-large"]
    published = input_feature_ids(p)
    assert "beside-too-large" in published and "too-large" not in published


def test_broker_stopped_503_with_retry_after_readyz_503_then_202_and_503d_records_never_published(
    outage_stack: tuple[Pipeline, str],
) -> None:
    p, token = outage_stack
    assert push(p, token, ["before-broker-outage"]).status_code == 202
    wait_for("every service ready", lambda: set(readiness(p).values()) == {200}, 60)

    p.broker.stop()
    refused = [f"broker-outage-{i}" for i in range(6)]
    assert_outage_answer(push(p, token, refused[:3], key="outage-key-1"), "broker_unavailable")
    assert_outage_answer(push(p, token, refused[3:]), "broker_unavailable")  # the second, on a fresh producer
    wait_for(
        "every /readyz to say 503", lambda: readiness(p) == dict.fromkeys(("ingest", "normalise", "publish"), 503), 30
    )

    p.broker.start(timeout=120)
    wait_for("a 202 after the broker is back", lambda: push(p, token, ["after-broker"]).status_code == 202, 90)
    wait_for("every service ready again", lambda: set(readiness(p).values()) == {200}, 120)
    published = input_feature_ids(p)
    assert {"before-broker-outage", "after-broker"} <= published  # the topic is read past the outage
    assert published.isdisjoint(refused), "records of requests answered 503 were published"

    # an ingest service started while the broker is down starts, says not ready, and answers 503 too
    p.broker.stop()
    ingest = p.services["ingest"]
    ingest.stop()
    ingest.start()
    wait_for("ingest answering without a broker", lambda: healthy(ingest.base_url), 90)
    assert_outage_answer(push(p, token, ["restarted-outage"]), "broker_unavailable")
    assert readiness(p)["ingest"] == 503
    p.broker.start(timeout=120)
    wait_for("a 202 after the broker is back", lambda: push(p, token, ["after-restart"]).status_code == 202, 90)
    wait_for("every service ready again", lambda: set(readiness(p).values()) == {200}, 120)
    published = input_feature_ids(p)
    assert "after-restart" in published and "restarted-outage" not in published


def test_database_stopped_503_with_retry_after_never_500_then_202(outage_stack: tuple[Pipeline, str]) -> None:
    p, token = outage_stack
    wait_for("every service ready", lambda: set(readiness(p).values()) == {200}, 120)
    p.db.stop()
    try:
        for i in range(3):
            assert_outage_answer(push(p, token, [f"db-outage-{i}"]), "database_unavailable")
        status = httpx.get(
            f"{p.services['ingest'].base_url}/v1/communes/69266/status",
            headers={"Authorization": f"Bearer {token}"},
            timeout=HANG,
        )
        assert_outage_answer(status, "database_unavailable")
        wait_for(
            "every /readyz to say 503",
            lambda: readiness(p) == dict.fromkeys(("ingest", "normalise", "publish"), 503),
            30,
        )
    finally:
        p.db.start(timeout=120)
    wait_for("a 202 after the database is back", lambda: push(p, token, ["after-db"]).status_code == 202, 90)
    wait_for("every service ready again", lambda: set(readiness(p).values()) == {200}, 120)
    assert not {f"db-outage-{i}" for i in range(3)} & input_feature_ids(p)


def test_odc_send_with_the_broker_down_from_the_start_exits_1_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    key_file = tmp_path / "villeurbanne.key"
    key_file.write_text(json.dumps({"key_id": str(uuid.uuid4()), "secret": "00" * 32, "commune": "69266"}))
    env = {
        **os.environ,
        "ODC_INGEST_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # nothing listens there
        "ODC_INGEST_KAFKA_PASSWORD": "never-checked",  # credentials are present; the broker is what is missing
        "ODC_INGEST_SEND_RETRY_SECONDS": "3",
    }
    done = subprocess.run(
        [
            *(sys.executable, "-m", "services.cli.main", "send", str(REPO / "samples/grandlyon/toilettes.geojson")),
            *("--dataset", "public_toilets", "--commune", "69266", "--key-file", str(key_file)),
        ],
        check=False,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 4, output
    assert "Traceback" not in output and "aiokafka" not in output
    lines = output.splitlines()
    assert len(lines) == 1, output
    assert "unreachable" in lines[0] and "sent 0 of 480 events; 480 not sent" in lines[0]
