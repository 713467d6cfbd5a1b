"""The time the next version falls due, read from the pending changes (the cutter sleeps until then)."""

from __future__ import annotations

from datetime import datetime

from services.contract.datasets.catalogue import DatasetCatalogue
from services.publish.domain.cut_schedule import earliest_cut_at
from services.publish.service_layer.ports import UnitOfWorkFactory


async def next_cut_due(
    *, catalogue: DatasetCatalogue, uow_factory: UnitOfWorkFactory, max_delay_seconds: float
) -> datetime | None:
    async with uow_factory() as uow:
        summaries = await uow.pending_summaries()
    policies = {d: definition.versioning for d in summaries if (definition := catalogue.get(d)) is not None}
    return earliest_cut_at(policies, summaries, max_delay_seconds)
