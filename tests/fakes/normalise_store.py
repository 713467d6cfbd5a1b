"""In-memory fake of the normaliser's unit of work (our own port), for unit tests of the handler.
tests/contracts/test_normalise_store_contract.py runs the same checks against it and the PostGIS adapter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType

from shapely.ops import nearest_points

from services.contract.messages import Rejection
from services.normalise.domain.canonical_feature import FeatureKey
from services.normalise.domain.dedup_decisions import Decision, StoredFeature, final_states
from services.normalise.domain.feature_links import Member
from services.normalise.domain.same_place import PlacedRecord, distance_m
from services.normalise.service_layer.ports import NearbyProbe


class InMemoryNormaliseStore:
    def __init__(self) -> None:
        self.features: dict[FeatureKey, StoredFeature] = {}
        self.processed: set[str] = set()  # processed_event: events that wrote no change row
        self.changes: list[tuple[int, Decision]] = []
        self.rejections: dict[str, Rejection] = {}
        self.resolved: set[str] = set()  # rejection ids resolved by a later accepted record
        self.tally: Counter[tuple[str, str, str]] = Counter()
        self.members: dict[FeatureKey, Member] = {}
        self._next_change = 1


class InMemorySamePlaceStore:
    def __init__(self, store: InMemoryNormaliseStore) -> None:
        self.store = store
        self.staged: dict[FeatureKey, Member] = {}
        self.forgotten: set[FeatureKey] = set()
        self.locked: list[str] = []

    async def load_groups(self, keys: Sequence[FeatureKey]) -> dict[FeatureKey, Member]:
        members = {k: m for k, m in {**self.store.members, **self.staged}.items() if m.canonical not in self.forgotten}
        groups = {(m.canonical) for k, m in members.items() if k in set(keys)}
        return {k: m for k, m in members.items() if m.canonical in groups}

    async def lock_datasets(self, datasets: Sequence[str]) -> None:
        self.locked.extend(datasets)

    async def find_nearby(self, probes: Sequence[NearbyProbe]) -> list[tuple[int, FeatureKey, dict[str, object]]]:
        """Every feature within the distance (the fake rules nothing out by its values)."""
        out: list[tuple[int, FeatureKey, dict[str, object]]] = []
        for i, probe in enumerate(probes):
            key, geometry, metres, names = probe.key, probe.geometry, probe.distance_m, probe.compared
            for k, s in self.store.features.items():
                if (
                    k.dataset != key.dataset
                    or k.commune == key.commune
                    or s.deleted
                    or s.feature is None
                    or s.feature.geometry is None
                ):
                    continue
                a, b = nearest_points(geometry, s.feature.geometry)
                if distance_m(PlacedRecord("", a.x, a.y, {}), PlacedRecord("", b.x, b.y, {})) <= metres:
                    out.append((i, k, {n: s.feature.attributes[n] for n in names if n in s.feature.attributes}))
        return out

    async def save_members(self, members: Sequence[Member], at: datetime) -> None:
        self.staged.update({m.key: m for m in members})

    async def pending_groups(self, limit: int) -> list[FeatureKey]:
        keys = {m.canonical for m in self.store.members.values() if m.canonical not in self.forgotten}
        return sorted(keys, key=lambda k: (k.dataset, k.commune, k.feature_id))[:limit]

    async def forget_groups(self, canonicals: Sequence[FeatureKey]) -> None:
        self.forgotten |= set(canonicals)


class InMemoryUnitOfWork:
    def __init__(self, store: InMemoryNormaliseStore) -> None:
        self.store = store
        self._staged: list[object] = []
        self._claimed: set[str] = set()
        self._finals: dict[FeatureKey, StoredFeature] = {}
        self._changes: list[Decision] = []
        self._rejections: list[Rejection] = []
        self._resolved: set[str] = set()
        self._tally: Counter[tuple[str, str, str]] = Counter()
        self.same_place = InMemorySamePlaceStore(store)

    async def __aenter__(self) -> InMemoryUnitOfWork:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._claimed, self._finals, self._changes, self._rejections = set(), {}, [], []
        self._tally = Counter()
        self.same_place.staged = {}
        self.same_place.forgotten = set()

    async def processed_events(self, event_ids: Sequence[str]) -> set[str]:
        # feature_change_outbox.event_id and processed_event, committed or written by this unit of work
        carried = {d.candidate.event.event_id for d in [*(d for _, d in self.store.changes), *self._changes]}
        return {e for e in event_ids if e in self.store.processed or e in self._claimed or e in carried}

    async def claim_events(self, event_ids: Sequence[str]) -> None:
        self._claimed |= set(event_ids)

    async def lock_and_load(self, keys: Sequence[FeatureKey]) -> dict[FeatureKey, StoredFeature]:
        return {k: self.store.features[k] for k in keys if k in self.store.features}

    async def save(self, decisions: Sequence[Decision], applied_at: datetime) -> int:
        self._finals = {k: s for k, (s, _) in final_states(list(decisions)).items()}
        self._changes = [d for d in decisions if d.change_kind is not None]
        return len(self._changes)

    async def record_rejections(self, rejections: Sequence[Rejection]) -> None:
        self._rejections = list(rejections)

    async def record_tally(self, tally: Mapping[tuple[str, str, str], int], at: datetime) -> None:
        self._tally.update(tally)

    async def resolve_rejections(self, keys: Sequence[FeatureKey], at: datetime) -> None:
        wanted = {(k.dataset, k.commune, k.feature_id) for k in keys}
        self._resolved = {
            rid for rid, r in self.store.rejections.items() if (r.dataset, r.commune, r.feature_id) in wanted
        }

    async def commit(self) -> None:
        self.store.members.update(self.same_place.staged)
        gone = self.same_place.forgotten
        self.store.members = {k: m for k, m in self.store.members.items() if m.canonical not in gone}
        self.store.tally.update(self._tally)
        self.store.processed |= self._claimed
        self.store.features.update(self._finals)
        for d in self._changes:
            self.store.changes.append((self.store._next_change, d))
            self.store._next_change += 1
        self.store.resolved |= self._resolved
        for r in self._rejections:
            self.store.rejections.setdefault(r.rejection_id, r)
