"""Webhook rules (signature, retry schedule, target refusal) and the delivery handler with fakes of our
own ports: in order per subscription, retried with backoff, dead-lettered after the last attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.publish.domain.webhooks import (
    AttemptResult,
    DeliveryDecision,
    DeliveryState,
    RetryPolicy,
    TargetRefused,
    backoff_delay,
    check_target_addresses,
    check_url_shape,
    decide,
    refused_address,
    signature_header,
    standard_signature,
    verify_signature,
)
from services.publish.service_layer.ports import ClaimedDelivery, NewSubscription
from services.publish.service_layer.webhooks import (
    DeliveryDispatcher,
    InvalidSubscription,
    deliver_due,
    register_subscription,
)

T0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
SECRET = "0123456789abcdef-secret"


# -- signatures ----------------------------------------------------------------------------------------


@given(st.binary(max_size=500), st.integers(min_value=1_000_000_000, max_value=4_000_000_000))
def test_a_signature_verifies_and_any_change_breaks_it(body: bytes, ts: int) -> None:
    header = signature_header(SECRET, ts, body)
    assert verify_signature(SECRET, header, body, ts)
    assert not verify_signature(SECRET + "x", header, body, ts)
    assert not verify_signature(SECRET, header, body + b"x", ts)
    assert not verify_signature(SECRET, header.replace(f"t={ts}", f"t={ts + 1}"), body, ts)


@pytest.mark.parametrize(("skew", "ok"), [(0, True), (299, True), (-300, True), (301, False), (-3600, False)])
def test_signatures_outside_the_tolerance_window_are_replays(skew: int, ok: bool) -> None:
    header = signature_header(SECRET, 1_800_000_000, b"{}")
    assert verify_signature(SECRET, header, b"{}", 1_800_000_000 + skew) is ok


@pytest.mark.parametrize("header", ["", "t=abc,v1=00", "v1=00", "t=1800000000", "garbage"])
def test_malformed_signature_headers_do_not_verify(header: str) -> None:
    assert not verify_signature(SECRET, header, b"{}", 1_800_000_000)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), b'1800000000.{"a":1}', hashlib.sha256).hexdigest()
    assert signature_header(SECRET, 1_800_000_000, b'{"a":1}') == f"t=1800000000,v1={expected}"


# -- retries ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "jitter", "delay"), [(1, 0.0, 0.5), (1, 0.999999, 1.0), (2, 0.0, 1.0), (3, 0.0, 2.0), (30, 0.0, 300.0)]
)
def test_backoff_is_exponential_capped_with_jitter(attempts: int, jitter: float, delay: float) -> None:
    assert backoff_delay(RetryPolicy(10, 1.0, 600.0), attempts, jitter) == pytest.approx(delay, rel=1e-5)


@pytest.mark.parametrize(
    ("result", "before", "state", "attempts"),
    [
        (AttemptResult(200), 0, DeliveryState.DELIVERED, 1),
        (AttemptResult(204), 4, DeliveryState.DELIVERED, 5),
        (AttemptResult(500, "HTTP 500"), 0, DeliveryState.PENDING, 1),
        (AttemptResult(None, "ConnectError"), 3, DeliveryState.PENDING, 4),
        (AttemptResult(404, "HTTP 404"), 4, DeliveryState.DEAD, 5),
        (AttemptResult(None, "timeout"), 4, DeliveryState.DEAD, 5),
    ],
)
def test_decide(result: AttemptResult, before: int, state: DeliveryState, attempts: int) -> None:
    d = decide(result, before, RetryPolicy(5, 1.0, 60.0), T0, 0.0)
    assert (d.state, d.attempts) == (state, attempts)
    assert (d.next_attempt_at is not None) == (state is DeliveryState.PENDING)
    if d.next_attempt_at is not None:
        assert d.next_attempt_at > T0


# -- targets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refused_address(address) is not None
    with pytest.raises(TargetRefused):
        check_target_addresses([address], allow_private=False)
    check_target_addresses([address], allow_private=True)


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700:4700::1111"])
def test_public_addresses_are_accepted(address: str) -> None:
    assert refused_address(address) is None
    check_target_addresses([address], allow_private=False)


@pytest.mark.parametrize(
    "url", ["ftp://x.org/", "http:///nohost", "https://user:pw@x.org/", "http://x.org:99999/", "file:///etc/passwd"]
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url_shape(url)


def test_a_host_that_resolves_to_nothing_is_refused() -> None:
    with pytest.raises(TargetRefused):
        check_target_addresses([], allow_private=True)


# -- the handler, with fakes of our ports -------------------------------------------------------------


@dataclass
class FakeDelivery:
    id: int
    subscription_id: str
    event_id: str
    state: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime = T0


@dataclass
class FakeWorld:
    subscriptions: dict[str, NewSubscription] = field(default_factory=dict)
    deliveries: list[FakeDelivery] = field(default_factory=list)


class FakeStore:
    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        self.staged: list[tuple[int, DeliveryDecision]] = []
        self.staged_subs: list[NewSubscription] = []

    async def __aenter__(self) -> FakeStore:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def _head(self, sid: str) -> FakeDelivery | None:
        return next((d for d in self.world.deliveries if d.subscription_id == sid and d.state == "pending"), None)

    async def due_subscriptions(self, now: datetime, limit: int) -> list[str]:
        return [s for s in self.world.subscriptions if (h := self._head(s)) is not None and h.next_attempt_at <= now]

    async def claim_head(self, subscription_id: str, now: datetime) -> ClaimedDelivery | None:
        h = self._head(subscription_id)
        if h is None or h.next_attempt_at > now:
            return None
        s = self.world.subscriptions[subscription_id]
        return ClaimedDelivery(
            h.id, s.id, s.url, s.secret, h.event_id, "d", h.id, h.attempts, f'{{"n":{h.id}}}'.encode()
        )

    async def record_attempt(
        self, delivery_id: int, decision: DeliveryDecision, result: AttemptResult, now: datetime
    ) -> None:
        self.staged.append((delivery_id, decision))

    async def add_subscription(self, s: NewSubscription) -> None:
        self.staged_subs.append(s)

    async def commit(self) -> None:
        for did, decision in self.staged:
            d = next(x for x in self.world.deliveries if x.id == did)
            d.state, d.attempts = decision.state.value, decision.attempts
            if decision.next_attempt_at is not None:
                d.next_attempt_at = decision.next_attempt_at
        for s in self.staged_subs:
            self.world.subscriptions[s.id] = s
        self.staged, self.staged_subs = [], []


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> datetime:
        return self.t


class Receiver:
    """Answers with the queued statuses (then 200), recording what it received."""

    def __init__(self, statuses: list[int | None]) -> None:
        self.statuses = statuses
        self.received: list[tuple[str, bytes, dict[str, str]]] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
        status = self.statuses.pop(0) if self.statuses else 200
        if status is None:
            return AttemptResult(None, "ConnectError")
        self.received.append((url, body, headers))
        return AttemptResult(status, None if status < 300 else f"HTTP {status}")


class Resolver:
    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int) -> list[str]:
        return self.addresses


def world_with(n: int) -> FakeWorld:
    w = FakeWorld()
    w.subscriptions["s1"] = NewSubscription("s1", "https://hooks.example.org/x", None, SECRET, "", T0)
    w.deliveries = [FakeDelivery(i, "s1", f"d:v{i}") for i in range(1, n + 1)]
    return w


async def run_until_idle(
    w: FakeWorld, receiver: Receiver, clock: Clock, policy: RetryPolicy, rounds: int = 200
) -> None:
    for _ in range(rounds):
        await deliver_due(
            store_factory=lambda: FakeStore(w),
            sender=receiver,
            resolver=Resolver(["93.184.215.14"]),
            clock=clock,
            policy=policy,
            jitter=lambda: 0.5,
            allow_private=False,
            monotonic=lambda: 0.0,
        )
        clock.t += timedelta(seconds=1)
        if all(d.state != "pending" for d in w.deliveries):
            return


async def test_a_receiver_down_for_a_while_gets_everything_in_order_each_signed() -> None:
    w = world_with(4)
    receiver = Receiver([None, None, 503, None, 500])  # down for five attempts, then back
    clock = Clock()
    await run_until_idle(w, receiver, clock, RetryPolicy(10, 1.0, 4.0))
    assert [d.state for d in w.deliveries] == ["delivered"] * 4
    bodies = [b for _, b, _ in receiver.received if b]
    assert bodies[-4:] == [b'{"n":1}', b'{"n":2}', b'{"n":3}', b'{"n":4}']
    _, body, headers = receiver.received[-1]
    ts = int(headers["webhook-timestamp"])
    assert 0 <= clock.t.timestamp() - ts <= 1 and headers["webhook-id"] == "d:v4"
    assert headers["webhook-signature"] == standard_signature(SECRET, "d:v4", ts, body)
    assert "X-Odc-Signature" not in headers  # not a legacy subscription
    assert headers["X-Odc-Event-Id"] == "d:v4" and headers["Content-Type"].startswith("application/cloudevents+json")
    assert w.deliveries[0].attempts == 6 and all(d.attempts == 1 for d in w.deliveries[1:])


async def test_after_the_last_attempt_a_delivery_is_dead_and_the_next_one_goes() -> None:
    w = world_with(2)
    receiver = Receiver([500, 500, 500])
    await run_until_idle(w, receiver, Clock(), RetryPolicy(3, 1.0, 1.0))
    assert [(d.state, d.attempts) for d in w.deliveries] == [("dead", 3), ("delivered", 1)]


async def test_a_delivery_is_not_attempted_before_its_backoff_is_over() -> None:
    w = world_with(1)
    receiver = Receiver([500])
    clock = Clock()
    kwargs = dict(
        store_factory=lambda: FakeStore(w),
        sender=receiver,
        resolver=Resolver(["93.184.215.14"]),
        clock=clock,
        policy=RetryPolicy(5, 10.0, 60.0),
        jitter=lambda: 0.0,
        allow_private=False,
        monotonic=lambda: 0.0,
    )
    assert len(await deliver_due(**kwargs)) == 1  # type: ignore[arg-type]
    clock.t += timedelta(seconds=4)
    assert await deliver_due(**kwargs) == []  # type: ignore[arg-type]
    clock.t += timedelta(seconds=2)
    (outcome,) = await deliver_due(**kwargs)  # type: ignore[arg-type]
    assert outcome.decision.state is DeliveryState.DELIVERED


async def test_a_target_that_now_resolves_to_a_private_address_is_not_called() -> None:
    w = world_with(1)
    receiver = Receiver([])
    (outcome,) = await deliver_due(
        store_factory=lambda: FakeStore(w),
        sender=receiver,
        resolver=Resolver(["10.0.0.5"]),
        clock=Clock(),
        policy=RetryPolicy(3, 1.0, 1.0),
        jitter=lambda: 0.0,
        allow_private=False,
        monotonic=lambda: 0.0,
    )
    assert receiver.received == [] and outcome.result.error and "private" in outcome.result.error


@pytest.mark.parametrize(
    ("url", "datasets", "secret", "addresses", "message"),
    [
        ("https://x.org/h", ["nope"], None, ["93.184.215.14"], "unknown datasets"),
        ("https://x.org/h", [], None, ["93.184.215.14"], "at least one"),
        ("https://x.org/h", None, "short-but-not-whsec", ["93.184.215.14"], "whsec_"),
        ("https://x.org/h", None, "whsec_c2hvcnQ=", ["93.184.215.14"], "24 to 64 bytes"),
        ("https://x.org/h", None, "whsec_not base64!", ["93.184.215.14"], "not base64"),
        ("https://x.org/h", None, None, ["127.0.0.1"], "loopback"),
        ("gopher://x.org/h", None, None, ["93.184.215.14"], "http"),
    ],
)
async def test_register_refuses(
    url: str, datasets: list[str] | None, secret: str | None, addresses: list[str], message: str
) -> None:
    w = FakeWorld()
    with pytest.raises(InvalidSubscription, match=message):
        await register_subscription(
            url,
            datasets,
            secret,
            "",
            known_datasets={"public_toilets"},
            store_factory=lambda: FakeStore(w),
            resolver=Resolver(addresses),
            allow_private=False,
            clock=Clock(),
            new_id=lambda: "id",
            new_secret=lambda: "g" * 32,
        )
    assert w.subscriptions == {}


async def test_register_stores_the_subscription_with_a_generated_secret() -> None:
    w = FakeWorld()
    sub = await register_subscription(
        "https://x.org/h",
        ["public_toilets"],
        None,
        "mine",
        known_datasets={"public_toilets"},
        store_factory=lambda: FakeStore(w),
        resolver=Resolver(["93.184.215.14"]),
        allow_private=False,
        clock=Clock(),
        new_id=lambda: "id1",
        new_secret=lambda: "g" * 32,
    )
    assert w.subscriptions["id1"] == sub and sub.secret == "g" * 32 and sub.datasets == ("public_toilets",)


# -- the dispatcher: subscriptions do not wait for each other -----------------------------------------


class HeldReceiver:
    """Answers 200 at once, except for ``held_url``: those requests wait until ``release`` is set (a
    receiver slower than any timeout). Records the order in which deliveries were answered."""

    def __init__(self, held_url: str) -> None:
        self.held_url = held_url
        self.release = asyncio.Event()
        self.answered: list[tuple[str, bytes]] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
        if url == self.held_url:
            await self.release.wait()
        self.answered.append((url, body))
        return AttemptResult(200, None)


async def test_a_held_receiver_does_not_hold_back_another_subscription() -> None:
    w = FakeWorld()
    for sid in ("slow", "fast"):
        w.subscriptions[sid] = NewSubscription(sid, f"https://{sid}.example.org/h", None, SECRET, "", T0)
    w.deliveries = [FakeDelivery(i, "slow" if i <= 3 else "fast", f"d:v{i}") for i in range(1, 7)]
    receiver = HeldReceiver("https://slow.example.org/h")
    dispatcher = DeliveryDispatcher(
        store_factory=lambda: FakeStore(w),
        sender=receiver,
        resolver=Resolver(["93.184.215.14"]),
        clock=Clock(),
        policy=RetryPolicy(3, 1.0, 1.0),
        jitter=lambda: 0.0,
        allow_private=False,
        monotonic=lambda: 0.0,
    )

    async def run_until(done: Callable[[], bool]) -> None:
        while not done():
            await dispatcher.tick()
            await dispatcher.wait(0.01)

    try:
        # bounded by wait_for: with rounds that wait for every attempt, this never finishes
        await asyncio.wait_for(
            run_until(lambda: all(d.state == "delivered" for d in w.deliveries if d.subscription_id == "fast")), 10
        )
        assert [u for u, _ in receiver.answered] == ["https://fast.example.org/h"] * 3
        assert dispatcher.in_flight == {"slow"}  # its first attempt is still waiting for an answer
        receiver.release.set()
        await asyncio.wait_for(run_until(lambda: all(d.state == "delivered" for d in w.deliveries)), 10)
    finally:
        await dispatcher.close()
    slow = [b for u, b in receiver.answered if u == "https://slow.example.org/h"]
    assert slow == [b'{"n":1}', b'{"n":2}', b'{"n":3}']  # in order, once each
