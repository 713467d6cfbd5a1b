"""Every metric the normaliser exports, on an injected registry (tests read them from it)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.normalise.service_layer.process_batch import BatchReport

ACCEPTED_OUTCOMES = {"created", "updated", "deleted", "unchanged", "linked"}


class NormaliseMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.received = Counter(
            "odc_events_received_total", "Change events read from the input topic", ["service"], registry=registry
        )
        self.accepted = Counter(
            "odc_events_accepted_total",
            "Valid events applied or found identical (created, updated, deleted, unchanged)",
            ["dataset", "outcome"],
            registry=registry,
        )
        self.rejected = Counter(
            "odc_events_rejected_total",
            "Events refused, by reason (see the rejected topic)",
            ["dataset", "reason"],
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
        self.batch_duration = Histogram(
            "odc_upsert_batch_duration_seconds",
            "Time to process one batch, transaction included",
            ["service"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.batch_size = Histogram(
            "odc_batch_size_events",
            "Events per processed batch",
            ["service"],
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.lag = Gauge(
            "odc_consumer_lag",
            "Messages behind the end of the partition",
            ["service", "topic", "partition"],
            registry=registry,
        )
        self.relayed = Counter("odc_outbox_relayed_total", "Outbox rows sent to Kafka", ["outbox"], registry=registry)
        self.transient = Counter(
            "odc_transient_failures_total",
            "Transient failures retried (database or broker down)",
            ["service", "operation"],
            registry=registry,
        )
        self.ready = Gauge("odc_service_ready", "1 when the service can do its work", ["service"], registry=registry)

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
