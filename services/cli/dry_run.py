"""``odc send --dry-run``: the pipeline's own validation (the pure normaliser) run locally on the events a
send would publish; nothing is sent. The answer has the same shape as a real send's."""

from __future__ import annotations

from datetime import UTC, datetime

from services.contract.conformance_levels import REFUSED
from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import ChangeEvent, FieldError
from services.ingest.domain.send_report import Problem, RecordOutcome, SendReport, summarise
from services.normalise.domain.canonical_feature import Candidate, EventNormaliser, Invalid


def _problem(e: FieldError) -> Problem:
    return Problem(e.rule, e.message_en, e.field, e.column)


def outcome_of(result: Candidate | Invalid, ev: ChangeEvent) -> RecordOutcome:
    if isinstance(result, Invalid):
        return RecordOutcome(REFUSED, ev.source_row, ev.feature_id, tuple(_problem(e) for e in result.errors))
    return RecordOutcome(result.level, ev.source_row, ev.feature_id, tuple(_problem(e) for e in result.warnings))


def validate_locally(events: list[ChangeEvent], catalogue: DatasetCatalogue | None = None) -> SendReport:
    normaliser = EventNormaliser(catalogue or DatasetCatalogue.load())
    now = datetime.now(UTC)
    return summarise(outcome_of(normaliser.normalise(ev, now), ev) for ev in events)
