"""The relay's batch bound by bytes (issue #16: the normaliser's relay child held ~20 MB for 2,000 rows of
polygons): rows are taken in order while their bytes fit, and one row larger than the bound still goes out."""

from __future__ import annotations

import pytest

from services.infrastructure.outbox_relay import RELAY_BATCH_MAX_BYTES, row_bytes, rows_within_bytes


@pytest.mark.parametrize(
    ("sizes", "max_bytes", "already", "taken"),
    [
        ([], 100, 0, 0),
        ([10, 20, 30], 100, 0, 3),  # all fit
        ([40, 40, 40], 100, 0, 2),  # the third would make 120
        ([40, 60, 1], 100, 0, 2),  # exactly the bound is within it
        ([500, 1], 100, 0, 1),  # an empty batch takes its first row, however large
        ([500], 100, 0, 1),
        ([30, 30], 100, 50, 1),  # a batch already holding 50 bytes (the previous fetch)
        ([60], 100, 50, 0),  # ... and one that cannot take the next row: it stops there
        ([500], 100, 1, 0),  # a non-empty batch never takes an oversize row
    ],
)
def test_rows_within_bytes(sizes: list[int], max_bytes: int, already: int, taken: int) -> None:
    assert rows_within_bytes(sizes, max_bytes, already) == taken


def test_row_bytes_counts_text_and_binary_values_and_a_word_for_the_rest() -> None:
    assert row_bytes(("abc", b"\x00\x01", None, 42, memoryview(b"xyz"))) == 3 + 2 + 8 + 8 + 3


def test_a_batch_of_two_thousand_polygon_changes_is_cut_by_bytes_and_one_of_points_is_not() -> None:
    polygon_row = 2 * 3_000 + 400  # a before and an after GeoJSON polygon of ~3 kB, attributes and ids
    point_row = 2 * 45 + 400
    assert rows_within_bytes([polygon_row] * 2000, RELAY_BATCH_MAX_BYTES) < 400
    assert rows_within_bytes([point_row] * 2000, RELAY_BATCH_MAX_BYTES) == 2000
