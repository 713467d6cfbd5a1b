"""The normaliser's handler: a batch of raw messages in, one transaction, a report out.

``process_batch`` = ``prepare_batch`` (decode, authenticate, normalise: no I/O) + ``apply_batch`` (the one
transaction). The worker calls the two halves itself to prepare a batch while the previous one commits."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.contract import size_limits
from services.contract.avro_catalogue import UndecodableMessage
from services.contract.codecs import Codecs
from services.contract.event_signature import EventAuthenticator
from services.contract.messages import ChangeEvent, FieldError, RefusedBatch, Rejection, SourcePosition
from services.normalise.domain.canonical_feature import Candidate, EventNormaliser, Invalid
from services.normalise.domain.dedup_decisions import Outcome, events_without_change_rows, split_duplicates
from services.normalise.service_layer.link_same_places import decide_with_same_place
from services.normalise.service_layer.ports import Clock, UnitOfWorkFactory

STAGE = "normalise"
RECORD_TOO_LARGE = "record_too_large"  # the push API's reason for the same limit
BATCH_TOO_LARGE = "batch_too_large"
log = logging.getLogger("odc.normalise")


@dataclass(frozen=True)
class InboundMessage:
    value: bytes
    position: SourcePosition
    headers: tuple[tuple[str, bytes], ...] = ()  # Kafka headers: the event's signature (event_signature.py)
    # a record batch refused before any record was read (it expands past the bound: kafka_decompression.py);
    # this message stands for the whole batch, its position the batch's last offset
    refused_batch: RefusedBatch | None = None


@dataclass
class BatchReport:
    received: int = 0
    # per dataset ("" when unknown) and outcome / reason
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejections: Counter[tuple[str, str]] = field(default_factory=Counter)
    changes_written: int = 0
    # accepted events per (dataset, commune, outcome), for the communes' status (counted once per event id)
    tally: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # applied upserts per (dataset, conformance level: conforming / incomplete); refused ones are ``rejections``
    levels: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass
class PreparedBatch:
    """A batch decoded, authenticated and normalised: everything that needs no database. Pure to build, so
    the worker prepares the next batch while the previous one's transaction runs."""

    now: datetime
    report: BatchReport
    candidates: list[Candidate]
    rejections: list[Rejection]

    @staticmethod
    def merge(parts: Sequence[PreparedBatch]) -> PreparedBatch:
        """Parts prepared one after the other (in message order) as one batch."""
        report = BatchReport()
        for p in parts:
            report.received += p.report.received
            report.rejections.update(p.report.rejections)
        return PreparedBatch(
            parts[0].now if parts else datetime.now(UTC),
            report,
            [c for p in parts for c in p.candidates],
            [r for p in parts for r in p.rejections],
        )


