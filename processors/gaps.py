"""Records the consumer skipped: herald's acks must stay a gap-free prefix per partition.

herald acks requests to Faust in the order it received them, so that Faust's commit (the
end of the acked prefix) never passes an unfinished record. That holds only if every
offset reaches the worker. The request topics have no transactions and no compaction, so
their offsets are contiguous: a record arriving past the next expected offset means the
records in between were skipped on the way (faust-streaming 0.15 was seen to stall a
partition this way after a restart, and with its off-by-one commit check a skipped record
could be committed past). Such a record is not passed on or acked; the partition is sought
back to the first missing offset, and the records already decided come again and are
recognised by their position (skipped silently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Verdict(Enum):
    TAKE = "take"  # the expected record, or one seen before (a redelivery)
    SEEK = "seek"  # records were skipped: drop this one, seek back to `expected`
    DROP = "drop"  # fetched before the seek took effect: dropped, it comes again
    GONE = "gone"  # past the gap again after the seek: those offsets are no longer in Kafka


@dataclass
class Gaps:
    """The next offset expected per partition, and the seeks made to fill gaps."""

    expected: dict[int, int] = field(default_factory=dict)
    sought: dict[int, int] = field(default_factory=dict)  # partition → offset sought
    # partition → the last offset that arrived since the seek (records fetched before the
    # seek took effect keep rising; the first one after it starts again lower)
    since_seek: dict[int, int] = field(default_factory=dict)

    def check(self, partition: int, offset: int, committed: int | None = None) -> Verdict:
        """What to do with a record at `offset`; `committed` stands in for the expected
        offset before the first record of the partition."""
        want = self.expected.get(partition, committed)
        if want is None or offset <= want:
            self._take(partition, offset)
            return Verdict.TAKE
        if partition in self.sought:
            last = self.since_seek[partition]
            self.since_seek[partition] = offset
            if offset > last:
                return Verdict.DROP
            # Fetched anew from the seek and still past the gap: retention removed those.
            self._take(partition, offset)
            return Verdict.GONE
        self.sought[partition] = want
        self.since_seek[partition] = offset
        return Verdict.SEEK

    def _take(self, partition: int, offset: int) -> None:
        self.expected[partition] = offset + 1
        self.sought.pop(partition, None)
        self.since_seek.pop(partition, None)

    def missing(self, partition: int, offset: int) -> tuple[int, int] | None:
        """The offsets skipped before `offset` (first, last), if known."""
        want = self.sought.get(partition, self.expected.get(partition))
        return (want, offset - 1) if want is not None and want < offset else None

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: whoever gets them next starts from the commit."""
        for p in partitions:
            self.expected.pop(p, None)
            self.sought.pop(p, None)
            self.since_seek.pop(p, None)
