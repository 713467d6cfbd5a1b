"""The normaliser's relay child tells its parent what it did on a pipe, one line per fact
(services/normalise/entrypoints/relay_process.py). What one side writes the other reads back; anything else is
ignored rather than fatal (a line cut short, a stray print)."""

from __future__ import annotations

import pytest

from services.normalise.entrypoints.relay_process import (
    OUTBOXES,
    Failed,
    Health,
    Sent,
    parse_status,
    status_line,
)


@pytest.mark.parametrize(
    "status",
    [Sent("feature_changes", 0), Sent("rejections", 12_345), Failed("feature_changes"), Health(True), Health(False)],
)
def test_every_status_reads_back_as_written(status: Sent | Failed | Health) -> None:
    line = status_line(status)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_status(line) == status


def test_every_outbox_the_relay_sends_has_a_name_the_parent_accepts() -> None:
    assert set(OUTBOXES) == {"feature_changes", "rejections"}
    for outbox in OUTBOXES:
        assert parse_status(status_line(Sent(outbox, 3))) == Sent(outbox, 3)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\n",
        b"sent feature_changes\n",
        b"sent feature_changes -1\n",
        b"sent nowhere 3\n",
        b"sent feature_changes 3x\n",
        b"failed\n",
        b"failed nowhere\n",
        b"health 2\n",
        b"health yes\n",
        b"hello\n",
        b"\xff\xfe\n",
        b"sent feature_ch",
    ],
)
def test_anything_else_is_ignored(line: bytes) -> None:
    assert parse_status(line) is None
