"""Digest statements: the tables one statement digests, bounded by count and by bytes (no server)."""

from __future__ import annotations

from wehub_backup.pg.digests import statement_batches

MB = 1024 * 1024


def test_batches_hold_at_most_so_many_items() -> None:
    assert statement_batches([0] * 5, 2, 0) == [range(0, 2), range(2, 4), range(4, 5)]
    assert statement_batches([], 2, 0) == []


def test_a_table_larger_than_a_batch_goes_alone() -> None:
    sizes = [10 * MB, 50 * MB, 100 * MB, 1 * MB, 70 * MB, 64 * MB]
    assert statement_batches(sizes, 200, 64 * MB) == [range(0, 2), range(2, 3), range(3, 4), range(4, 5),
                                                      range(5, 6)]


def test_small_tables_share_a_batch_up_to_its_bytes() -> None:
    assert [len(batch) for batch in statement_batches([MB] * 300, 200, 64 * MB)] == [64, 64, 64, 64, 44]
