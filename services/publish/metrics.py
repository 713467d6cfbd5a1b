"""Every metric the publisher exports, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.infrastructure.worker_metrics import WorkerMetrics


class PublishMetrics(WorkerMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry, batch_help="Time to record one batch", rejected_help="Messages refused, by reason")
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
        self.webhook_attempts = Counter(
            "odc_webhook_attempts_total",
            "Webhook delivery attempts, by outcome (delivered, retry, dead, disabled: a 410 Gone)",
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
