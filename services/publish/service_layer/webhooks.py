"""Webhook handlers: register a subscription; attempt the due deliveries (one at a time per subscription,
in order, signed; retried with backoff and jitter; dead-lettered after the last attempt). The dispatcher
keeps subscriptions independent: a slow or unreachable receiver holds back only its own queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from services.publish.domain.webhooks import (
    AttemptResult,
    BadSecret,
    DeliveryDecision,
    JitterSource,
    RetryPolicy,
    TargetRefused,
    check_standard_secret,
    check_target_addresses,
    check_url_shape,
    decide,
    delivery_signature_headers,
)
from services.publish.service_layer.ports import (
    AddressResolver,
    Clock,
    DeliveryStoreFactory,
    NewSubscription,
    WebhookSender,
)

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


class InvalidSubscription(ValueError):
    pass


@dataclass(frozen=True)
class DeliveryOutcome:
    delivery_id: int
    subscription_id: str
    event_id: str
    dataset: str
    version: int
    result: AttemptResult
    decision: DeliveryDecision
    seconds: float


async def check_target(url: str, resolver: AddressResolver, allow_private: bool) -> None:
    host, port = check_url_shape(url)
    try:
        addresses = await resolver.resolve(host, port)
    except OSError as exc:
        raise TargetRefused(f"the host does not resolve ({exc.strerror or exc})") from exc
    check_target_addresses(addresses, allow_private)


async def register_subscription(
    url: str,
    datasets: Iterable[str] | None,
    secret: str | None,
    description: str,
    *,
    known_datasets: set[str],
    store_factory: DeliveryStoreFactory,
    resolver: AddressResolver,
    allow_private: bool,
    clock: Clock,
    new_id: Callable[[], str],
    new_secret: Callable[[], str],
) -> NewSubscription:
    filter_ = None if datasets is None else tuple(sorted(set(datasets)))
    if filter_ is not None:
        unknown = sorted(set(filter_) - known_datasets)
        if unknown:
            raise InvalidSubscription(f"unknown datasets: {', '.join(unknown)}")
        if not filter_:
            raise InvalidSubscription("datasets must name at least one dataset, or be omitted for all")
    if secret is not None:
        try:
            check_standard_secret(secret)
        except BadSecret as bad:
            raise InvalidSubscription(str(bad)) from bad
    try:
        await check_target(url, resolver, allow_private)
    except TargetRefused as refused:
        raise InvalidSubscription(f"webhook URL refused: {refused}") from refused
    sub = NewSubscription(new_id(), url, filter_, secret or new_secret(), description[:500], clock.now())
    async with store_factory() as store:
        await store.add_subscription(sub)
        await store.commit()
    return sub


async def deliver_one(
    subscription_id: str,
    *,
    store_factory: DeliveryStoreFactory,
    sender: WebhookSender,
    resolver: AddressResolver,
    clock: Clock,
    policy: RetryPolicy,
    jitter: JitterSource,
    allow_private: bool,
    monotonic: Callable[[], float],
) -> DeliveryOutcome | None:
    """Attempt the head delivery of one subscription if it is due; None if nothing was due or another
    worker holds the subscription. The attempt and its outcome are one transaction."""
    async with store_factory() as store:
        d = await store.claim_head(subscription_id, clock.now())
        if d is None:
            return None
        started = monotonic()
        try:
            await check_target(d.url, resolver, allow_private)
        except TargetRefused as refused:
            result = AttemptResult(None, f"target refused: {refused}")
        else:
            timestamp = int(clock.now().timestamp())
            headers = {
                "Content-Type": CONTENT_TYPE,
                **delivery_signature_headers(d.event_id, timestamp, d.body, d.secrets, legacy=d.legacy_signature),
                "X-Odc-Event-Id": d.event_id,
                "X-Odc-Delivery-Id": str(d.id),
                "X-Odc-Delivery-Attempt": str(d.attempts + 1),
                "User-Agent": "odc-webhooks/1",
            }
            result = await sender.post(d.url, d.body, headers)
        now = clock.now()
        decision = decide(result, d.attempts, policy, now, jitter())
        await store.record_attempt(d.id, decision, result, now)
        await store.commit()
        return DeliveryOutcome(
            d.id, subscription_id, d.event_id, d.dataset, d.version, result, decision, monotonic() - started
        )


async def deliver_due(
    *,
    store_factory: DeliveryStoreFactory,
    sender: WebhookSender,
    resolver: AddressResolver,
    clock: Clock,
    policy: RetryPolicy,
    jitter: JitterSource,
    allow_private: bool,
    monotonic: Callable[[], float],
    max_subscriptions: int = 50,
) -> list[DeliveryOutcome]:
    """One round: every subscription with a due head delivery gets one attempt, concurrently across
    subscriptions (a slow receiver delays only its own deliveries); returns when all have finished."""
    dispatcher = DeliveryDispatcher(
        store_factory=store_factory,
        sender=sender,
        resolver=resolver,
        clock=clock,
        policy=policy,
        jitter=jitter,
        allow_private=allow_private,
        monotonic=monotonic,
        max_in_flight=max_subscriptions,
    )
    await dispatcher.start_due()
    await dispatcher.finish()
    return dispatcher.collect()


class DeliveryDispatcher:
    """Keeps at most one attempt in flight per subscription, each running on its own: a new attempt starts
    as soon as a subscription is due, without waiting for other subscriptions' attempts (a receiver that
    answers after the timeout would otherwise slow every subscriber's round down to its own pace).
    ``max_in_flight`` bounds the attempts running at once (each holds a database connection)."""

    def __init__(
        self,
        *,
        store_factory: DeliveryStoreFactory,
        sender: WebhookSender,
        resolver: AddressResolver,
        clock: Clock,
        policy: RetryPolicy,
        jitter: JitterSource,
        allow_private: bool,
        monotonic: Callable[[], float],
        max_in_flight: int = 4,
    ) -> None:
        self._store_factory = store_factory
        self._clock = clock
        self._max = max_in_flight
        self._tasks: dict[str, asyncio.Task[DeliveryOutcome | None]] = {}

        def attempt(subscription_id: str) -> Awaitable[DeliveryOutcome | None]:
            return deliver_one(
                subscription_id,
                store_factory=store_factory,
                sender=sender,
                resolver=resolver,
                clock=clock,
                policy=policy,
                jitter=jitter,
                allow_private=allow_private,
                monotonic=monotonic,
            )

        self._attempt = attempt

    @property
    def in_flight(self) -> set[str]:
        """Subscriptions with an attempt still running."""
        return {sid for sid, task in self._tasks.items() if not task.done()}

    async def tick(self) -> list[DeliveryOutcome]:
        """Collect the attempts that finished, then start one for each due subscription not already in
        flight; returns the outcomes collected. An attempt that raised (database down) raises here."""
        outcomes = self.collect()
        await self.start_due()
        return outcomes

    def collect(self) -> list[DeliveryOutcome]:
        """The outcomes of the attempts that finished (an attempt that raised raises here)."""
        outcomes: list[DeliveryOutcome] = []
        for sid in [sid for sid, task in self._tasks.items() if task.done()]:
            outcome = self._tasks.pop(sid).result()
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def start_due(self) -> None:
        """Start one attempt for each due subscription not already in flight, up to ``max_in_flight``."""
        free = self._max - len(self._tasks)
        if free > 0:
            async with self._store_factory() as store:
                due = await store.due_subscriptions(self._clock.now(), free + len(self._tasks))
            for sid in due:
                if sid not in self._tasks and len(self._tasks) < self._max:
                    self._tasks[sid] = asyncio.ensure_future(self._attempt(sid))

    async def finish(self) -> None:
        """Until every attempt in flight has finished (their outcomes stay to be collected)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks.values()))

    async def wait(self, timeout: float) -> None:
        """Until an attempt finishes, or ``timeout`` seconds."""
        if self._tasks:
            await asyncio.wait(set(self._tasks.values()), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.sleep(timeout)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
