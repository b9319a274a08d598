"""A jump in a partition's offsets names the records the consumer skipped."""

from __future__ import annotations

from processors.gaps import Gaps


def test_contiguous_records_and_redeliveries_skip_nothing() -> None:
    g = Gaps()
    assert [g.check(1, o) for o in (5, 6, 7, 6, 7, 8)] == [None] * 6


def test_a_jump_names_the_skipped_offsets() -> None:
    g = Gaps()
    g.check(1, 74)
    assert g.check(1, 107) == range(75, 107)
    assert g.check(1, 108) is None


def test_the_first_record_is_checked_against_the_committed_offset() -> None:
    g = Gaps()
    assert g.check(3, 80, committed=75) == range(75, 80)
    assert Gaps().check(3, 75, committed=75) is None
    assert Gaps().check(3, 75) is None  # nothing known to compare with


def test_partitions_are_independent() -> None:
    g = Gaps()
    g.check(1, 10)
    assert g.check(2, 99) is None
