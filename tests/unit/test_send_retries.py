"""``odc send``'s bounded retries (RetryingSend) with a fake publisher: a window the broker does not take is
sent again with the same events; progress resumes when the broker is back, with one line each way; past
the retry time it stops and says what was and was not sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from services.ingest.entrypoints.send_command import WINDOW, RetryingSend, SendIncomplete
from services.ingest.service_layer.ports import PublishFailed


class ScriptedPublisher:
    """Fails the calls whose number is in ``failing`` (1-based), or every call from ``down_from`` on."""

    def __init__(self, failing: set[int] = frozenset(), down_from: int | None = None) -> None:  # type: ignore[assignment]
        self.failing, self.down_from = failing, down_from
        self.calls: list[list[Any]] = []
        self.acknowledged: list[Any] = []

    async def publish_encoded(
        self, encoded: list[Any], on_sent: Callable[[int], None] | None = None, window: int = 5000
    ) -> int:
        self.calls.append(list(encoded))
        n = len(self.calls)
        if n in self.failing or (self.down_from is not None and n >= self.down_from):
            raise PublishFailed("KafkaConnectionError: no broker")
        self.acknowledged.extend(encoded)
        return len(encoded)


def events(n: int) -> list[tuple[str, bytes]]:
    return [(f"e{i}", b"v") for i in range(n)]


def test_a_failed_window_is_sent_again_with_the_same_events_and_one_line_each_way() -> None:
    pub, lines = ScriptedPublisher(failing={2, 3}), []
    sent = asyncio.run(RetryingSend(pub, events(WINDOW * 2 + 10), 30, lines.append).run())  # type: ignore[arg-type]
    assert sent == WINDOW * 2 + 10 and pub.acknowledged == events(WINDOW * 2 + 10)
    assert pub.calls[1] == pub.calls[2] == pub.calls[3]  # the same window, the same events (same event ids)
    assert len(lines) == 2
    assert "not answering" in lines[0] and f"{WINDOW} of {WINDOW * 2 + 10} events sent so far" in lines[0]
    assert "back" in lines[1]


def test_past_the_retry_time_it_stops_and_says_what_was_and_was_not_sent() -> None:
    pub, lines = ScriptedPublisher(down_from=2), []
    with pytest.raises(SendIncomplete) as stopped:
        asyncio.run(RetryingSend(pub, events(WINDOW + 20), 0.3, lines.append).run())  # type: ignore[arg-type]
    assert (stopped.value.sent, stopped.value.total) == (WINDOW, WINDOW + 20)
    assert f"sent {WINDOW} of {WINDOW + 20} events; 20 not sent" in str(stopped.value)
    assert len(lines) == 1
