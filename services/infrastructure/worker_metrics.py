"""Metrics every Kafka worker exports under the same names and labels: the alert rules and the dashboard
(deploy/prometheus, deploy/grafana) read them across services by their ``service`` label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry, *, batch_help: str, rejected_help: str) -> None:
        self.registry = registry
        self.rejected = Counter("odc_events_rejected_total", rejected_help, ["dataset", "reason"], registry=registry)
        self.batch_duration = Histogram(
            "odc_upsert_batch_duration_seconds", batch_help, ["service"], buckets=DURATION_BUCKETS, registry=registry
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
