"""A push request's body turned into change events, or a refusal per record. Pure: ids, time and the
sequence are injected.

Checks here are the envelope and the record's shape only (is it an object, is the operation known, can
a feature id and a commune be read, is the geometry shaped like one); the dataset's Table Schema is
checked by the normaliser, which reports through the rejected topic and the commune's status. Refusal
reasons and field errors have the stream's codes and shape (``invalid_envelope``, ``invalid_geometry``,
``forbidden_commune``; ``FieldError``).

Accepted bodies: ``{"records": [...]}`` or a GeoJSON ``FeatureCollection``. A record is either a GeoJSON
``Feature`` (``properties`` + ``geometry``, the id in ``id`` or in the identity property) or a flat object
whose members are the dataset's fields, with an optional ``geometry`` (GeoJSON geometry object or WKT
text). Both take an optional ``operation`` (``upsert``, the default, or ``delete``), ``commune`` and
``sequence``.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from services.contract.datasets.catalogue import DatasetDefinition
from services.contract.event_signature import FORBIDDEN_COMMUNE
from services.contract.messages import AttributeValue, ChangeEvent, FieldError, GeometryEncoding, Operation, RawGeometry
from services.ingest.domain.change_events import commune_code, upsert_events
from services.ingest.domain.source_profiles import SourceProfile, apply_profile
from services.ingest.domain.source_records import SourceRecord

INVALID_ENVELOPE = "invalid_envelope"
INVALID_GEOMETRY = "invalid_geometry"
RECORD_TOO_LARGE = "record_too_large"
RESERVED = frozenset({"operation", "commune", "sequence", "geometry", "crs", "feature_id", "type"})
GEOMETRY_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection"}
)
MAX_ID_LEN = 200
MAX_SEQUENCE = 2**63 - 1


class MalformedBody(ValueError):
    """The body as a whole is not a batch of records (400)."""


@dataclass(frozen=True)
class RecordRefusal:
    index: int  # 0-based position in the request's records
    reason: str
    message: str
    errors: tuple[FieldError, ...]
    feature_id: str | None = None


@dataclass(frozen=True)
class AcceptedRecord:
    index: int
    event: ChangeEvent


@dataclass(frozen=True)
class ParsedBatch:
    accepted: tuple[AcceptedRecord, ...]
    refused: tuple[RecordRefusal, ...]

    @property
    def forbidden(self) -> tuple[RecordRefusal, ...]:
        return tuple(r for r in self.refused if r.reason == FORBIDDEN_COMMUNE)


def records_of(body: Any) -> list[Any]:
    """The records of a decoded JSON body, or MalformedBody."""
    if isinstance(body, dict):
        if body.get("type") == "FeatureCollection":
            records = body.get("features")
            if not isinstance(records, list):
                raise MalformedBody("a FeatureCollection needs a 'features' array")
            return records
        if "records" in body:
            records = body["records"]
            if not isinstance(records, list):
                raise MalformedBody("'records' must be an array")
            return records
        raise MalformedBody("expected an object with a 'records' array, or a GeoJSON FeatureCollection")
    raise MalformedBody(f"expected a JSON object, got {type(body).__name__}")


def _flat(value: Any) -> AttributeValue:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return json.dumps(value, ensure_ascii=False)


def _error(rule: str, en: str, fr: str, field: str | None = None, value: Any = None) -> FieldError:
    return FieldError(rule, en, fr, field, None if value is None else str(value)[:200])


def _geometry(raw: Any, crs: Any) -> RawGeometry | FieldError | None:
    if raw is None:
        return None
    declared = crs if isinstance(crs, str) else None
    if isinstance(raw, str):
        if not raw.strip():
            return None
        return RawGeometry(GeometryEncoding.WKT, raw.strip().encode(), declared)
    if isinstance(raw, dict) and raw.get("type") in GEOMETRY_TYPES and ("coordinates" in raw or "geometries" in raw):
        return RawGeometry(GeometryEncoding.GEOJSON, json.dumps(raw, separators=(",", ":")).encode(), declared)
    return _error(
        "geometry_shape",
        "geometry: expected a GeoJSON geometry object (type and coordinates) or WKT text",
        "géométrie : objet géométrie GeoJSON (type et coordinates) ou texte WKT attendu",
        "geometry",
        json.dumps(raw)[:200] if not isinstance(raw, str) else raw,
    )


def _sequence(raw: Any, default: int) -> int | FieldError:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_SEQUENCE:
        return _error(
            "sequence",
            "sequence: expected a whole number from 0 to 2^63-1",
            "sequence : nombre entier de 0 à 2^63-1 attendu",
            "sequence",
            raw,
        )
    return raw


@dataclass(frozen=True)
class _Shaped:
    operation: Operation
    record: SourceRecord
    commune: str | None  # as stated in the record (explicit member or the dataset's commune field)
    explicit_commune: str | None  # the record's own ``commune`` member, if any
    feature_id: str | None  # explicit, for deletes of flat records or a Feature's id
    sequence: int


def _shape(
    index: int, raw: Any, definition: DatasetDefinition, crs: Any, default_sequence: int
) -> _Shaped | RecordRefusal:
    if not isinstance(raw, dict):
        return RecordRefusal(
            index,
            INVALID_ENVELOPE,
            "a record must be a JSON object",
            (_error("record_type", "a record must be a JSON object", "un enregistrement doit être un objet JSON"),),
        )
    errors: list[FieldError] = []
    op_raw = raw.get("operation", "upsert")
    operation = (
        {"upsert": Operation.UPSERT, "delete": Operation.DELETE}.get(str(op_raw).lower())
        if isinstance(op_raw, str)
        else None
    )
    if operation is None:
        errors.append(
            _error(
                "operation",
                "operation: expected 'upsert' or 'delete'",
                "operation : 'upsert' ou 'delete' attendu",
                "operation",
                op_raw,
            )
        )
    is_feature = raw.get("type") == "Feature"
    if is_feature:
        props = raw.get("properties")
        if props is None:
            props = {}
        if not isinstance(props, dict):
            errors.append(
                _error("properties", "properties: expected an object", "properties : objet attendu", "properties")
            )
            props = {}
        attributes = {str(k): _flat(v) for k, v in props.items()}
    else:
        attributes = {str(k): _flat(v) for k, v in raw.items() if k not in RESERVED}
    explicit_id = raw.get("id") if is_feature else raw.get("feature_id")
    if (explicit_id is not None and not isinstance(explicit_id, str | int)) or isinstance(explicit_id, bool):
        errors.append(
            _error(
                "feature_id",
                "feature id: expected text or a whole number",
                "identifiant : texte ou entier attendu",
                "feature_id",
                explicit_id,
            )
        )
        explicit_id = None
    if is_feature and explicit_id is not None and definition.identity_field not in attributes:
        attributes[definition.identity_field] = _flat(explicit_id)
    geometry = _geometry(raw.get("geometry"), raw.get("crs", crs))
    geometry_error = geometry if isinstance(geometry, FieldError) else None
    sequence = _sequence(raw.get("sequence"), default_sequence)
    if isinstance(sequence, FieldError):
        errors.append(sequence)
    stated = raw.get("commune")
    if stated is None and definition.commune_field:
        stated = attributes.get(definition.commune_field)
    commune = commune_code(stated) if stated not in (None, "") else None
    if errors or geometry_error is not None:
        all_errors = (*errors, *([geometry_error] if geometry_error else []))
        reason = INVALID_GEOMETRY if not errors else INVALID_ENVELOPE
        return RecordRefusal(index, reason, "; ".join(e.message_en for e in all_errors), tuple(all_errors))
    assert operation is not None and not isinstance(sequence, FieldError) and not isinstance(geometry, FieldError)
    return _Shaped(
        operation,
        SourceRecord(index + 1, attributes, geometry if operation is Operation.UPSERT else None),
        commune,
        commune_code(raw["commune"]) if raw.get("commune") not in (None, "") else None,
        None if explicit_id is None else str(explicit_id).strip(),
        sequence,
    )


def _through_profile(shaped: _Shaped, profile: SourceProfile, definition: DatasetDefinition) -> _Shaped:
    identity = definition.identity_field if len(definition.identity_fields) == 1 else None
    profiled = apply_profile(profile, shaped.record, identity_field=identity)
    record = profiled.record
    if shaped.operation is Operation.DELETE:
        record = replace(record, geometry=None)
    stated = shaped.commune
    if stated is None and definition.commune_field:
        value = record.attributes.get(definition.commune_field)
        stated = commune_code(value) if value not in (None, "") else None
    if stated is None and profiled.commune:
        stated = commune_code(profiled.commune)
    return replace(shaped, record=record, commune=stated)


def _is_insee(code: str) -> bool:
    return len(code) == 5 and (code.isdigit() or (code[:2] in ("2A", "2B") and code[2:].isdigit()))


def parse_batch(
    body: Any,
    definition: DatasetDefinition,
    *,
    commune: str | None,
    source: str,
    sequence: int,
    occurred_at: datetime,
    new_id: Callable[[], str],
    profile: SourceProfile | None = None,
) -> ParsedBatch:
    """``commune``: the token's commune (None for the Métropole's admin token, which may write any commune
    and then reads each record's commune). ``profile``: the records are in a commune's own layout, turned
    into the dataset's fields by this source profile. Raises MalformedBody when the body is not a batch at all."""
    records = records_of(body)
    crs = None
    if isinstance(body, Mapping) and isinstance(body.get("crs"), dict):
        props = body["crs"].get("properties")
        crs = props.get("name") if isinstance(props, dict) else None
    accepted: list[AcceptedRecord] = []
    refused: list[RecordRefusal] = []
    shaped_records: list[_Shaped] = []
    for index, raw in enumerate(records):
        shaped = _shape(index, raw, definition, crs, sequence)
        if isinstance(shaped, RecordRefusal):
            refused.append(shaped)
            continue
        if profile is not None:
            shaped = _through_profile(shaped, profile, definition)
        if commune is not None and shaped.commune is not None and shaped.commune != commune:
            en = f"this token writes for commune {commune}; the record belongs to commune {shaped.commune[:10]}"
            fr = f"ce jeton écrit pour la commune {commune} ; l'enregistrement appartient à la commune {shaped.commune[:10]}"
            refused.append(
                RecordRefusal(
                    index, FORBIDDEN_COMMUNE, en, (_error("forbidden_commune", en, fr, "commune", shaped.commune),)
                )
            )
            continue
        shaped_records.append(shaped)
    # One upsert_events call per (commune, sequence) group: the record -> event rules (identity and commune
    # read under any spelling of the field) are change_events.py's, applied once per batch, not per record.
    groups: dict[tuple[str | None, int], list[_Shaped]] = {}
    for shaped in shaped_records:
        groups.setdefault((commune or shaped.explicit_commune, shaped.sequence), []).append(shaped)
    events: dict[int, ChangeEvent] = {}
    for (group_commune, group_sequence), members in groups.items():
        produced = upsert_events(
            [m.record for m in members],
            definition,
            commune=group_commune,
            source=source,
            sequence=group_sequence,
            occurred_at=occurred_at,
            new_id=new_id,
        )
        for m, ev in zip(members, produced, strict=True):
            events[m.record.line] = ev
    for shaped in shaped_records:
        index = shaped.record.line - 1
        event = events[shaped.record.line]
        if shaped.feature_id and not event.feature_id:
            event = replace(event, feature_id=shaped.feature_id)
        if shaped.operation is Operation.DELETE:
            event = replace(event, operation=Operation.DELETE, geometry=None, attributes={})
        errors: list[FieldError] = []
        if not event.feature_id or len(event.feature_id) > MAX_ID_LEN:
            errors.append(
                _error(
                    "feature_id",
                    f"feature id: the record needs a {definition.identity_field!r} of 1 to {MAX_ID_LEN} characters",
                    f"identifiant : l'enregistrement doit porter un {definition.identity_field!r} de 1 à {MAX_ID_LEN} caractères",
                    definition.identity_field,
                    event.feature_id or None,
                )
            )
        if not _is_insee(event.commune):
            errors.append(
                _error(
                    "insee",
                    "commune: not an INSEE code (5 characters); an admin token must say each record's commune",
                    "commune : ce n'est pas un code INSEE (5 caractères) ; un jeton administrateur doit indiquer la commune de chaque enregistrement",
                    "commune",
                    event.commune or None,
                )
            )
        if errors:
            refused.append(
                RecordRefusal(
                    index,
                    INVALID_ENVELOPE,
                    "; ".join(e.message_en for e in errors),
                    tuple(errors),
                    event.feature_id or None,
                )
            )
            continue
        accepted.append(AcceptedRecord(index, event))
    accepted.sort(key=lambda a: a.index)
    refused.sort(key=lambda r: r.index)
    return ParsedBatch(tuple(accepted), tuple(refused))


