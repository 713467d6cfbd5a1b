"""Machine-readable descriptions of what subscribers receive: the AsyncAPI 3.0 document (``/asyncapi.json``)
and the Avro schemas it and the CloudEvents' ``dataschema`` point at (``/schemas/avro/{file}``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Response

from services.contract.avro_catalogue import SCHEMA_DIR
from services.publish.domain.asyncapi import ASYNCAPI_PATH, TOPICS, asyncapi_document

DEFAULT_TOPICS = {
    "changeEvents": "odc.change-events",
    "featureChanges": "odc.feature-changes",
    "rejected": "odc.rejected",
    "datasetVersions": "odc.dataset-versions",
}


def avro_schemas() -> dict[str, Any]:
    """Every committed Avro schema, by file name."""
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(SCHEMA_DIR.glob("*.avsc"))}


def document(base_url: str, topics: Mapping[str, str] | None = None, kafka_bootstrap: str = "127.0.0.1:19092") -> Any:
    return asyncapi_document(base_url, {**DEFAULT_TOPICS, **(topics or {})}, avro_schemas(), kafka_bootstrap)


def router(
    base_url: str, topics: Mapping[str, str] | None = None, kafka_bootstrap: str = "127.0.0.1:19092"
) -> APIRouter:
    routes = APIRouter(tags=["Descriptions"])
    doc = json.dumps(document(base_url, topics, kafka_bootstrap), ensure_ascii=False, indent=2).encode("utf-8")
    schemas = {name: json.dumps(s, indent=2).encode("utf-8") for name, s in avro_schemas().items()}
    missing = [f for f, _, _ in TOPICS.values() if f not in schemas]
    if missing:
        raise RuntimeError(f"Avro schemas missing from {SCHEMA_DIR}: {missing}")

    @routes.get(ASYNCAPI_PATH, summary="AsyncAPI 3.0: the Kafka topics, the webhooks and the server-sent events")
    async def asyncapi() -> Response:
        return Response(doc, media_type="application/json")

    @routes.get("/schemas/avro/{name}", summary="A committed Avro schema (the CloudEvents dataschema)")
    async def avro_schema(name: str) -> Response:
        if name not in schemas:
            raise HTTPException(404, f"no Avro schema {name[:100]!r}")
        return Response(schemas[name], media_type="application/vnd.apache.avro+json")

    return routes
