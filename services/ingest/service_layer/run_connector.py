"""Run a snapshot connector once: fetch the source, diff it with the last applied snapshot, hold it if
the guard says so, else publish the upserts and deletes and record the new state.

The state is recorded only after the broker acknowledged every event, so a failed run changes nothing
and the next run emits the same diff again (the normaliser finds repeated content ``unchanged``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.contract.datasets.catalogue import DatasetCatalogue, DatasetDefinition
from services.ingest.domain.snapshot_diff import (
    SnapshotDiff,
    diff,
    hold_reason,
    index_snapshot,
    mirror_events,
)
from services.ingest.domain.source_profiles import ProfileError, apply_to_records, profile_from_dict
from services.ingest.domain.source_records import SourceRecord, UnreadableFile, reader_for
from services.ingest.service_layer.ports import (
    Clock,
    ConnectorConfig,
    ConnectorStore,
    EventSink,
    ProfileStore,
    SnapshotFetcher,
    SnapshotUnavailable,
)

APPLIED, HELD, FAILED, DRY_RUN, BUSY, UP_TO_DATE = "applied", "held", "failed", "dry_run", "busy", "up_to_date"


class UnknownConnector(LookupError):
    pass


@dataclass
class RunReport:
    connector: str
    status: str
    records: int = 0
    features: int = 0
    previous_features: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    unidentified: int = 0
    duplicates: int = 0
    other_commune: int = 0
    events_published: int = 0
    hold_reason: str | None = None
    error: str | None = None
    diff: SnapshotDiff | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "diff"}


@dataclass(frozen=True)
class Progress:
    """Callbacks for a progress display (rich bars in the CLI); all optional."""

    on_total: Callable[[int], None] | None = None
    on_sent: Callable[[int], None] | None = None


def source_name(source: str) -> str:
    """The file name a reader is chosen by (``?query`` and ``#fragment`` of a URL left out)."""
    return source.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]


async def _through_profile(
    cfg: ConnectorConfig, records: list[SourceRecord], definition: DatasetDefinition, profiles: ProfileStore | None
) -> list[SourceRecord]:
    key = (cfg.commune or "*", cfg.dataset, cfg.profile or "")
    stored = await profiles.get(*key) if profiles is not None else None
    if stored is None:
        raise ProfileError(f"no saved profile {'/'.join(key)} (odc profile save)")
    return apply_to_records(profile_from_dict(stored.profile), records, definition.identity_fields)


async def run_connector(
    name: str,
    *,
    store: ConnectorStore,
    fetcher: SnapshotFetcher,
    sink: EventSink,
    catalogue: DatasetCatalogue,
    clock: Clock,
    new_id: Callable[[], str],
    dry_run: bool = False,
    confirm: bool = False,
    progress: Progress = Progress(),
    profiles: ProfileStore | None = None,
) -> RunReport:
    """``profiles``: where the connector's source profile is saved (a connector with a profile fails without it)."""
    cfg = await store.get(name)
    if cfg is None:
        raise UnknownConnector(name)
    definition = catalogue.get(cfg.dataset)
    if definition is None:
        report = RunReport(name, FAILED, error=f"unknown dataset {cfg.dataset!r}")
        await store.record_run(name, FAILED, report.summary())
        return report
    async with store.exclusive(name) as mine:
        if not mine:
            return RunReport(name, BUSY, error="another run of this connector is in progress")
        try:
            data = await fetcher.fetch(cfg.source)
            records = list(reader_for(source_name(cfg.source), cfg.fmt)(data))
            if cfg.profile is not None:
                records = await _through_profile(cfg, records, definition, profiles)
        except (SnapshotUnavailable, UnreadableFile, ProfileError) as bad:
            report = RunReport(name, FAILED, error=str(bad))
            if not dry_run:
                await store.record_run(name, FAILED, report.summary())
            return report
        index = index_snapshot(records, definition, commune=cfg.commune)
        previous = await store.state(name)
        d = diff(previous, index)
        report = RunReport(
            name,
            DRY_RUN if dry_run else APPLIED,
            records=index.records,
            features=len(index.entries),
            previous_features=len(previous),
            added=len(d.added),
            changed=len(d.changed),
            removed=len(d.removed),
            unchanged=d.unchanged,
            unidentified=index.unidentified,
            duplicates=index.duplicates,
            other_commune=index.other_commune,
            diff=d,
        )
        reason = hold_reason(len(previous), index, d, cfg.max_delete_share)
        report.hold_reason = reason
        if dry_run:
            return report
        if reason is not None and not confirm:
            report.status = HELD
            await store.record_run(name, HELD, report.summary())
            return report
        if d.is_empty:
            report.status = UP_TO_DATE
            await store.record_run(name, UP_TO_DATE, report.summary())
            return report
        now = clock.now()
        events = mirror_events(
            index,
            d,
            definition,
            source=f"connector:{name}",
            sequence=int(now.timestamp() * 1_000_000),
            occurred_at=now,
            new_id=new_id,
        )
        if progress.on_total:
            progress.on_total(len(d.added) + len(d.changed) + len(d.removed))
        report.events_published = await sink.publish(events, on_sent=progress.on_sent, window=500)
        upserts = {ref: index.entries[ref].fingerprint for ref in (*d.added, *d.changed)}
        await store.apply(name, upserts, d.removed, report.summary())
        return report
