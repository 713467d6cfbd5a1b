"""``python -m services.publish.entrypoints.openapi_document > docs/openapi/publish.json``: the OpenAPI
document of the publish HTTP API, as served at /openapi.json (a test keeps the committed file in step)."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry

from services.contract.datasets.catalogue import DatasetCatalogue
from services.publish.entrypoints.http_api import build_api
from services.publish.metrics import PublishMetrics


def openapi_document() -> dict[str, Any]:
    """Built without any connection: route definitions only (nothing is called)."""
    registry = CollectorRegistry()
    api = build_api(
        base_url="http://127.0.0.1:6067",
        catalogue=DatasetCatalogue.load(),
        read_model=None,  # type: ignore[arg-type]
        subscriptions=None,  # type: ignore[arg-type]
        delivery_store_factory=None,  # type: ignore[arg-type]
        resolver=None,  # type: ignore[arg-type]
        clock=None,  # type: ignore[arg-type]
        metrics=PublishMetrics(registry),
        registry=registry,
        health={},
        tokens=None,  # type: ignore[arg-type]
    )
    return api.openapi()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
