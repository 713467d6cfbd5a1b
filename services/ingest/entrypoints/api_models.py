"""Pydantic models of the push API's JSON, for the OpenAPI document (docs/openapi/ingest.json). The
handler builds plain dicts; tests check that real answers validate against these models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FieldErrorDoc(BaseModel):
    rule: str
    message_en: str
    message_fr: str
    field: str | None = None
    value: str | None = None


class RecordRefusalDoc(BaseModel):
    index: int = Field(description="0-based position of the record in the request")
    reason: str = Field(
        description="Same reason codes as the rejected topic: invalid_envelope, invalid_geometry, forbidden_commune"
    )
    message: str
    feature_id: str | None = None
    errors: list[FieldErrorDoc]


class AcceptedRecordDoc(BaseModel):
    index: int
    event_id: str = Field(description="Id of the change event published; find it in the commune's status")
    feature_id: str
    commune: str
    operation: str = Field(description="upsert or delete")


class PushAccepted(BaseModel):
    dataset: str
    commune: str | None = Field(description="The token's commune; null for the Métropole's admin token")
    received: int
    accepted: list[AcceptedRecordDoc]
    refused: list[RecordRefusalDoc]
    status_url: str | None = None
    receipt_id: str | None = Field(default=None, description="Read each record's outcome at receipt_url")
    receipt_url: str | None = Field(
        default=None, description="GET it for each record's outcome: conforming, incomplete, refused or pending"
    )


class ErrorDoc(BaseModel):
    error: str = Field(description="Machine-readable code, e.g. malformed_body, unauthenticated, payload_too_large")
    message: str
    model_config = {"extra": "allow"}


class ChangeBatch(BaseModel):
    """A batch of records: ``{"records": [...]}``, or a GeoJSON FeatureCollection (``features``)."""

    records: list[dict[str, Any]] = Field(
        description=(
            "GeoJSON Features (properties + geometry, id in `id` or the identity property) or flat records "
            "(the dataset's fields as members, optional `geometry` as a GeoJSON geometry or WKT). Each may "
            "carry `operation` (upsert | delete, default upsert), `commune` (admin tokens) and `sequence`."
        )
    )


class LastChangeDoc(BaseModel):
    change_id: int
    feature_id: str
    kind: str
    event_id: str
    applied_at: str | None
    version: int | None = Field(description="The dataset version that published this change; null while pending")
    published: bool


class DatasetStatusDoc(BaseModel):
    id: str
    events_received: int
    accepted: int
    accepted_by_outcome: dict[str, int]
    rejected: int
    rejected_by_reason: dict[str, int]
    live_features: int
    conformance: dict[str, int] | None = Field(
        default=None,
        description="conforming and incomplete live features; refused source records not accepted since",
    )
    last_change_applied: LastChangeDoc | None
    dataset_latest_version: int


class RecentRejectionDoc(BaseModel):
    rejected_at: str | None
    dataset: str | None
    reason: str
    message: str
    event_id: str | None
    feature_id: str | None
    errors: list[FieldErrorDoc]


class CommuneStatus(BaseModel):
    commune: str
    datasets: list[DatasetStatusDoc]
    recent_rejections: list[RecentRejectionDoc]
