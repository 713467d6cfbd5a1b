"""Turn source records into change events for one dataset. Pure: ids and time are injected."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from services.contract.datasets.catalogue import DatasetDefinition
from services.contract.datasets.field_names import FieldMatcher, stated_commune
from services.contract.messages import AttributeValue, ChangeEvent, Operation
from services.ingest.domain.source_records import SourceRecord


def commune_code(value: object) -> str:
    """INSEE codes stored as integers lose their leading zero (1053 -> 01053)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text.zfill(5) if text.isdigit() and len(text) < 5 else text


def feature_id_of(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def commune_of(attributes: dict[str, AttributeValue], definition: DatasetDefinition, matcher: FieldMatcher) -> str:
    """The commune a record names: its commune field, else a commune-like column (field_names.COMMUNE_COLUMNS)."""
    if definition.commune_field:
        value = matcher.value(attributes, definition.commune_field)
        if value not in (None, ""):
            return commune_code(value)
    found = stated_commune(attributes)
    return commune_code(found[1] if found else None)


def identity_of(attributes: dict[str, AttributeValue], definition: DatasetDefinition, matcher: FieldMatcher) -> str:
    """The record's feature id: its identity field, or the identity fields joined by '|' for a composite
    identity (a schema with no identifier column, such as SCDL subsidies). Read under whichever name the
    source used for the field (case, accents, declared aliases)."""
    parts = [feature_id_of(matcher.value(attributes, name)) for name in definition.identity_fields]
    if not any(parts):
        return ""
    if len(parts) == 1:
        return parts[0]
    # composite: readable head, and a digest of every part so the id stays short and stable
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]
    return "|".join([*parts[:2], digest])


def upsert_events(
    records: Iterable[SourceRecord],
    definition: DatasetDefinition,
    *,
    commune: str | None,
    source: str,
    sequence: int,
    occurred_at: datetime,
    new_id: Callable[[], str],
) -> Iterator[ChangeEvent]:
    """One upsert per record. With ``commune`` None each record's commune is read from the dataset's
    commune field (a sender acting for several communes, like the Métropole's own exports)."""
    matcher = definition.matcher()
    for r in records:
        c = (
            commune
            if commune is not None
            else commune_code(r.commune)
            if r.commune
            else commune_of(r.attributes, definition, matcher)
        )
        yield ChangeEvent(
            event_id=new_id(),
            dataset=definition.id,
            commune=c,
            feature_id=identity_of(r.attributes, definition, matcher),
            operation=Operation.UPSERT,
            occurred_at=occurred_at,
            sequence=sequence,
            source=source,
            geometry=r.geometry,
            attributes=dict(r.attributes),
            source_row=r.line,
        )
