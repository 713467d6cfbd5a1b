"""The publisher's handlers: record received changes; cut the versions that are due."""

from __future__ import annotations

from collections.abc import Sequence

from services.contract.datasets.catalogue import DatasetCatalogue, VersioningPolicy
from services.contract.messages import FeatureChange
from services.publish.domain.version_transaction import NotificationFormat, decide_version
from services.publish.domain.versioning import ReceivedChange, VersionDraft, should_cut
from services.publish.service_layer.ports import Clock, UnitOfWorkFactory


def to_received(c: FeatureChange) -> ReceivedChange:
    return ReceivedChange(c.change_id, c.dataset, c.commune, c.feature_id, c.kind, c.before, c.after)


async def record_changes(changes: Sequence[FeatureChange], *, uow_factory: UnitOfWorkFactory, clock: Clock) -> int:
    async with uow_factory() as uow:
        new = await uow.record_changes([to_received(c) for c in changes], clock.now())
        await uow.commit()
    return new


async def cut_due_versions(
    *,
    catalogue: DatasetCatalogue,
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    source: str,
    max_delay_seconds: float,
    base_url: str = "",
    max_inline_changes: int = 0,
    version_max_bytes: int = 8 * 1024 * 1024,
) -> list[VersionDraft]:
    """Cut one version for every dataset whose policy says it is due; one transaction per version, decided by
    the domain (version_transaction.decide_version) and written by the unit of work."""
    fmt = NotificationFormat(source, base_url, max_inline_changes)
    async with uow_factory() as uow:
        summaries = await uow.pending_summaries()
    now = clock.now()
    published: list[VersionDraft] = []
    for dataset, summary in sorted(summaries.items()):
        definition = catalogue.get(dataset)
        policy = definition.versioning if definition is not None else VersioningPolicy()
        if not should_cut(policy, summary, now, max_delay_seconds):
            continue
        async with uow_factory() as uow:
            state = await uow.lock_dataset(dataset)
            write = decide_version(
                state, await uow.pending_changes(dataset, policy.max_changes, version_max_bytes), clock.now(), fmt
            )
            if write is None:
                continue
            await uow.save_version(write)
            await uow.commit()
        if write.draft is not None:
            published.append(write.draft)
    return published
