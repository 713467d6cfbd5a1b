"""Webhook subscribers that are down, slow or answering 500, next to a healthy one, on the real stack.

Thousands of real events make many versions; four real HTTP receivers subscribe to them:
- healthy: answers 200 at once;
- down: not listening until its first deliveries have failed three times, then up;
- slow: answers only after the delivery timeout until the healthy one has every version, then at once;
- failing: answers 500 until at least one delivery is dead-lettered, then 200; the dead letters are then
  redelivered through the API.
Reconciliation: the pipeline's own (zero lost, zero twice, versions gap-free); every receiver ends with
every version, signed; delivery is at least once by design (a receiver that answers after the timeout
has processed a request the publisher counts as failed, so it is sent again): the slow receiver is
deduped by CloudEvents id, and then every receiver has every version exactly once, in version order
(the failing one: in order apart from its redelivered dead letters, themselves in order). The healthy
receiver is not held back: it has every version while the slow one is still behind (event order, not
timing)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from deploy.local.ports import free_port
from services.publish.domain.webhooks import standard_secret
from tests.faults.reconciliation import DATASET, reconcile, send_in_background, toilet_stream
from tests.integration.pipeline_harness import Pipeline, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
N = 3_000
TIMEOUT = 0.5  # the publisher's delivery timeout; the slow receiver answers after 3 x this
MAX_ATTEMPTS = 30  # >= 28 s of retries per delivery: longer than the slow and down phases last
ENV = {
    "ODC_PUBLISH_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",  # the receivers listen on 127.0.0.1
    "ODC_PUBLISH_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT),
    "ODC_PUBLISH_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
    "ODC_PUBLISH_WEBHOOK_BACKOFF_INITIAL_SECONDS": "0.2",
    "ODC_PUBLISH_WEBHOOK_BACKOFF_MAX_SECONDS": "1.0",
    "ODC_PUBLISH_WEBHOOK_INTERVAL_SECONDS": "0.05",
    "ODC_PUBLISH_MAX_DELAY_SECONDS": "0.5",  # a steady stream gets a version every half second: many versions
}


class Arrivals:
    """One sequence for every receiver: which receiver processed which event, in the order it happened."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.log: list[tuple[str, str]] = []

    def add(self, receiver: str, event_id: str) -> None:
        with self._lock:
            self.log.append((receiver, event_id))

    def position(self, receiver: str, event_id: str) -> int | None:
        with self._lock:
            return next((i for i, e in enumerate(self.log) if e == (receiver, event_id)), None)


