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
