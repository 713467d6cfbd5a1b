"""Every metric the normaliser exports, on an injected registry (tests read them from it)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.infrastructure.worker_metrics import WorkerMetrics
from services.normalise.service_layer.process_batch import BatchReport

ACCEPTED_OUTCOMES = {"created", "updated", "deleted", "unchanged", "linked"}


class NormaliseMetrics(WorkerMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(
            registry,
            batch_help="Time to process one batch, transaction included",
            rejected_help="Events refused, by reason (see the rejected topic)",
        )
        self.received = Counter(
            "odc_events_received_total", "Change events read from the input topic", ["service"], registry=registry
        )
        self.accepted = Counter(
            "odc_events_accepted_total",
            "Valid events applied or found identical (created, updated, deleted, unchanged)",
            ["dataset", "outcome"],
            registry=registry,
        )
        self.duplicate = Counter(
            "odc_events_duplicate_total", "Events whose id was already applied", ["dataset"], registry=registry
        )
        self.stale = Counter(
            "odc_events_stale_total",
            "Events older than the stored state of their feature",
            ["dataset"],
            registry=registry,
        )
        self.rejections_pruned = Counter(
            "odc_rejections_pruned_total",
            "Rejections deleted from the rejection table past their retention",
            registry=registry,
        )
        self.changes_pruned = Counter(
            "odc_feature_changes_pruned_total",
            "Relayed change rows deleted from feature_change_outbox past their retention (event ids kept)",
            registry=registry,
        )
        self.conformance = Counter(
            "odc_records_conformance_total",
            "Records by conformance level: conforming and incomplete (applied upserts), refused (rejected events)",
            ["dataset", "level"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "odc_batch_size_events",
            "Events per processed batch",
            ["service"],
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=registry,
        )

    def observe(self, report: BatchReport, seconds: float) -> None:
        self.received.labels("normalise").inc(report.received)
        self.batch_duration.labels("normalise").observe(seconds)
        self.batch_size.labels("normalise").observe(report.received)
        for (dataset, outcome), n in report.outcomes.items():
            if outcome in ACCEPTED_OUTCOMES:
                self.accepted.labels(dataset, outcome).inc(n)
            elif outcome == "duplicate":
                self.duplicate.labels(dataset).inc(n)
            elif outcome == "stale":
                self.stale.labels(dataset).inc(n)
        for (dataset, reason), n in report.rejections.items():
            self.rejected.labels(dataset, reason).inc(n)
            self.conformance.labels(dataset, "refused").inc(n)
        for (dataset, level), n in report.levels.items():
            self.conformance.labels(dataset, level).inc(n)