@dataclass
class Seen:
    event_id: str
    status: int
    signed: bool
    timed_out: bool = False


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1. ``mode`` is read when a request arrives: ok, slow or fail."""

    name: str
    secret: str
    arrivals: Arrivals
    mode: str = "ok"
    port: int = field(default_factory=free_port)
    seen: list[Seen] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def accepted(self) -> list[str]:
        """Event ids this receiver processed (answered 200, even too late), in order."""
        return [s.event_id for s in list(self.seen) if s.status == 200]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mode = receiver.mode
                event_id = json.loads(body)["id"]
                try:  # Standard Webhooks, verified with the official library
                    Webhook(receiver.secret).verify(body, dict(self.headers.items()))
                    signed = self.headers.get("webhook-id") == event_id
                except WebhookVerificationError:
                    signed = False
                if mode == "slow":
                    time.sleep(3 * TIMEOUT)
                status = 500 if mode == "fail" else 200
                receiver.seen.append(Seen(event_id, status, signed, timed_out=mode == "slow"))
                if status == 200:
                    receiver.arrivals.add(receiver.name, event_id)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the publisher gave up waiting (slow mode): it will send again
                    pass

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name=f"receiver-{self.name}", daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    arrivals = Arrivals()
    rs = {
        name: Receiver(name, standard_secret(os.urandom(32)), arrivals, mode)
        for name, mode in (("healthy", "ok"), ("down", "ok"), ("slow", "slow"), ("failing", "fail"))
    }
    for name in ("healthy", "slow", "failing"):  # "down" is not listening yet
        rs[name].start()
    yield rs
    for r in rs.values():
        r.stop()


class Operator:
    """The API calls of an operator: subscriptions need the admin token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base = base_url
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(method, f"{self.base}{path}", headers=self.headers, timeout=30, **kw)
        assert r.status_code < 300, r.text
        return r.json()

    def subscribe(self, r: Receiver) -> str:
        body = {"url": r.url, "datasets": [DATASET], "secret": r.secret, "description": r.name}
        return str(self.call("POST", "/subscriptions", json=body)["id"])

    def state(self, sub: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/subscriptions/{sub}"))

    def deliveries(self, sub: str, state: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/subscriptions/{sub}/deliveries?state={state}&limit=1000")["deliveries"])


def in_order(ids: list[str]) -> bool:
    versions = [int(i.rsplit(":v", 1)[1]) for i in ids]
    return versions == sorted(versions)


def test_down_slow_and_failing_subscribers_get_every_version_and_do_not_hold_back_a_healthy_one(
    fresh_pipeline: Pipeline, receivers: dict[str, Receiver]
) -> None:
    p = fresh_pipeline
    p.start(extra_env=ENV)
    op = Operator(p.services["publish"].base_url, p.operator_token())
    subs = {name: op.subscribe(r) for name, r in receivers.items()}
    healthy, down, slow, failing = (receivers[n] for n in ("healthy", "down", "slow", "failing"))

    # the down receiver comes up after three failed attempts; the failing one recovers after a dead letter
    stop = threading.Event()
    problems: list[BaseException] = []

    def operate() -> None:
        try:
            while not stop.is_set() and (down.server is None or failing.mode == "fail"):
                if down.server is None:
                    pending = op.deliveries(subs["down"], "pending")
                    if pending and max(d["attempts"] for d in pending) >= 3:
                        down.start()
                if failing.mode == "fail" and op.state(subs["failing"])["deliveries"]["dead"] >= 1:
                    failing.mode = "ok"
                time.sleep(0.1)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            problems.append(error)

    operator_thread = threading.Thread(target=operate, name="operator", daemon=True)
    operator_thread.start()
    try:
        events = toilet_stream(N, "wh")
        # Pauses longer than the publisher's max delay (0.5 s) make at least one version per chunk however fast
        # the pipeline runs (at full speed 3,000 events in one stream gave only 3 versions).
        send_in_background(p, events, chunk=500, pause=2.5).join()
        rec = reconcile(p, events, "wh")
        rec.assert_clean()
        expected = [f"{DATASET}:v{v}" for v in rec.versions]
        assert len(expected) >= 5, f"only {len(expected)} versions: the test needs many"

        # the healthy receiver has every version while the slow one is still behind
        wait_for("the healthy receiver to have every version", lambda: healthy.accepted() == expected, 120)
        slow_had = set(slow.accepted())
        assert expected[-1] not in slow_had, "the slow receiver was not behind: the test proves nothing"
        assert any(s.timed_out for s in slow.seen), "the slow receiver never made the publisher time out"
        assert op.state(subs["slow"])["deliveries"]["dead"] == 0, (
            "the slow receiver's delivery was dead-lettered before the healthy one caught up (retry budget "
            "too short for this machine)"
        )
        slow.mode = "ok"

        operator_thread.join(timeout=180)
        assert not problems, problems
        assert down.server is not None and failing.mode == "ok", "the down/failing phases never ended"
        for name in ("healthy", "down", "slow"):
            wait_for(
                f"{name}: every delivery made",
                lambda name=name: (
                    op.state(subs[name])["deliveries"]
                    == {
                        "pending": 0,
                        "delivered": len(expected),
                        "dead": 0,
                    }
                ),
                180,
            )

        # dead letters: where the policy says (after MAX_ATTEMPTS attempts, each answered 500) ...
        wait_for(
            "the failing receiver's queue to drain",
            lambda: op.state(subs["failing"])["deliveries"]["pending"] == 0,
            180,
        )
        dead = op.deliveries(subs["failing"], "dead")
        dead_ids = sorted({d["event_id"] for d in dead}, key=lambda i: int(i.rsplit(":v", 1)[1]))
        assert dead_ids, "no delivery was dead-lettered"
        for d in dead:
            assert d["attempts"] == MAX_ATTEMPTS and d["last_status"] == 500
            assert sum(1 for s in failing.seen if s.event_id == d["event_id"] and s.status == 500) == MAX_ATTEMPTS
        assert p.metric("publish", "odc_webhook_attempts_total", outcome="dead") >= len(dead_ids)
        # ... and redelivered on request
        assert op.call("POST", f"/subscriptions/{subs['failing']}/redeliver") == {"requeued": len(dead_ids)}
        wait_for(
            "failing: every delivery made after the redelivery",
            lambda: op.state(subs["failing"])["deliveries"] == {"pending": 0, "delivered": len(expected), "dead": 0},
            180,
        )
    finally:
        stop.set()

    for r in receivers.values():
        assert all(s.signed for s in r.seen), f"{r.name}: a request whose signature does not verify"
    # exactly once, in order
    assert healthy.accepted() == expected
    assert down.accepted() == expected
    # at least once (a late answer is a failed attempt, so it is sent again), deduped by CloudEvents id
    got = slow.accepted()
    assert list(dict.fromkeys(got)) == expected
    duplicates = {i for i in got if got.count(i) > 1}
    assert duplicates <= {s.event_id for s in slow.seen if s.timed_out}, "a duplicate without a timeout"
    # failing: each version once; in order apart from the redelivered dead letters, in order themselves
    got = failing.accepted()
    assert sorted(got) == sorted(expected) and len(set(got)) == len(got)
    assert in_order([i for i in got if i not in dead_ids]) and in_order([i for i in got if i in dead_ids])
    # not held back: the healthy receiver had the last version before the slow one did
    healthy_last = healthy.arrivals.position("healthy", expected[-1])
    slow_last = slow.arrivals.position("slow", expected[-1])
    assert healthy_last is not None and slow_last is not None and healthy_last < slow_last
    assert not slow_had >= set(expected)
    print(  # the figures, for the record (pytest -s)
        f"\n{N} events, {len(expected)} versions; requests per receiver "
        f"{ {r.name: len(r.seen) for r in receivers.values()} }; slow: {sum(s.timed_out for s in slow.seen)} "
        f"timed out, {len(duplicates)} duplicates, had {len(slow_had)}/{len(expected)} when healthy had all; "
        f"failing: {len(dead_ids)} dead letters redelivered"
    )
