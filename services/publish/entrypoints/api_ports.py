"""What the publish HTTP routers are given: the app's ports and settings in one frozen dataclass, built by
the app factory (``http_api.build_api``) and passed explicitly to each router factory. No globals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from fastapi import HTTPException
from prometheus_client import CollectorRegistry

from services.contract.datasets.catalogue import DatasetCatalogue, DatasetDefinition
from services.publish.adapters.export_files import LocalExportFiles
from services.publish.adapters.read_model import PostgresReadModel
from services.publish.adapters.webhook_store import PostgresSubscriptionQueries
from services.publish.domain import dcat
from services.publish.metrics import PublishMetrics
from services.publish.service_layer.ports import (
    AddressResolver,
    Clock,
    DeliveryStoreFactory,
    ExportFiles,
    PushApi,
    TokenStore,
)

GEOJSON = "application/geo+json"
JSONLD = "application/ld+json"
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class ApiPorts:
    base: str  # the public base URL, without a trailing slash
    catalogue: DatasetCatalogue
    read_model: PostgresReadModel
    subscriptions: PostgresSubscriptionQueries
    delivery_store_factory: DeliveryStoreFactory
    resolver: AddressResolver
    clock: Clock
    metrics: PublishMetrics
    registry: CollectorRegistry
    health: dict[str, bool]
    tokens: TokenStore
    live_checks: Mapping[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    allow_private_targets: bool = False
    sse_poll_seconds: float = 0.5
    sse_keepalive_seconds: float = 15.0
    dcat_contact: dcat.ContactPoint = dcat.DEFAULT_CONTACT
    secret_rotation_overlap_seconds: float = 86400.0
    async_topics: Mapping[str, str] | None = None  # the topic names, for the AsyncAPI document
    kafka_bootstrap: str = "127.0.0.1:19092"
    # OGC API Part 4 edits: the push API they go through (None: edits answer 503), the public address of its
    # receipts, and how long an edit waits for the stream's decision before answering 202
    push_api: PushApi | None = None
    ingest_public_url: str = ""
    edit_wait_seconds: float = 5.0
    export_files: ExportFiles = field(default_factory=LocalExportFiles)  # the exports, kept as files

    @property
    def ogc(self) -> str:
        return f"{self.base}/ogc"

    def definition(self, dataset: str) -> DatasetDefinition:
        """The catalogue's dataset, or a 404."""
        d = self.catalogue.get(dataset)
        if d is None:
            raise problem(404, f"unknown dataset {dataset[:100]!r}")
        return d


def problem(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)
