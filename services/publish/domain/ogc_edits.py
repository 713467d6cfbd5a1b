"""OGC API – Features Part 4 (create, replace, update, delete) as a commune's write path: the decisions, pure.

A write on ``/ogc/collections/{id}/items`` is not written to the database: it becomes ONE record of the push
API (services/ingest), which signs it and publishes it on the input topic like any other change event, so the
stream validates, deduplicates and versions it. What is decided here:

- the record sent for each operation (properties without the ``odc:`` members the service adds; the path's
  commune and feature id; a PATCH is an RFC 7396 merge patch of the current feature, sent whole);
- optimistic locking: a strong ETag per feature (``feature_etag``), ``If-Match`` compared strongly (RFC 9110
  13.1.1), a stale one is a 412;
- what the answer is once the push API has answered and the stream has (or has not yet) decided:
  201/200/204 when the change got in, 202 with a link to follow when it is still on its way, the refusal's
  reasons when the stream refused it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from services.contract.datasets.catalogue import DatasetDefinition

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/update",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/features",
]
MERGE_PATCH = "application/merge-patch+json"
FEATURE_TYPES = ("application/geo+json", "application/json")
ALLOW_ITEMS = "GET, HEAD, POST, OPTIONS"
ALLOW_ITEM = "GET, HEAD, PUT, PATCH, DELETE, OPTIONS"
SERVICE_MEMBER_PREFIX = "odc:"  # members the service adds (conformance, links): never sent back


class BadEdit(ValueError):
    """A write refused before anything is sent: ``status`` and an OGC exception ``code``."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status, self.code = status, code


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 MergePatch(Target, Patch): objects merge member by member, ``null`` removes, anything else
    replaces (arrays included)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def feature_etag(geometry_geojson: str | None, attributes_json: str) -> str:
    """A strong ETag of a feature's current state (its geometry and attributes as published)."""
    digest = hashlib.sha256()
    digest.update((geometry_geojson or "null").encode("utf-8"))
    digest.update(b"\x00")
    digest.update(attributes_json.encode("utf-8"))
    return f'"{digest.hexdigest()[:32]}"'


def if_match_holds(header: str | None, current: str | None) -> bool:
    """RFC 9110 13.1.1: ``*`` holds when the feature exists; otherwise one listed tag must equal the current
    one by the strong comparison (a weak tag ``W/"..."`` never does). No header: holds."""
    if header is None:
        return True
    tags = [t.strip() for t in header.split(",") if t.strip()]
    if "*" in tags:
        return current is not None
    return current is not None and current in tags


def parse_json_body(body: bytes, content_type: str | None, accepted: tuple[str, ...]) -> Any:
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in accepted:
        raise BadEdit(
            415,
            "UnsupportedMediaType",
            f"Content-Type {media or '(none)'!r} is not accepted here; send {' or '.join(accepted)}",
        )
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEdit(400, "InvalidBody", f"the body is not JSON: {exc}") from exc


def feature_of(doc: Any) -> dict[str, Any]:
    """The GeoJSON Feature of a create or replace body."""
    if not isinstance(doc, dict) or doc.get("type") != "Feature":
        raise BadEdit(400, "InvalidBody", 'the body must be one GeoJSON Feature ({"type": "Feature", ...})')
    props = doc.get("properties")
    if props is not None and not isinstance(props, dict):
        raise BadEdit(400, "InvalidBody", "properties: expected an object or null")
    geometry = doc.get("geometry")
    if geometry is not None and not isinstance(geometry, dict):
        raise BadEdit(400, "InvalidBody", "geometry: expected a GeoJSON geometry object or null")
    return doc


def _own_properties(props: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (props or {}).items() if not str(k).startswith(SERVICE_MEMBER_PREFIX)}


def upsert_record(
    feature: dict[str, Any], definition: DatasetDefinition, commune: str | None, feature_id: str | None
) -> dict[str, Any]:
    """The push API record of a create or replace: the Feature's own properties and geometry, its commune and,
    when the path names it, its id (a single identity field carries it)."""
    props = _own_properties(feature.get("properties"))
    record: dict[str, Any] = {"type": "Feature", "properties": props, "geometry": feature.get("geometry")}
    if feature_id is not None:
        if len(definition.identity_fields) == 1:
            field = definition.identity_field
            given = props.get(field)
            if given not in (None, "") and str(given).strip() != feature_id:
                raise BadEdit(
                    400,
                    "InvalidBody",
                    f"{field} is {given!r} in the body but the feature is {feature_id!r}: a feature's id does not "
                    "change (delete it and create another)",
                )
            props[field] = int(feature_id) if _is_integer(definition, field) and feature_id.isdigit() else feature_id
        record["id"] = feature_id
    if commune is not None:
        record["commune"] = commune
    return record


