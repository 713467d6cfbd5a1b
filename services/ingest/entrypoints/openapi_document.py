"""``python -m services.ingest.entrypoints.openapi_document > docs/openapi/ingest.json``: the OpenAPI
document of the communes' push API, as served at /openapi.json (tests keep the committed file in step)."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry

from services.ingest.entrypoints.http_app import build_app
from services.ingest.settings import IngestSettings


def openapi_document() -> dict[str, Any]:
    """Built without any connection: the app only connects when it starts."""
    return build_app(IngestSettings(), CollectorRegistry()).openapi()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
