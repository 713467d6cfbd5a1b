"""DNS rebinding: a webhook host that answers a public address when it is checked and 127.0.0.1 when the
HTTP client connects must not reach the loopback receiver. The sender (real httpx, real sockets, a real
HTTP server on 127.0.0.1) resolves and checks in the connection itself, with the resolver port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.publish.adapters.http_webhook_sender import HttpxWebhookSender
from services.publish.domain.webhooks import RetryPolicy
from services.publish.service_layer.ports import NewSubscription
from services.publish.service_layer.webhooks import DeliveryOutcome, deliver_due
from tests.unit.test_webhooks import T0, Clock, FakeDelivery, FakeStore, FakeWorld

PUBLIC = "93.184.216.34"


@dataclass
class LoopbackReceiver:
    """A real HTTP server on 127.0.0.1 recording the Host header of every request it gets."""

    hosts: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def start(self) -> None:
        received = self.hosts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(self.headers.get("Host", ""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[LoopbackReceiver]:
    r = LoopbackReceiver()
    r.start()
    yield r
    r.stop()


class RebindingResolver:
    """Our resolver port, answering like a rebinding DNS server: ``first`` once, then ``then``."""

    def __init__(self, first: list[str], then: list[str]) -> None:
        self.answers = [first]
        self.then = then
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.answers.pop(0) if self.answers else self.then


async def deliver(url: str, resolver: RebindingResolver, allow_private: bool) -> DeliveryOutcome:
    w = FakeWorld()
    w.subscriptions["s1"] = NewSubscription("s1", url, None, "s" * 32, "", T0)
    w.deliveries = [FakeDelivery(1, "s1", "public_toilets:v1")]
    sender = HttpxWebhookSender(5.0, resolver=resolver, allow_private=allow_private)
    try:
        (outcome,) = await deliver_due(
            store_factory=lambda: FakeStore(w),
            sender=sender,
            resolver=resolver,
            clock=Clock(),
            policy=RetryPolicy(3, 1.0, 1.0),
            jitter=lambda: 0.0,
            allow_private=allow_private,
            monotonic=lambda: 0.0,
        )
    finally:
        await sender.close()
    return outcome


async def test_a_host_rebound_to_loopback_after_the_check_is_not_connected_to(receiver: LoopbackReceiver) -> None:
    # "localhost" is what the system resolver would answer for the connection: 127.0.0.1, our receiver
    resolver = RebindingResolver([PUBLIC], ["127.0.0.1"])
    outcome = await deliver(f"http://localhost:{receiver.port}/hook", resolver, allow_private=False)
    assert receiver.hosts == [], "the loopback receiver was reached after the check passed"
    assert len(resolver.asked) == 2, "the connection did not resolve through the checked resolver"
    assert not outcome.result.succeeded and outcome.result.status is None
    assert outcome.result.error and "loopback" in outcome.result.error


async def test_control_the_same_receiver_is_reached_when_loopback_is_allowed(receiver: LoopbackReceiver) -> None:
    # proves the refusal above is the check, not an unreachable receiver
    outcome = await deliver(
        f"http://localhost:{receiver.port}/hook", RebindingResolver([PUBLIC], ["127.0.0.1"]), allow_private=True
    )
    assert outcome.result.succeeded and receiver.hosts == [f"localhost:{receiver.port}"]


async def test_the_connection_goes_to_the_checked_address_and_keeps_the_hostname(receiver: LoopbackReceiver) -> None:
    # a name the system cannot resolve (.invalid): only the checked address can have been used to connect
    resolver = RebindingResolver(["127.0.0.1"], ["127.0.0.1"])
    outcome = await deliver(f"http://hooks.odc.invalid:{receiver.port}/hook", resolver, allow_private=True)
    assert outcome.result.succeeded, outcome.result.error
    assert receiver.hosts == [f"hooks.odc.invalid:{receiver.port}"]  # Host header: the URL's name, not the IP
    assert resolver.asked == ["hooks.odc.invalid", "hooks.odc.invalid"]


@pytest.mark.parametrize("address", ["10.0.0.7", "169.254.169.254", "::1", "::ffff:127.0.0.1", "0.0.0.0"])
async def test_any_non_public_answer_at_connect_time_is_refused(receiver: LoopbackReceiver, address: str) -> None:
    resolver = RebindingResolver([PUBLIC], [address, "127.0.0.1"])
    outcome = await deliver(f"http://localhost:{receiver.port}/hook", resolver, allow_private=False)
    assert receiver.hosts == [] and outcome.result.error and "target refused" in outcome.result.error
