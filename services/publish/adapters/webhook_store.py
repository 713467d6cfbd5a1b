"""Webhook subscriptions and their deliveries in PostgreSQL: the per-subscription outbox, and the queries
that show each subscription's delivery state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.publish.domain.webhooks import AttemptResult, DeliveryDecision, DeliveryState
from services.publish.service_layer.ports import ClaimedDelivery, NewSubscription


class PostgresDeliveryStore:
    """One transaction per use (``async with``); rolled back unless committed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> PostgresDeliveryStore:
        self._conn = await self._engine.connect()
        await self._conn.begin()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        try:
            if self._conn.in_transaction():
                await self._conn.rollback()
        finally:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> AsyncConnection:
        assert self._conn is not None
        return self._conn

    async def due_subscriptions(self, now: datetime, limit: int) -> list[str]:
        rows = await self.conn.execute(
            text(
                "SELECT s.id FROM webhook_subscription s CROSS JOIN LATERAL (SELECT next_attempt_at FROM "
                "webhook_delivery d WHERE d.subscription_id = s.id AND d.state = 'pending' ORDER BY d.id LIMIT 1) h "
                "WHERE s.active AND h.next_attempt_at <= :now ORDER BY h.next_attempt_at LIMIT :n"
            ),
            {"now": now, "n": limit},
        )
        return [r[0] for r in rows]

    async def claim_head(self, subscription_id: str, now: datetime) -> ClaimedDelivery | None:
        locked = (
            await self.conn.execute(
                text(
                    "SELECT url, secret, CASE WHEN previous_secret_until > :now THEN previous_secret END AS previous, "
                    "legacy_signature FROM webhook_subscription WHERE id = :s AND active FOR UPDATE SKIP LOCKED"
                ),
                {"s": subscription_id, "now": now},
            )
        ).first()
        if locked is None:
            return None
        head = (
            await self.conn.execute(
                text(
                    "SELECT d.id, d.event_id, d.dataset, d.version, d.attempts, d.next_attempt_at, e.body "
                    "FROM webhook_delivery d JOIN version_event e ON e.dataset = d.dataset AND e.version = d.version "
                    "WHERE d.subscription_id = :s AND d.state = 'pending' ORDER BY d.id LIMIT 1"
                ),
                {"s": subscription_id},
            )
        ).first()
        if head is None or head.next_attempt_at > now:
            return None
        return ClaimedDelivery(
            head.id,
            subscription_id,
            locked.url,
            locked.secret,
            head.event_id,
            head.dataset,
            head.version,
            head.attempts,
            bytes(head.body),
            locked.previous,
            locked.legacy_signature,
        )

    async def record_attempt(
        self, delivery_id: int, decision: DeliveryDecision, result: AttemptResult, now: datetime
    ) -> None:
        await self.conn.execute(
            text(
                "UPDATE webhook_delivery SET state = :state, attempts = :attempts, "
                "next_attempt_at = COALESCE(:next, next_attempt_at), last_attempt_at = :now, last_status = :status, "
                "last_error = :error, delivered_at = CASE WHEN :state = 'delivered' THEN :now END WHERE id = :id"
            ),
            {
                "state": decision.state.value,
                "attempts": decision.attempts,
                "next": decision.next_attempt_at,
                "now": now,
                "status": result.status,
                "error": None if result.error is None else result.error[:500],
                "id": delivery_id,
            },
        )
        if decision.disable_subscription:
            await self.conn.execute(
                text(
                    "UPDATE webhook_subscription SET active = false, disabled_at = :now, disabled_reason = :reason "
                    "WHERE id = (SELECT subscription_id FROM webhook_delivery WHERE id = :id)"
                ),
                {"now": now, "reason": f"the receiver answered {result.status} Gone", "id": delivery_id},
            )

    async def add_subscription(self, s: NewSubscription) -> None:
        await self.conn.execute(
            text(
                "INSERT INTO webhook_subscription (id, url, datasets, secret, description, active, created_at, "
                "legacy_signature) VALUES (:id, :url, :datasets, :secret, :description, true, :created_at, false)"
            ),
            {
                "id": s.id,
                "url": s.url,
                "datasets": None if s.datasets is None else list(s.datasets),
                "secret": s.secret,
                "description": s.description,
                "created_at": s.created_at,
            },
        )

    async def commit(self) -> None:
        await self.conn.commit()


