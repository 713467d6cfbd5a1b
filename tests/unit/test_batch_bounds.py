"""How big a batch gets: the worker runtime bounds a batch by messages and by bytes (a bulk message carries
hundreds of events), and the normaliser prepares it in slices by bytes between two yields to the event loop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.infrastructure.worker_runtime import records_to_take
from services.normalise.entrypoints.kafka_worker import slices_by_bytes


def test_records_to_take_stops_at_either_bound_and_asks_for_one_first() -> None:
    assert records_to_take(0, 0, 1000, 2_000_000) == 1
    assert records_to_take(1000, 10, 1000, 2_000_000) == 0  # the message bound
    assert records_to_take(3, 2_000_000, 1000, 2_000_000) == 0  # the byte bound
    assert records_to_take(1, 500, 1000, 2_000_000) == 999  # small messages: up to the message bound
    assert records_to_take(1, 200_000, 1000, 2_000_000) == 9  # 200 kB bulk messages: nine more fit
    assert records_to_take(9, 1_999_000, 1000, 2_000_000) == 1  # below both bounds: always at least one


@given(
    st.lists(st.integers(min_value=0, max_value=1_100_000), min_size=1, max_size=300),
    st.integers(min_value=1, max_value=5000),
    st.integers(min_value=1, max_value=3_000_000),
)
def test_a_batch_taken_by_records_to_take_overshoots_by_at_most_one_estimate(
    sizes: list[int], max_records: int, max_bytes: int
) -> None:
    # the consumer hands out messages in order; the loop takes what records_to_take allows until it says 0
    taken = size = 0
    room = 1
    while room > 0 and taken < len(sizes):
        chunk = sizes[taken : taken + room]
        taken += len(chunk)
        size += sum(chunk)
        room = records_to_take(taken, size, max_records, max_bytes)
    assert 1 <= taken <= max(1, max_records)
    if taken < len(sizes):  # it stopped before the end: a bound was reached
        assert taken >= max_records or size >= max_bytes


@given(st.lists(st.integers(min_value=0, max_value=300_000), max_size=400), st.integers(min_value=1, max_value=200_000))
def test_slices_by_bytes_cover_every_message_once_in_order_within_the_bound(sizes: list[int], max_bytes: int) -> None:
    parts = slices_by_bytes(sizes, max_bytes)
    assert [i for p in parts for i in range(len(sizes))[p]] == list(range(len(sizes)))
    for p in parts:
        chosen = sizes[p]
        assert chosen, "no empty slice"
        assert len(chosen) == 1 or sum(chosen) <= max_bytes
