"""The schema owner of the tables services/infrastructure keeps for several services: ``api_token``
(ingest push API, publish API) and ``commune_signing_key`` (ingest, normalise). Migrations in ./migrations."""

from __future__ import annotations

from pathlib import Path

from services.infrastructure import api_tokens, signing_keys
from services.infrastructure.schema_migrations import SchemaOwner

SHARED_SCHEMA = SchemaOwner(
    "shared", Path(__file__).with_name("migrations"), (api_tokens.metadata, signing_keys.metadata)
)
