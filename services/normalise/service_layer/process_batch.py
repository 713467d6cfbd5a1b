"""The normaliser's one handler: a batch of raw messages in, one transaction, a report out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.contract.avro_catalogue import UndecodableMessage
from services.contract.codecs import Codecs
from services.contract.event_signature import EventAuthenticator
from services.contract.messages import FieldError, Rejection, SourcePosition
from services.normalise.domain.canonical_feature import Candidate, EventNormaliser, Invalid
from services.normalise.domain.dedup_decisions import Outcome
from services.normalise.service_layer.link_same_places import decide_with_same_place
from services.normalise.service_layer.ports import Clock, UnitOfWorkFactory

STAGE = "normalise"


@dataclass(frozen=True)
class InboundMessage:
    value: bytes
    position: SourcePosition
    headers: tuple[tuple[str, bytes], ...] = ()  # Kafka headers: the event's signature (event_signature.py)


@dataclass
class BatchReport:
    received: int = 0
    # per dataset ("" when unknown) and outcome / reason
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejections: Counter[tuple[str, str]] = field(default_factory=Counter)
    changes_written: int = 0
    # accepted events per (dataset, commune, outcome), for the communes' status (counted once per event id)
    tally: Counter[tuple[str, str, str]] = field(default_factory=Counter)


async def process_batch(
    messages: Sequence[InboundMessage],
    *,
    codecs: Codecs,
    normaliser: EventNormaliser,
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    authenticator: EventAuthenticator | None = None,
) -> BatchReport:
    now = clock.now()
    report = BatchReport(received=len(messages))
    rejections: list[Rejection] = []
    candidates: list[Candidate] = []

    def reject(msg: InboundMessage, reason: str, text: str, errors: tuple[FieldError, ...] = (), ev=None) -> None:  # type: ignore[no-untyped-def]
        rid = f"{ev.event_id}:{reason}" if ev is not None else msg.position.as_id()
        rejections.append(
            Rejection(
                rejection_id=rid,
                rejected_at=now,
                stage=STAGE,
                reason=reason,
                message=text,
                source=msg.position,
                original=msg.value,
                event_id=getattr(ev, "event_id", None),
                dataset=getattr(ev, "dataset", None),
                commune=getattr(ev, "commune", None),
                feature_id=getattr(ev, "feature_id", None),
                errors=errors,
            )
        )
        report.rejections[
            (getattr(ev, "dataset", "") if ev is not None and normaliser.catalogue.get(ev.dataset) else "", reason)
        ] += 1

    for msg in messages:
        try:
            ev = codecs.decode_change_event(msg.value)
        except UndecodableMessage as bad:
            reject(msg, bad.reason, bad.message, (FieldError(bad.reason, bad.message, _fr(bad.reason)),))
            continue
        refusal = authenticator.check(msg.value, msg.headers, ev.commune) if authenticator is not None else None
        if refusal is not None:
            reject(msg, refusal.reason, refusal.message, refusal.errors, ev)
            continue
        result = normaliser.normalise(ev, now)
        if isinstance(result, Invalid):
            reject(msg, result.reason, result.message, result.errors, ev)
        else:
            candidates.append(result)

    async with uow_factory() as uow:
        fresh = await uow.claim_events(list(dict.fromkeys(c.event.event_id for c in candidates)))
        seen: set[str] = set()
        to_decide: list[Candidate] = []
        for c in candidates:
            if c.event.event_id in fresh and c.event.event_id not in seen:
                seen.add(c.event.event_id)
                to_decide.append(c)
            else:
                report.outcomes[(c.key.dataset, Outcome.DUPLICATE.value)] += 1
        stored = await uow.lock_and_load(
            sorted({c.key for c in to_decide}, key=lambda k: (k.dataset, k.commune, k.feature_id))
        )
        decisions, to_save = await decide_with_same_place(uow, normaliser.catalogue, stored, to_decide, now)
        for d in decisions:
            report.outcomes[(d.candidate.key.dataset, d.outcome.value)] += 1
            report.tally[(d.candidate.key.dataset, d.candidate.key.commune, d.outcome.value)] += 1
        report.changes_written = await uow.save(to_save, now)
        await uow.record_tally(report.tally, now)
        await uow.record_rejections(rejections)
        await uow.commit()
    return report


def _fr(reason: str) -> str:
    return {
        "undecodable": "message illisible : ce n'est pas un message Avro à objet unique valide",
        "unknown_schema": "empreinte de schéma inconnue",
        "wrong_schema": "ce message n'est pas un événement de changement",
    }.get(reason, reason)