def prepare_batch(
    messages: Sequence[InboundMessage],
    *,
    codecs: Codecs,
    normaliser: EventNormaliser,
    now: datetime,
    authenticator: EventAuthenticator | None = None,
) -> PreparedBatch:
    """A message carries one event (the single form) or many of one dataset and commune (the bulk form,
    change_event_batch): a bulk message is expanded into its events, each handled exactly as if it had come
    alone (validation, dedup, outcomes, metrics). The signature covers the whole message value and its commune
    is the message's; an inner event naming another dataset or commune than its message is refused alone
    (invalid_envelope), the others go on. A refused inner event's ``original`` is that event re-encoded in the
    single form, so the rejection can be replayed on its own; its source is the message's position. An
    undecodable message (bulk or not) is one rejection with the bytes received."""
    rejections: list[Rejection] = []
    candidates: list[Candidate] = []
    report = BatchReport()

    def reject(unit: _Unit, reason: str, text: str, errors: tuple[FieldError, ...] = ()) -> None:
        msg, ev = unit.message, unit.event
        rid = f"{ev.event_id}:{reason}" if ev is not None else msg.position.as_id()
        rejections.append(
            Rejection(
                rejection_id=rid,
                rejected_at=now,
                stage=STAGE,
                reason=reason,
                message=text,
                source=msg.position,
                original=codecs.encode_change_event(ev) if unit.bulk and ev is not None else msg.value,
                event_id=getattr(ev, "event_id", None),
                dataset=getattr(ev, "dataset", None),
                commune=getattr(ev, "commune", None),
                feature_id=getattr(ev, "feature_id", None),
                errors=errors,
                source_row=getattr(ev, "source_row", None),
            )
        )
        report.rejections[
            (getattr(ev, "dataset", "") if ev is not None and normaliser.catalogue.get(ev.dataset) else "", reason)
        ] += 1
        log.info("rejected (%s): %s", reason, text, extra=_event_fields(ev, msg, reason=reason))

    # Decode and authenticate each message, expanding bulk messages into one unit per event; then normalise
    # the authentic events as one batch (each dataset's attributes checked as columns: attribute_columns.py);
    # then report everything in message (and, within a bulk message, event) order.
    units: list[_Unit] = []
    refused: dict[int, tuple[str, str, tuple[FieldError, ...]]] = {}
    authentic: list[tuple[int, ChangeEvent]] = []
    for msg in messages:
        too_large = _too_large(msg)
        if too_large is not None:
            refused[len(units)] = too_large
            units.append(_Unit(msg, None, False))
            continue
        try:
            carried = codecs.decode_change_events(msg.value)
        except UndecodableMessage as bad:
            refused[len(units)] = (bad.reason, bad.message, (FieldError(bad.reason, bad.message, _fr(bad.reason)),))
            units.append(_Unit(msg, None, False))
            continue
        if not carried.events:
            refused[len(units)] = _EMPTY_BULK
            units.append(_Unit(msg, None, True))
            continue
        refusal = authenticator.check(msg.value, msg.headers, carried.commune) if authenticator is not None else None
        for ev in carried.events:
            if refusal is not None:
                refused[len(units)] = (refusal.reason, refusal.message, refusal.errors)
            elif carried.bulk and (ev.dataset != carried.dataset or ev.commune != carried.commune):
                refused[len(units)] = _outside_its_message(ev, carried.dataset, carried.commune)
            else:
                authentic.append((len(units), ev))
            units.append(_Unit(msg, ev, carried.bulk))
    report.received = len(units)
    normalised = dict(
        zip((i for i, _ in authentic), normaliser.normalise_batch([ev for _, ev in authentic], now), strict=True)
    )
    for i, unit in enumerate(units):
        result = normalised.get(i)
        if result is None:
            reject(unit, *refused[i])
        elif isinstance(result, Invalid):
            reject(unit, result.reason, result.message, result.errors)
        else:
            candidates.append(result)

    return PreparedBatch(now, report, candidates, rejections)


@dataclass(frozen=True)
class _Unit:
    """One event as the normaliser handles it: a single message, one event of a bulk message, or a message
    that carries no readable event (``event`` None)."""

    message: InboundMessage
    event: ChangeEvent | None
    bulk: bool


def _too_large(msg: InboundMessage) -> tuple[str, str, tuple[FieldError, ...]] | None:
    """A record batch past the decompression bound, or a record larger than any producer of odc may send
    (size_limits.MAX_RECORD_BYTES, as the push API refuses it): refused before it is decoded."""
    b = msg.refused_batch
    if b is not None:
        mib = b.limit / 1024 / 1024
        en = (
            f"a {b.codec}-compressed record batch (offsets {b.first_offset} to {b.last_offset}) expands past "
            f"{mib:g} MiB: refused whole, none of its records read; send records of at most "
            f"{size_limits.MAX_RECORD_BYTES:,} bytes in smaller batches"
        )
        fr = (
            f"un lot d'enregistrements compressé en {b.codec} (positions {b.first_offset} à {b.last_offset}) "
            f"dépasse {mib:g} Mio une fois décompressé : refusé en entier, aucun de ses enregistrements n'est lu ; "
            f"envoyez des enregistrements d'au plus {size_limits.MAX_RECORD_BYTES:,} octets en lots plus petits"
        )
        return BATCH_TOO_LARGE, en, (FieldError(BATCH_TOO_LARGE, en, fr),)
    if len(msg.value) > size_limits.MAX_RECORD_BYTES:
        en = (
            f"a record of {len(msg.value):,} bytes (decompressed), over the limit of "
            f"{size_limits.MAX_RECORD_BYTES:,}: send fewer events per bulk message"
        )
        fr = (
            f"un enregistrement de {len(msg.value):,} octets (décompressé), au-delà de la limite de "
            f"{size_limits.MAX_RECORD_BYTES:,} : envoyez moins d'événements par message groupé"
        )
        return RECORD_TOO_LARGE, en, (FieldError(RECORD_TOO_LARGE, en, fr),)
    return None


_EMPTY_BULK = (
    "invalid_envelope",
    "a bulk message (ChangeEventBatch) with no events",
    (
        FieldError(
            "bulk_empty",
            "a bulk message (ChangeEventBatch) with no events",
            "un message groupé (ChangeEventBatch) sans aucun événement",
            "events",
        ),
    ),
)