def _is_integer(definition: DatasetDefinition, name: str) -> bool:
    fields = definition.table_schema.get("fields") or []
    return any(f.get("name") == name and f.get("type") == "integer" for f in fields if isinstance(f, dict))


def identity_kept(definition: DatasetDefinition, current: dict[str, Any], new: dict[str, Any]) -> None:
    """A replace or update keeps the feature's identity fields (a composite identity is derived from them,
    so changing one would make another feature): a 400 otherwise."""
    if len(definition.identity_fields) < 2:
        return
    for name in definition.identity_fields:
        if str(current.get(name, "")).strip() != str(new.get(name, "")).strip():
            raise BadEdit(
                400,
                "InvalidBody",
                f"{name} is part of this dataset's feature identity ({', '.join(definition.identity_fields)}) and "
                "cannot change: delete the feature and create another",
            )


def new_feature_id(definition: DatasetDefinition, feature: dict[str, Any], fresh: str) -> str | None:
    """The id of a created feature: the body's identity field, else its ``id``, else one made from ``fresh`` (a
    UUID: as it is, or a 12-digit number for an integer identity field) for single-field identities; None for a
    composite identity (the push API derives it from the fields)."""
    if len(definition.identity_fields) != 1:
        return None
    props = feature.get("properties") or {}
    given = props.get(definition.identity_field)
    if given not in (None, ""):
        return str(given).strip()
    if isinstance(feature.get("id"), str | int) and not isinstance(feature.get("id"), bool):
        return str(feature["id"]).strip()
    if _is_integer(definition, definition.identity_field):
        return str(int(fresh.replace("-", ""), 16) % 10**12)
    return fresh


def delete_record(commune: str, feature_id: str) -> dict[str, Any]:
    return {"type": "Feature", "id": feature_id, "commune": commune, "operation": "delete", "properties": {}}


@dataclass(frozen=True)
class EditAnswer:
    """What the OGC API answers a write: status, an OGC exception (or None), and where to follow it."""

    status: int
    code: str | None = None
    description: str | None = None
    follow: str | None = None  # the receipt: each record's outcome
    details: tuple[dict[str, Any], ...] = ()


SUCCESS = {"create": 201, "replace": 200, "update": 200, "delete": 204}
GOT_IN = ("conforming", "incomplete")


def answer_of_outcome(operation: str, outcome: str | None, receipt_url: str | None, problems: Any = ()) -> EditAnswer:
    """The answer once the stream has decided (``outcome`` conforming, incomplete or refused, as the push
    API's receipt says) or not yet (pending / None): Part 4 answers 202 for a change queued for processing."""
    if outcome in GOT_IN:
        return EditAnswer(SUCCESS[operation], follow=receipt_url)
    if outcome == "refused":
        reasons = tuple(e for e in (problems or ()) if isinstance(e, dict))
        words = "; ".join(str(e.get("message") or e.get("message_en") or "") for e in reasons) or "refused"
        return EditAnswer(
            422, "ChangeRefused", f"the stream refused the change: {words}", follow=receipt_url, details=reasons
        )
    return EditAnswer(
        202,
        description="the change is published on the input topic and still being processed: follow it at the receipt",
        follow=receipt_url,
    )


def refusal_of_push(status: int, body: Any) -> EditAnswer:
    """The push API refused the request or its one record: the same status (the record-level refusals of a
    202 become a 400 with their reasons)."""
    if status == 202 and isinstance(body, dict):
        refused = body.get("refused") or []
        errors = tuple(e for r in refused for e in (r.get("errors") or []) if isinstance(e, dict))
        message = "; ".join(str(r.get("message", "")) for r in refused) or "the record was refused"
        code = "Forbidden" if any(r.get("reason") == "forbidden_commune" for r in refused) else "InvalidBody"
        return EditAnswer(403 if code == "Forbidden" else 400, code, message, details=errors)
    said = body.get("message") if isinstance(body, dict) else None
    codes = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 413: "PayloadTooLarge", 429: "TooManyRequests"}
    return EditAnswer(status, codes.get(status, "ServiceUnavailable" if status >= 500 else "Refused"),
                      str(said or f"the push API answered {status}"))  # fmt: skip
