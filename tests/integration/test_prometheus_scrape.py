"""Operations end to end: a real Prometheus server (Debian package) scrapes the three running services
and, through its HTTP API, the key series exist and move when events flow; the alert rules load."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from deploy.local.ports import free_port
from deploy.local.prometheus import PrometheusServer
from tests.integration.pipeline_harness import Pipeline, toilet_event, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prometheus(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    targets = {name: f"127.0.0.1:{svc.port}" for name, svc in pipeline.services.items()}
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), free_port(), targets)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def value(result: list[dict]) -> float:  # type: ignore[type-arg]
    return sum(float(r["value"][1]) for r in result)


def test_prometheus_scrapes_every_service(prometheus: PrometheusServer) -> None:
    up = wait_for(
        "all three services scraped and up",
        lambda: (
            (r := prometheus.query('up{job=~"odc-.*"}')) and len(r) == 3 and all(x["value"][1] == "1" for x in r) and r
        ),
        60,
    )
    assert {r["metric"]["job"] for r in up} == {"odc-ingest", "odc-normalise", "odc-publish"}


def test_key_series_exist_and_move_when_events_flow(pipeline: Pipeline, prometheus: PrometheusServer) -> None:
    # A labelled counter has no series before its first event, so "scraped" is read from `up`; run alone, the
    # baselines below are then 0 (no series yet), after earlier modules they are whatever those sent.
    for job in ("odc-normalise", "odc-publish"):
        wait_for(
            f"a first scrape of {job}",
            lambda job=job: [r for r in prometheus.query(f'up{{job="{job}"}}') if r["value"][1] == "1"],
            60,
        )
    received = value(prometheus.query("sum(odc_events_received_total)"))
    versions = value(prometheus.query("sum(odc_versions_published_total)"))
    before = pipeline.metric("normalise", "odc_events_received_total")
    tag = uuid.uuid4().hex[:6]
    pipeline.produce_events([toilet_event(f"{950_000 + i}", seq=1, adresse=f"prom {tag}") for i in range(25)])
    pipeline.settle("public_toilets", before, 25)
    wait_for(
        "odc_events_received_total to move in Prometheus",
        lambda: value(prometheus.query("sum(odc_events_received_total)")) >= received + 25,
        60,
    )
    wait_for(
        "odc_versions_published_total to move in Prometheus",
        lambda: value(prometheus.query("sum(odc_versions_published_total)")) > versions,
        60,
    )
    for series in (
        "odc_events_accepted_total",
        "odc_upsert_batch_duration_seconds_bucket",
        "odc_consumer_lag",
        "odc_outbox_relayed_total",
        "odc_service_ready",
        "odc_dataset_latest_version",
    ):
        assert prometheus.query(series), f"{series} is not in Prometheus"


def test_alert_rules_are_loaded_by_the_server(prometheus: PrometheusServer) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{prometheus.url}/api/v1/rules", timeout=5) as r:
        groups = json.loads(r.read())["data"]["groups"]
    names = {rule["name"] for g in groups for rule in g["rules"]}
    assert {
        "OdcServiceDown",
        "OdcConsumerLagHigh",
        "OdcRejectionRateHigh",
        "OdcVersionsStalled",
        "OdcWebhookDeadLetters",
    } <= names
    firing = [rule["name"] for g in groups for rule in g["rules"] if rule.get("state") == "firing"]
    assert "OdcServiceDown" not in firing
