"""Turn source records into change events for one dataset. Pure: ids and time are injected."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from services.contract.datasets.catalogue import DatasetDefinition
from services.contract.messages import ChangeEvent, Operation
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
    for r in records:
        c = commune if commune is not None else commune_code(r.attributes.get(definition.commune_field or ""))
        yield ChangeEvent(
            event_id=new_id(),
            dataset=definition.id,
            commune=c,
            feature_id=feature_id_of(r.attributes.get(definition.identity_field)),
            operation=Operation.UPSERT,
            occurred_at=occurred_at,
            sequence=sequence,
            source=source,
            geometry=r.geometry,
            attributes=dict(r.attributes),
        )