@dataclass(frozen=True)
class SubscriptionView:
    """A subscription and its delivery state (never its secret)."""

    id: str
    url: str
    datasets: list[str] | None
    description: str
    active: bool
    created_at: datetime
    pending: int
    delivered: int
    dead: int
    oldest_pending_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    last_delivered_event: str | None
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    previous_secret_until: datetime | None = None
    legacy_signature: bool = False

    def as_json(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat().replace("+00:00", "Z")

        return {
            "id": self.id,
            "url": self.url,
            "datasets": self.datasets,
            "description": self.description,
            "active": self.active,
            "created_at": iso(self.created_at),
            "deliveries": {"pending": self.pending, "delivered": self.delivered, "dead": self.dead},
            "oldest_pending_at": iso(self.oldest_pending_at),
            "last_attempt": {"at": iso(self.last_attempt_at), "status": self.last_status, "error": self.last_error},
            "last_delivered_event": self.last_delivered_event,
            # Standard Webhooks: a receiver's 410 Gone disables the subscription (enable it again with
            # POST .../enable); during a secret rotation the previous secret signs too until this time
            "disabled": None
            if self.disabled_at is None
            else {"at": iso(self.disabled_at), "reason": self.disabled_reason},
            "previous_secret_valid_until": iso(self.previous_secret_until),
            "signatures": ["webhook-signature", "X-Odc-Signature"] if self.legacy_signature else ["webhook-signature"],
        }


_VIEW_SQL = (
    "SELECT s.id, s.url, s.datasets, s.description, s.active, s.created_at, c.pending, c.delivered, c.dead, "
    "c.oldest_pending_at, l.last_attempt_at, l.last_status, l.last_error, ld.event_id, s.disabled_at, s.disabled_reason, "
    "CASE WHEN s.previous_secret_until > now() THEN s.previous_secret_until END, s.legacy_signature "
    "FROM webhook_subscription s "
    "LEFT JOIN LATERAL (SELECT count(*) FILTER (WHERE d.state = 'pending') AS pending, "
    "count(*) FILTER (WHERE d.state = 'delivered') AS delivered, count(*) FILTER (WHERE d.state = 'dead') AS dead, "
    "min(d.created_at) FILTER (WHERE d.state = 'pending') AS oldest_pending_at "
    "FROM webhook_delivery d WHERE d.subscription_id = s.id) c ON true "
    "LEFT JOIN LATERAL (SELECT x.last_attempt_at, x.last_status, x.last_error FROM webhook_delivery x "
    "WHERE x.subscription_id = s.id AND x.last_attempt_at IS NOT NULL ORDER BY x.last_attempt_at DESC, x.id DESC "
    "LIMIT 1) l ON true "
    "LEFT JOIN LATERAL (SELECT x.event_id FROM webhook_delivery x WHERE x.subscription_id = s.id "
    "AND x.state = 'delivered' ORDER BY x.id DESC LIMIT 1) ld ON true "
)


class PostgresSubscriptionQueries:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _views(self, where: str, params: dict[str, Any]) -> list[SubscriptionView]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(text(f"{_VIEW_SQL} {where} ORDER BY s.created_at, s.id"), params)).all()
        return [SubscriptionView(*r) for r in rows]

    async def subscriptions(self) -> list[SubscriptionView]:
        return await self._views("", {})

    async def subscription(self, subscription_id: str) -> SubscriptionView | None:
        views = await self._views("WHERE s.id = :id", {"id": subscription_id})
        return views[0] if views else None

    async def deliveries(self, subscription_id: str, state: DeliveryState | None, limit: int) -> list[dict[str, Any]]:
        cond = "" if state is None else "AND state = :state"
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT id, event_id, dataset, version, state, attempts, next_attempt_at, last_attempt_at, "
                        "last_status, last_error, delivered_at, created_at FROM webhook_delivery "
                        f"WHERE subscription_id = :s {cond} ORDER BY id DESC LIMIT :n"
                    ),
                    {"s": subscription_id, "state": None if state is None else state.value, "n": limit},
                )
            ).all()
        out = []
        for r in rows:
            d = dict(r._mapping)
            for k in ("next_attempt_at", "last_attempt_at", "delivered_at", "created_at"):
                d[k] = None if d[k] is None else d[k].isoformat().replace("+00:00", "Z")
            if d["state"] != DeliveryState.PENDING.value:
                d["next_attempt_at"] = None
            out.append(d)
        return out

    async def redeliver_dead(self, subscription_id: str, now: datetime) -> int:
        """Put a subscription's dead letters back in its queue (attempts reset); returns how many."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                text(
                    "UPDATE webhook_delivery SET state = 'pending', attempts = 0, next_attempt_at = :now "
                    "WHERE subscription_id = :s AND state = 'dead'"
                ),
                {"s": subscription_id, "now": now},
            )
        return max(0, result.rowcount or 0)

    async def deactivate(self, subscription_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                text("UPDATE webhook_subscription SET active = false WHERE id = :s AND active"), {"s": subscription_id}
            )
        return bool(result.rowcount)

    async def rotate_secret(self, subscription_id: str, new_secret: str, previous_until: datetime) -> bool:
        """Sign with ``new_secret`` from now on, and with the current one as well until ``previous_until``."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                text(
                    "UPDATE webhook_subscription SET previous_secret = secret, previous_secret_until = :until, "
                    "secret = :new WHERE id = :s"
                ),
                {"s": subscription_id, "new": new_secret, "until": previous_until},
            )
        return bool(result.rowcount)

    async def enable(self, subscription_id: str, now: datetime) -> bool:
        """Deliver again to a subscription its receiver disabled (410 Gone): its pending deliveries are due now."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                text(
                    "UPDATE webhook_subscription SET active = true, disabled_at = NULL, disabled_reason = NULL "
                    "WHERE id = :s AND disabled_at IS NOT NULL"
                ),
                {"s": subscription_id},
            )
            if result.rowcount:
                await conn.execute(
                    text(
                        "UPDATE webhook_delivery SET next_attempt_at = :now WHERE subscription_id = :s "
                        "AND state = 'pending' AND next_attempt_at > :now"
                    ),
                    {"s": subscription_id, "now": now},
                )
        return bool(result.rowcount)

    async def totals(self) -> dict[str, float]:
        """For the metrics gauges: deliveries pending and dead, and the age of the oldest pending one."""
        async with self._engine.connect() as conn:
            r = (
                await conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE d.state = 'pending'), count(*) FILTER (WHERE d.state = 'dead'), "
                        "COALESCE(EXTRACT(EPOCH FROM now() - min(d.created_at) FILTER (WHERE d.state = 'pending')), 0) "
                        "FROM webhook_delivery d JOIN webhook_subscription s ON s.id = d.subscription_id WHERE s.active"
                    )
                )
            ).one()
        return {"pending": float(r[0]), "dead": float(r[1]), "oldest_pending_seconds": float(r[2])}
