"""Decide a batch's events, linking new records to existing features of another commune when they are the
same real thing (``domain/feature_links.py`` holds the rules: each record stays its own feature, and only
carries a link). Set-based, a few statements per batch whatever its size: one loads the previous model's
groups the batch touches (to dissolve them), one spatial query finds the live features near all its new
records (with the values of the attributes the dataset compares, so a feature of another name is ruled out
there and then), one locks and loads the rows that adds, and one reloads the groups once all of them are
locked (another worker may have changed one in between). Batches with no dataset that links records take
the plain path and pay nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

from services.contract.datasets.catalogue import DatasetCatalogue, SamePlacePolicy
from services.normalise.domain.canonical_feature import Candidate, FeatureKey
from services.normalise.domain.dedup_decisions import Decision, StoredFeature, decide_batch
from services.normalise.domain.feature_links import Member, decide_linked_batch, dissolve_groups
from services.normalise.domain.same_place import attributes_allow, folded_text_values
from services.normalise.service_layer.ports import Clock, NearbyProbe, NormaliseUnitOfWork, UnitOfWorkFactory


def _probe(c: Candidate, policy: SamePlacePolicy) -> NearbyProbe:
    assert c.feature is not None and c.feature.geometry is not None
    compared = policy.compared_fields
    return NearbyProbe(
        c.key, c.feature.geometry, policy.distance_m, compared, folded_text_values(c.feature.attributes, compared)
    )


def _order(k: FeatureKey) -> tuple[str, str, str]:
    return (k.dataset, k.commune, k.feature_id)


async def decide_with_same_place(
    uow: NormaliseUnitOfWork,
    catalogue: DatasetCatalogue,
    stored: Mapping[FeatureKey, StoredFeature],
    candidates: list[Candidate],
    now: datetime,
) -> tuple[list[Decision], list[Decision]]:
    """Returns (one decision per candidate on its own key, for the report; the decisions to save, on the
    canonical keys)."""
    policies = {d.id: d.same_place for d in catalogue if d.same_place.distance_m > 0}
    linking = [c for c in candidates if c.key.dataset in policies]
    if not linking:
        decisions = decide_batch(dict(stored), candidates)
        return decisions, decisions
    links = uow.same_place
    members = await links.load_groups(sorted({c.key for c in linking}, key=_order))
    creating = [
        c
        for c in linking
        if c.feature is not None
        and c.feature.geometry is not None
        and c.key not in members
        and (c.key not in stored or stored[c.key].deleted)
    ]
    extra = {m.canonical for m in members.values()} | set(members)
    near: set[FeatureKey] = set()
    if creating:
        await links.lock_datasets(sorted({c.key.dataset for c in creating}))
        probes = [c for c in creating if c.feature is not None and c.feature.geometry is not None]
        found = await links.find_nearby([_probe(c, policies[c.key.dataset]) for c in probes])
        # Only the features a probe could be linked to are locked and loaded: a name that differs rules a
        # feature out before any geometry is read (find_link applies the same test again).
        near = {
            key
            for i, key, values in found
            if attributes_allow(probes[i].feature.attributes, values, policies[key.dataset])  # type: ignore[union-attr]
        }
        extra |= near  # read to decide links only: a neighbour is never written by another commune's record
    extra -= stored.keys()
    loaded = dict(stored)
    if extra:
        loaded.update(await uow.lock_and_load(sorted(extra, key=_order)))
    if members:
        # again, now that every key of these groups is locked: another worker may have dissolved one of them
        # between the first read and the lock (groups are never made any more, only dissolved)
        members = await links.load_groups(sorted({c.key for c in linking}, key=_order))
    # Pure but long for dense polygons (thousands of neighbours): in a worker thread, so the event loop keeps
    # the consumer's heartbeats and the next batch's preparation going (GEOS releases the GIL; Python code
    # shares it in 5 ms slices). The 100,000-park benchmark lost its group session 4 times with it inline.
    batch = await asyncio.to_thread(decide_linked_batch, loaded, members, candidates, policies, now)
    if batch.dissolved:
        await links.forget_groups(batch.dissolved)
    return batch.reported, batch.to_save


async def dissolve_previous_groups(uow_factory: UnitOfWorkFactory, clock: Clock, per_transaction: int = 200) -> int:
    """Dissolve every group the previous model left (issue #13), ``per_transaction`` groups per transaction, each
    change through the outbox like any other. Run by the normaliser at start; a no-op once none is left. Returns
    the number of groups dissolved."""
    done = 0
    while True:
        async with uow_factory() as uow:
            canonicals = await uow.same_place.pending_groups(per_transaction)
            if not canonicals:
                return done
            first = await uow.same_place.load_groups(canonicals)
            keys = sorted({m.key for m in first.values()} | set(canonicals), key=_order)
            stored = await uow.lock_and_load(keys)
            members = await uow.same_place.load_groups(canonicals)  # again, under the locks
            groups: dict[FeatureKey, list[Member]] = {}
            for m in members.values():
                groups.setdefault(m.canonical, []).append(m)
            now = clock.now()
            await uow.save(dissolve_groups(groups, stored, now), now)
            await uow.same_place.forget_groups(canonicals)
            await uow.commit()
            done += len(canonicals)
