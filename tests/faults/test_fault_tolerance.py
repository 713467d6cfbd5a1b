"""Faults injected mid-stream on the real stack, each ending with a full reconciliation.

Tens of thousands of events per test; run with `make test-faults` (also part of `make test`)."""

from __future__ import annotations

import time

import psycopg
import pytest

from deploy.local.ports import free_port
from deploy.local.services import ServiceProcess, service_env
from services.publish.adapters.notification_outbox import NOTIFICATIONS_LOCK
from tests.faults.reconciliation import applied_count, reconcile, send_in_background, toilet_stream
from tests.integration.pipeline_harness import Pipeline, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
N = 20_000


def test_kill_9_of_the_normaliser_mid_stream_loses_nothing_and_applies_nothing_twice(fresh_pipeline: Pipeline) -> None:
    p = fresh_pipeline
    p.start()
    events = toilet_stream(N, "k9")
    sender = send_in_background(p, events)
    wait_for("a third of the stream applied", lambda: applied_count(p, "k9") >= N // 3, 300)
    p.services["normalise"].kill()
    killed_at = applied_count(p, "k9")
    assert killed_at < N, "the stream finished before the kill: the test proves nothing"
    p.start(("normalise",))
    sender.join()
    reconcile(p, events, "k9").assert_clean()
    # the restart re-read part of the stream: those redeliveries were recognised, not re-applied
    assert p.metric("normalise", "odc_events_received_total") > 0


def test_a_second_worker_takes_over_the_partitions_of_a_killed_one(fresh_pipeline: Pipeline) -> None:
    p = fresh_pipeline
    p.start()
    second = ServiceProcess("normalise", p.run_dir, free_port(), instance="b")
    second.env = service_env(
        "normalise",
        kafka_bootstrap=p.broker.bootstrap,
        kafka_access=p.broker.access,
        database_url=p.db.dsn,
        port=second.port,
    )
    second.start()
    second.wait_ready(120)
    try:
        events = toilet_stream(N, "tw")
        sender = send_in_background(p, events)
        wait_for(
            "both workers consuming",
            lambda: (
                p.metric("normalise", "odc_events_received_total") > 0
                and _metric(second, "odc_events_received_total") > 0
            ),
            300,
        )
        p.services["normalise"].kill()
        sender.join()
        reconcile(p, events, "tw").assert_clean()
        assert _metric(second, "odc_events_received_total") > 0
    finally:
        second.stop()


def test_broker_stopped_and_restarted_mid_stream(fresh_pipeline: Pipeline) -> None:
    p = fresh_pipeline
    p.start()
    first, second = toilet_stream(N // 2, "br1"), toilet_stream(N // 2, "br2")
    p.produce_events(first)
    wait_for("some of the stream applied", lambda: applied_count(p, "br1") >= N // 10, 300)
    p.broker.stop()
    time.sleep(5)
    p.broker.start(timeout=120)
    p.produce_events(second)
    reconcile(p, first, "br1").assert_clean()
    reconcile(p, second, "br2").assert_clean()
    for name in ("normalise", "publish"):
        assert p.services[name].is_running(), f"{name} died with the broker"


def test_database_down_for_half_a_minute_pauses_and_resumes_without_crashing(fresh_pipeline: Pipeline) -> None:
    p = fresh_pipeline
    p.start()
    pids = {name: p.services[name].pid() for name in ("normalise", "publish")}
    events = toilet_stream(N, "db")
    p.produce_events(events[: N // 2])
    wait_for("some of the stream applied", lambda: applied_count(p, "db") >= N // 10, 300)
    p.db.stop()
    sender = send_in_background(p, events[N // 2 :])
    time.sleep(30)
    assert p.services["normalise"].is_running() and p.services["normalise"].pid() == pids["normalise"]
    retries = p.metric("normalise", "odc_transient_failures_total")
    assert retries > 0, "the normaliser did not notice the database was down"
    assert retries < 200, f"{retries} retries in 30 s: backoff is not working"
    p.db.start(timeout=120)
    sender.join()
    reconcile(p, events, "db").assert_clean()
    assert {name: p.services[name].pid() for name in pids} == pids, "a service restarted instead of retrying"


def test_publisher_killed_between_a_version_and_its_notification(fresh_pipeline: Pipeline) -> None:
    p = fresh_pipeline
    p.start()
    # The relay sends a version as soon as it commits (woken by the outbox's NOTIFY, not a slow poll), so the
    # window to kill the publisher in is made by holding the notification relay's lock: versions commit, none
    # is sent until the lock goes with this session.
    with psycopg.connect(p.db.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (NOTIFICATIONS_LOCK,))
        events = toilet_stream(2_000, "pk")
        p.produce_events(events)
        wait_for(
            "a version committed but not yet notified",
            lambda: p.sql("SELECT count(*) FROM notification_outbox WHERE sent_at IS NULL")[0][0] > 0,
            120,
            every=0.02,
        )
        p.services["publish"].kill()
        assert p.sql("SELECT count(*) FROM notification_outbox WHERE sent_at IS NULL")[0][0] > 0
    p.start(("publish",))
    reconcile(p, events, "pk").assert_clean()


def _metric(svc: ServiceProcess, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{svc.base_url}/metrics", timeout=5) as resp:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in resp.read().decode().splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")
        )
