"""The ports the normaliser's handlers need. Adapters: ``adapters/postgis_store.py`` (real),
``tests/fakes`` (in memory); the same contract test runs against both."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol

from shapely.geometry.base import BaseGeometry

from services.contract.messages import Rejection
from services.normalise.domain.canonical_feature import FeatureKey
from services.normalise.domain.dedup_decisions import Decision, StoredFeature
from services.normalise.domain.feature_links import Member


@dataclass(frozen=True)
class NearbyProbe:
    """A new record looking for a feature of another commune at the same place."""

    key: FeatureKey
    geometry: BaseGeometry
    distance_m: float
    compared: tuple[str, ...]  # the dataset's match and distinct fields
    folded: Mapping[str, str]  # the record's folded text values of those fields (domain.same_place)


class Clock(Protocol):
    def now(self) -> datetime: ...


class SamePlaceStore(Protocol):
    """Linked canonical features (same place, two records), inside the unit of work's transaction."""

    async def load_groups(self, keys: Sequence[FeatureKey]) -> dict[FeatureKey, Member]:
        """Every member of the linked features that any of these keys is a member of, by member key."""
        ...

    async def lock_datasets(self, datasets: Sequence[str]) -> None:
        """Serialise the creation of records in these datasets until commit (two new records of one place
        sent to two workers at once would otherwise both become features)."""
        ...

    async def find_nearby(self, probes: Sequence[NearbyProbe]) -> list[tuple[int, FeatureKey, dict[str, object]]]:
        """Live canonical features of each probe's dataset, of another commune than the probe's, within its
        distance (metres) of its geometry: (index of the probe, the feature's key, the feature's values of the
        probe's compared fields that it has). A store may return more than that, never less; it may leave out
        a feature whose folded text value of a compared field differs from the probe's."""
        ...

    async def save_members(self, members: Sequence[Member], at: datetime) -> None:
        """Write these members' states (insert or replace). Only tests use it now: to build a store as the
        previous model left it (groups are no longer made)."""
        ...

    async def pending_groups(self, limit: int) -> list[FeatureKey]:
        """Canonical keys of up to ``limit`` groups left by the previous model (none once all are dissolved)."""
        ...

    async def forget_groups(self, canonicals: Sequence[FeatureKey]) -> None:
        """Delete every member row of these groups (dissolved: each record is its own feature again)."""
        ...


class NormaliseUnitOfWork(Protocol):
    """One transaction. Nothing is visible to others until ``commit``; leaving without it rolls back."""

    @property
    def same_place(self) -> SamePlaceStore: ...

    async def __aenter__(self) -> NormaliseUnitOfWork: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def processed_events(self, event_ids: Sequence[str]) -> set[str]:
        """Those of these event ids already processed: a change row carries the id, or it was claimed
        (``claim_events``). Reads only; call it after ``lock_and_load`` has locked the events' features, so an
        event another worker is applying is answered once that worker has committed."""
        ...

    async def claim_events(self, event_ids: Sequence[str]) -> None:
        """Record these event ids as processed. Only for events that wrote no change row (stale, unchanged...):
        an applied change's row is its own record (``processed_events`` reads both)."""
        ...

    async def lock_and_load(self, keys: Sequence[FeatureKey]) -> dict[FeatureKey, StoredFeature]:
        """Serialise writers of these keys until commit, and return what is stored for them."""
        ...

    async def save(self, decisions: Sequence[Decision], applied_at: datetime) -> int:
        """Write final feature states, and one outbox row per effective change. Returns changes written."""
        ...

    async def record_rejections(self, rejections: Sequence[Rejection]) -> None:
        """Put rejections in the outbox (idempotent on rejection_id)."""
        ...

    async def record_tally(self, tally: Mapping[tuple[str, str, str], int], at: datetime) -> None:
        """Add accepted-event counts per (dataset, commune, outcome): the communes' status reads them."""
        ...

    async def resolve_rejections(self, keys: Sequence[FeatureKey], at: datetime) -> None:
        """Mark the earlier refusals of these source records resolved: each was accepted in this batch (it
        leaves `odc report` and the refused count)."""
        ...

    async def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> NormaliseUnitOfWork: ...