def _outside_its_message(ev: ChangeEvent, dataset: str, commune: str) -> tuple[str, str, tuple[FieldError, ...]]:
    """An event of a bulk message that names another dataset or commune than the message: the signature and
    the commune check were for the message's, so it is refused (alone; the message's other events go on)."""
    errors = []
    if ev.dataset != dataset:
        en = f"the event is for dataset {ev.dataset[:64]!r} but its bulk message is for {dataset[:64]!r}"
        fr = f"l'événement concerne le jeu {ev.dataset[:64]!r} mais son message groupé concerne {dataset[:64]!r}"
        errors.append(FieldError("bulk_mismatch", en, fr, "dataset", ev.dataset[:64]))
    if ev.commune != commune:
        en = f"the event is for commune {ev.commune[:10]!r} but its bulk message is for {commune[:10]!r}"
        fr = f"l'événement concerne la commune {ev.commune[:10]!r} mais son message groupé concerne {commune[:10]!r}"
        errors.append(FieldError("bulk_mismatch", en, fr, "commune", ev.commune[:10]))
    return "invalid_envelope", "; ".join(e.message_en for e in errors), tuple(errors)


async def process_batch(
    messages: Sequence[InboundMessage],
    *,
    codecs: Codecs,
    normaliser: EventNormaliser,
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    authenticator: EventAuthenticator | None = None,
) -> BatchReport:
    prepared = prepare_batch(
        messages, codecs=codecs, normaliser=normaliser, now=clock.now(), authenticator=authenticator
    )
    return await apply_batch(prepared, normaliser=normaliser, uow_factory=uow_factory)


async def apply_batch(
    prepared: PreparedBatch, *, normaliser: EventNormaliser, uow_factory: UnitOfWorkFactory
) -> BatchReport:
    """The batch's one transaction. Safe to retry: it starts from a copy of the prepared report."""
    now, candidates, rejections = prepared.now, prepared.candidates, prepared.rejections
    report = BatchReport(received=prepared.report.received, rejections=Counter(prepared.report.rejections))
    async with uow_factory() as uow:
        # Dedup rides on the change row (docs/architecture.md): lock every candidate's feature first (an event
        # always locks the same feature, so a second worker with the same event waits here for the first to
        # commit), then look the ids up in a new statement, which sees what that worker committed.
        loaded = await uow.lock_and_load(
            sorted({c.key for c in candidates}, key=lambda k: (k.dataset, k.commune, k.feature_id))
        )
        processed = await uow.processed_events(list(dict.fromkeys(c.event.event_id for c in candidates)))
        to_decide, duplicates = split_duplicates(candidates, processed)
        for c in duplicates:
            report.outcomes[(c.key.dataset, Outcome.DUPLICATE.value)] += 1
        deciding = {c.key for c in to_decide}
        stored = {k: s for k, s in loaded.items() if k in deciding}  # a duplicate's feature plays no part
        decisions, to_save = await decide_with_same_place(uow, normaliser.catalogue, stored, to_decide, now)
        for d in decisions:
            report.outcomes[(d.candidate.key.dataset, d.outcome.value)] += 1
            report.tally[(d.candidate.key.dataset, d.candidate.key.commune, d.outcome.value)] += 1
            if d.candidate.feature is not None and d.outcome.value != "stale":
                report.levels[(d.candidate.key.dataset, d.candidate.level)] += 1
        if log.isEnabledFor(logging.DEBUG):  # one line per event: off unless asked for
            for c in duplicates:
                log.debug("duplicate event, already applied", extra=_event_fields(c.event, outcome="duplicate"))
            for d in decisions:
                fields = _event_fields(d.candidate.event, outcome=d.outcome.value)
                log.debug("event %s", d.outcome.value, extra=fields)
        report.changes_written = await uow.save(to_save, now)
        await uow.claim_events(events_without_change_rows(to_decide, to_save))  # the others' change rows say it
        await uow.record_tally(report.tally, now)
        accepted = {d.candidate.key for d in decisions if d.outcome is not Outcome.STALE and d.candidate.feature}
        await uow.resolve_rejections(sorted(accepted, key=lambda k: (k.dataset, k.commune, k.feature_id)), now)
        await uow.record_rejections(rejections)
        await uow.commit()
    return report


def _event_fields(ev: ChangeEvent | None, msg: InboundMessage | None = None, **more: str) -> dict[str, object]:
    """The JSON log fields naming one event (services/infrastructure/logging_setup.py)."""
    fields: dict[str, object] = dict(more)
    if ev is not None:
        fields.update(event_id=ev.event_id, dataset=ev.dataset, commune=ev.commune, feature_id=ev.feature_id)
    if msg is not None:
        fields["source"] = msg.position.as_id()
    return fields


def _fr(reason: str) -> str:
    return {
        "undecodable": "message illisible : ce n'est pas un message Avro à objet unique valide",
        "unknown_schema": "empreinte de schéma inconnue",
        "wrong_schema": "ce message n'est pas un événement de changement",
    }.get(reason, reason)
