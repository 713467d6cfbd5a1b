"""The publisher's version transaction decided in the domain (version_transaction.decide_version) and the
cut handler on the in-memory unit of work (tests/fakes/publish_store.py, held to the PostgreSQL adapter's
contract by tests/integration/test_publish_store_contract.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.contract.datasets.catalogue import DatasetCatalogue
from services.contract.messages import ChangeKind, FeatureChange, FeatureState
from services.publish.domain.notifications import encode_event, structured_event, version_message
from services.publish.domain.version_transaction import NotificationFormat, decide_version
from services.publish.domain.versioning import (
    EMPTY_HASH,
    DatasetState,
    PendingChanges,
    ReceivedChange,
    build_version,
    change_bytes,
)
from services.publish.service_layer.handlers import cut_due_versions, record_changes
from tests.fakes.publish_store import InMemoryPublishStore, InMemoryPublishUnitOfWork

NOW = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
FMT = NotificationFormat("/odc/test", "https://data.example", max_inline_changes=1)
EMPTY = DatasetState("public_toilets", 0, 0, EMPTY_HASH)


def st(h: str) -> FeatureState:
    return FeatureState('{"type":"Point","coordinates":[4.8,45.7]}', json.dumps({"h": h}), h * 64)


def ch(i: int, fid: str, before: str | None, after: str | None) -> ReceivedChange:
    kind = ChangeKind.CREATED if before is None else ChangeKind.DELETED if after is None else ChangeKind.UPDATED
    return ReceivedChange(
        i,
        "public_toilets",
        "69266",
        fid,
        kind,
        None if before is None else st(before),
        None if after is None else st(after),
    )


def test_no_changes_no_transaction() -> None:
    assert decide_version(EMPTY, PendingChanges((), 0), NOW, FMT) is None


def test_a_version_with_its_state_notifications_and_its_range_of_the_change_log() -> None:
    changes = [ch(7, "a", None, "1"), ch(9, "b", None, "2"), ch(12, "a", "1", "3")]
    write = decide_version(EMPTY, PendingChanges(tuple(changes), 31), NOW, FMT)
    assert write is not None and write.draft is not None and write.notice is not None
    assert write.draft == build_version(EMPTY, changes, NOW)
    assert (write.first_position, write.last_position, write.marked_version) == (1, 31, 1)
    assert write.state_after == DatasetState(
        "public_toilets", 1, 2, write.draft.content_hash, write.draft.incomplete, cut_position=31
    )
    attrs, record = version_message(write.draft, FMT.source, base_url=FMT.base_url, max_inline_changes=1)
    assert (write.notice.attributes, write.notice.record) == (attrs, record)
    assert write.notice.structured_body == encode_event(
        structured_event(write.draft, FMT.source, base_url=FMT.base_url, max_inline_changes=1)
    )
    body = json.loads(write.notice.structured_body)
    assert body["id"] == write.notice.attributes.id and body["data"]["version"] == 1
    assert body["data"]["changes_included"] is False  # 2 entries > 1 inline


def test_changes_without_net_effect_are_absorbed_under_the_current_version() -> None:
    state = DatasetState("public_toilets", 4, 10, "ab" * 32, 1, cut_position=40)
    write = decide_version(state, PendingChanges((ch(3, "a", None, "1"), ch(4, "a", "1", None)), 57), NOW, FMT)
    assert write is not None
    assert (write.draft, write.notice, write.marked_version) == (None, None, 4)
    assert (write.first_position, write.last_position) == (41, 57)
    assert write.state_after == DatasetState("public_toilets", 4, 10, "ab" * 32, 1, cut_position=57)  # only the cut


def test_the_next_version_starts_after_the_cut() -> None:
    state = DatasetState("public_toilets", 4, 10, "ab" * 32, 1, cut_position=40)
    write = decide_version(state, PendingChanges((ch(3, "z", None, "1"),), 44), NOW, FMT)
    assert write is not None and write.draft is not None
    assert (write.first_position, write.last_position, write.marked_version) == (41, 44, 5)
    assert write.state_after.cut_position == 44


def test_pending_changes_that_do_not_end_after_the_cut_are_refused() -> None:
    state = DatasetState("public_toilets", 4, 10, "ab" * 32, 1, cut_position=40)
    with pytest.raises(ValueError, match="not after the cut"):
        decide_version(state, PendingChanges((ch(3, "z", None, "1"),), 40), NOW, FMT)


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def now(self) -> datetime:
        return self.t


def fc(r: ReceivedChange) -> FeatureChange:
    return FeatureChange(r.change_id, f"e{r.change_id}", r.dataset, r.commune, r.feature_id, r.kind, 1, NOW, NOW,
                         r.before, r.after)  # fmt: skip


async def test_the_handler_cuts_due_versions_on_the_fake() -> None:
    store, clock = InMemoryPublishStore(), Clock()
    uow = lambda: InMemoryPublishUnitOfWork(store)  # noqa: E731
    changes = [fc(ch(1, "a", None, "1")), fc(ch(2, "b", None, "2"))]
    assert await record_changes(changes, uow_factory=uow, clock=clock) == 2
    assert await record_changes(changes, uow_factory=uow, clock=clock) == 0  # a relay resend
    clock.t += timedelta(hours=1)
    drafts = await cut_due_versions(
        catalogue=DatasetCatalogue.load(), uow_factory=uow, clock=clock, source="/odc/test", max_delay_seconds=60,
        base_url="https://data.example", max_inline_changes=5,
    )  # fmt: skip
    assert [(d.dataset, d.version, d.added) for d in drafts] == [("public_toilets", 1, 2)]
    notice = store.data.notices[("public_toilets", 1)]
    assert json.loads(notice.structured_body)["data"]["links"]["self"].startswith("https://data.example/")
    assert {c.version for c in store.data.changes.values()} == {1}
    # nothing pending: nothing cut
    clock.t += timedelta(hours=1)
    assert (
        await cut_due_versions(
            catalogue=DatasetCatalogue.load(), uow_factory=uow, clock=clock, source="/odc/test", max_delay_seconds=60
        )
        == []
    )


async def test_a_version_past_the_byte_bound_leaves_the_rest_for_the_next_one_due_at_once() -> None:
    """version_max_bytes bounds what one cut builds in memory; the changes left are as old as the ones taken,
    so they are due at the next cut, not a max_delay later."""
    store, clock = InMemoryPublishStore(), Clock()
    uow = lambda: InMemoryPublishUnitOfWork(store)  # noqa: E731
    changes = [fc(ch(i, f"f{i}", None, str(i))) for i in range(1, 6)]
    assert await record_changes(changes, uow_factory=uow, clock=clock) == 5
    weight = change_bytes(ch(1, "f1", None, "1"))
    clock.t += timedelta(seconds=61)
    cuts = []
    for _ in range(4):
        drafts = await cut_due_versions(
            catalogue=DatasetCatalogue.load(), uow_factory=uow, clock=clock, source="/odc/test",
            max_delay_seconds=60, version_max_bytes=2 * weight,
        )  # fmt: skip
        cuts.append([(d.version, d.added) for d in drafts])
    assert cuts == [[(1, 2)], [(2, 2)], [(3, 1)], []]
    assert {c.change.change_id: c.version for c in store.data.changes.values()} == {1: 1, 2: 1, 3: 2, 4: 2, 5: 3}
