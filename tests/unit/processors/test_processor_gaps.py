"""Skipped records are never acked past: the partition is sought back to fill the gap."""

from __future__ import annotations

from processors.gaps import Gaps, Verdict


def test_contiguous_records_and_redeliveries_are_taken() -> None:
    g = Gaps()
    assert [g.check(1, o) for o in (5, 6, 7)] == [Verdict.TAKE] * 3
    assert g.check(1, 6) is Verdict.TAKE  # a redelivery after a seek or rebalance
    assert g.expected[1] == 7


def test_a_jump_asks_for_a_seek_back_to_the_first_missing_offset() -> None:
    g = Gaps()
    g.check(1, 74)
    assert g.check(1, 107) is Verdict.SEEK
    assert g.missing(1, 107) == (75, 106)
    assert g.check(1, 108) is Verdict.DROP  # fetched before the seek took effect
    assert g.check(1, 75) is Verdict.TAKE  # the gap is being filled
    assert g.check(1, 76) is Verdict.TAKE


def test_the_first_record_is_checked_against_the_committed_offset() -> None:
    g = Gaps()
    assert g.check(3, 80, committed=75) is Verdict.SEEK
    assert g.missing(3, 80) == (75, 79)
    assert g.check(3, 75, committed=75) is Verdict.TAKE


def test_records_removed_by_retention_are_given_up_after_one_seek() -> None:
    g = Gaps()
    assert g.check(2, 500, committed=10) is Verdict.SEEK
    assert g.check(2, 501, committed=10) is Verdict.DROP
    assert g.check(2, 500, committed=10) is Verdict.GONE  # fetched anew, still past them
    assert g.check(2, 501) is Verdict.TAKE


def test_partitions_are_independent_and_forgotten_on_revoke() -> None:
    g = Gaps()
    g.check(1, 10)
    assert g.check(2, 99) is Verdict.TAKE
    g.forget({1})
    assert g.check(1, 50) is Verdict.TAKE
