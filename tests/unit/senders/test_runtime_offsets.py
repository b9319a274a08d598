from __future__ import annotations

from senders.offsets import OffsetTracker


def test_stored_offset_never_passes_an_unfinished_record() -> None:
    t = OffsetTracker()
    for o in (10, 11, 12):
        t.start("a", 0, o)
    t.finish("a", 0, 11)
    t.finish("a", 0, 12)
    assert t.to_store() == [("a", 0, 10)]
    t.stored("a", 0, 10)
    assert t.to_store() == []  # unchanged since the last store
    t.finish("a", 0, 10)
    assert t.to_store() == [("a", 0, 13)]


def test_partitions_are_independent_and_forgotten_on_revoke() -> None:
    t = OffsetTracker()
    t.start("a", 0, 5)
    t.start("a", 1, 7)
    t.finish("a", 1, 7)
    assert sorted(t.to_store()) == [("a", 0, 5), ("a", 1, 8)]
    t.forget("a", 0)
    t.finish("a", 0, 5)  # a late finish of a revoked partition is ignored
    assert t.to_store() == [("a", 1, 8)]
