"""Every metric the ingest service exports, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.published = Counter(
            "odc_ingest_events_published_total",
            "Change events put on the input topic",
            ["dataset", "path"],
            registry=registry,
        )
        self.ready = Gauge("odc_service_ready", "1 when the service can do its work", ["service"], registry=registry)
        self.http_requests = Counter(
            "odc_ingest_http_requests_total",
            "Push API requests answered, by route and status code",
            ["route", "status"],
            registry=registry,
        )
        self.records_refused = Counter(
            "odc_ingest_records_refused_total",
            "Pushed records refused before the stream, by reason",
            ["dataset", "reason"],
            registry=registry,
        )
        self.connector_runs = Counter(
            "odc_ingest_connector_runs_total",
            "Snapshot connector runs by outcome (applied, held, failed, up_to_date, busy)",
            ["status"],
            registry=registry,
        )
