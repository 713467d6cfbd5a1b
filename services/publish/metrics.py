"""Every metric the publisher exports, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class PublishMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.changes_received = Counter(
            "odc_feature_changes_received_total", "Canonical feature changes consumed", ["outcome"], registry=registry
        )
        self.versions = Counter(
            "odc_versions_published_total", "Dataset versions published", ["dataset"], registry=registry
        )
        self.latest_version = Gauge(
            "odc_dataset_latest_version", "Latest published version number", ["dataset"], registry=registry
        )
        self.features = Gauge(
            "odc_dataset_features", "Live features at the latest version", ["dataset"], registry=registry
        )
        self.cut_duration = Histogram(
            "odc_version_cut_duration_seconds",
            "Time to cut versions that were due",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.batch_duration = Histogram(
            "odc_upsert_batch_duration_seconds",
            "Time to record one batch",
            ["service"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
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
            "odc_transient_failures_total", "Transient failures retried", ["service", "operation"], registry=registry
        )
        self.ready = Gauge("odc_service_ready", "1 when the service can do its work", ["service"], registry=registry)
        self.rejected = Counter(
            "odc_events_rejected_total", "Messages refused, by reason", ["dataset", "reason"], registry=registry
        )
        self.webhook_attempts = Counter(
            "odc_webhook_attempts_total",
            "Webhook delivery attempts, by outcome (delivered, retry, dead)",
            ["outcome"],
            registry=registry,
        )
        self.webhook_attempt_duration = Histogram(
            "odc_webhook_attempt_duration_seconds",
            "Time of one webhook delivery attempt",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.webhook_pending = Gauge(
            "odc_webhook_deliveries_pending", "Webhook deliveries waiting (all active subscriptions)", registry=registry
        )
        self.webhook_dead = Gauge(
            "odc_webhook_deliveries_dead",
            "Webhook deliveries dead-lettered (all active subscriptions)",
            registry=registry,
        )
        self.webhook_oldest_pending = Gauge(
            "odc_webhook_oldest_pending_seconds",
            "Age of the oldest webhook delivery still waiting",
            registry=registry,
        )
        self.sse_clients = Gauge("odc_sse_clients", "Open server-sent event streams", registry=registry)
        self.api_requests = Counter(
            "odc_api_requests_total",
            "HTTP API requests, by route template and status",
            ["route", "status"],
            registry=registry,
        )