# A fixed namespace for the event ids of requests that carry an Idempotency-Key (uuid5 of it).
IDEMPOTENT_EVENT_IDS = uuid.UUID("6f1d2a5e-8b0c-4f4e-9a57-0d1c3e2b7a90")


def idempotent_event_ids(batch: ParsedBatch, scope: str, key: str, request_sha256: str) -> ParsedBatch:
    """The same request (same scope, key and body) always yields the same event ids, one per record index,
    so a retry after a 503 whose records the broker did take after all is applied once by the normaliser
    (which applies an event id once)."""
    accepted = tuple(
        AcceptedRecord(
            a.index,
            replace(
                a.event,
                event_id=str(uuid.uuid5(IDEMPOTENT_EVENT_IDS, f"{scope}\x00{key}\x00{request_sha256}\x00{a.index}")),
            ),
        )
        for a in batch.accepted
    )
    return ParsedBatch(accepted, batch.refused)


def refuse_too_large(batch: ParsedBatch, sizes: Mapping[int, int], limit: int) -> ParsedBatch:
    """Move the accepted records at positions ``sizes`` (position in ``batch.accepted`` -> encoded size) to
    the refusals, with reason ``record_too_large`` naming the limit: a retry can never succeed."""
    refused = list(batch.refused)
    for pos, size in sizes.items():
        a = batch.accepted[pos]
        en = f"the record is {size} bytes once encoded; the limit is {limit} bytes per record"
        fr = f"l'enregistrement fait {size} octets une fois encodé ; la limite est de {limit} octets par enregistrement"
        refused.append(
            RecordRefusal(
                a.index, RECORD_TOO_LARGE, en, (_error("record_size", en, fr, None, None),), a.event.feature_id
            )
        )
    accepted = tuple(a for pos, a in enumerate(batch.accepted) if pos not in sizes)
    refused.sort(key=lambda r: r.index)
    return ParsedBatch(accepted, tuple(refused))
