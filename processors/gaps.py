"""Records the consumer skipped, seen as a jump in a partition's offsets.

herald acks requests to Faust in the order it received them, so that Faust's commit (the
end of the acked prefix) never passes an unfinished record. That holds only if every
offset reaches the worker. The request topics have no transactions and no compaction, so
their offsets are contiguous: a record arriving past the next expected offset means the
records in between were skipped on the way. faust-streaming 0.15 can do that: its fetch
loop marks a record read even when a flow stop (a rebalance starting) cancels its
delivery to the stream. The worker reports each such jump; fetching the records again
from inside the worker was tried and interferes with Faust's own read offsets, so it is
not done (see docs/processor.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Gaps:
    """The next offset expected per partition."""

    expected: dict[int, int] = field(default_factory=dict)

    def check(self, partition: int, offset: int, committed: int | None = None) -> range | None:
        """The offsets skipped right before `offset`, if any; `committed` stands in for the
        expected offset before the first record of the partition. A record at or below
        the expected offset (a redelivery after a seek or a rebalance) skips nothing."""
        want = self.expected.get(partition, committed)
        self.expected[partition] = offset + 1
        if want is not None and offset > want:
            return range(want, offset)
        return None
