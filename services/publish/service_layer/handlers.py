"""The publisher's handlers: record received changes; cut the versions that are due."""

from __future__ import annotations

from collections.abc import Sequence

from services.contract.datasets.catalogue import DatasetCatalogue, VersioningPolicy
from services.contract.messages import FeatureChange
from services.publish.domain.versioning import ReceivedChange, VersionDraft, build_version, should_cut
from services.publish.service_layer.ports import Clock, UnitOfWorkFactory


def to_received(c: FeatureChange) -> ReceivedChange:
    return ReceivedChange(c.change_id, c.dataset, c.commune, c.feature_id, c.kind, c.before, c.after)


async def record_changes(changes: Sequence[FeatureChange], *, uow_factory: UnitOfWorkFactory, clock: Clock) -> int:
    async with uow_factory() as uow:
        new = await uow.record_changes([to_received(c) for c in changes], clock.now())
        await uow.commit()
    return new


async def cut_due_versions(
    *, catalogue: DatasetCatalogue, uow_factory: UnitOfWorkFactory, clock: Clock, source: str, max_delay_seconds: float
) -> list[VersionDraft]:
    """Cut one version for every dataset whose policy says it is due; one transaction per version."""
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
            changes = await uow.pending_changes(dataset, policy.max_changes)
            if not changes:
                continue
            draft = build_version(state, changes, clock.now())
            await uow.save_version(draft, state, [c.change_id for c in changes], source)
            await uow.commit()
        if draft is not None:
            published.append(draft)
    return published
