"""The txid cursor's SQL (services/infrastructure/outbox_relay.py, TxidCursor) is built from three names; they
must be plain identifiers, and "sent" is the row's (txid, id) at or before the cursor row of its own table.
The behaviour on PostgreSQL is tests/integration/test_outbox_cursor.py."""

from __future__ import annotations

import pytest

from services.infrastructure.outbox_relay import TxidCursor
from services.normalise.adapters.outboxes import FEATURE_CHANGES_CURSOR, REJECTIONS_CURSOR


@pytest.mark.parametrize(
    "names",
    [
        ("feature_change_outbox; DROP TABLE x", "change_id", "outbox_cursor"),
        ("rejection", "seq)", "outbox_cursor"),
        ("rejection", "seq", "Outbox Cursor"),
        ("", "seq", "outbox_cursor"),
    ],
)
def test_a_name_that_is_not_a_plain_identifier_is_refused(names: tuple[str, str, str]) -> None:
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        TxidCursor(*names)


def test_sent_is_at_or_before_the_cursor_row_of_the_same_table() -> None:
    assert FEATURE_CHANGES_CURSOR.sent_condition() == (
        "(feature_change_outbox.txid, feature_change_outbox.change_id) <= "
        "(SELECT c.txid, c.last_id FROM outbox_cursor c WHERE c.outbox = 'feature_change_outbox')"
    )
    assert "c.outbox = 'rejection'" in REJECTIONS_CURSOR.sent_condition()
    assert "(rejection.txid, rejection.seq) <=" in REJECTIONS_CURSOR.sent_condition()


def test_pending_counts_rows_not_sent_and_every_row_when_there_is_no_cursor() -> None:
    sql = FEATURE_CHANGES_CURSOR.pending_sql()
    assert sql.startswith("SELECT count(*) FROM feature_change_outbox WHERE NOT coalesce(")
    assert sql.endswith(", false)")  # no cursor row: the condition is NULL, and every row is pending


def test_rejection_pruning_deletes_only_what_the_rejection_relay_counts_as_sent() -> None:
    from services.normalise.adapters.outbox_pruning import _PRUNE_REJECTIONS as _PRUNE_BATCH

    assert REJECTIONS_CURSOR.sent_condition() in str(_PRUNE_BATCH)


def test_change_pruning_deletes_only_what_the_change_relay_counts_as_sent() -> None:
    from services.normalise.adapters.outbox_pruning import _PRUNE_FEATURE_CHANGES

    assert FEATURE_CHANGES_CURSOR.sent_condition() in str(_PRUNE_FEATURE_CHANGES)
