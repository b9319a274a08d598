"""A jump in a partition's offsets names the records the consumer skipped."""

from __future__ import annotations

import asyncio
from typing import Any

from processors.app import _App
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


def test_a_committed_offset_ahead_of_the_expected_one_wins() -> None:
    # Another worker owned the partition meanwhile and committed up to 500: the records it
    # decided were not skipped.
    g = Gaps()
    g.check(2, 99)
    assert g.check(2, 500, committed=500) is None
    assert g.check(2, 503, committed=500) == range(501, 503)


def test_faust_gap_bookkeeping_is_off_for_the_request_topics() -> None:
    # Faust would count a jump in offsets as done; only the worker may (it reads the jump
    # again and decides it), so the consumer's gap hook does nothing.
    app = _App("herald-test-gaps", broker="kafka://127.0.0.1:1")
    consumer: Any = app.consumer
    before = {tp: list(t) for tp, t in consumer._gap.items()}
    asyncio.run(consumer._add_gap(("t", 0), 5, 9))
    assert {tp: list(t) for tp, t in consumer._gap.items()} == before
    assert consumer._faust_add_gap is not None  # the original, for deleted offsets
