"""Which offset of a partition may be stored, when records finish out of order.

Records of one partition are sent concurrently; the stored offset must never pass a
record whose outcome is not durable yet, so it is the lowest offset still pending (or
one past the highest finished when none is).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PartitionOffsets:
    pending: set[int] = field(default_factory=set)
    high: int = -1  # one past the highest offset started
    stored: int = -1  # last offset handed to store_offsets

    def start(self, offset: int) -> None:
        self.pending.add(offset)
        self.high = max(self.high, offset + 1)

    def finish(self, offset: int) -> None:
        self.pending.discard(offset)

    def committable(self) -> int | None:
        """The offset to store now, or None when it has not moved since the last store."""
        nxt = min(self.pending) if self.pending else self.high
        if nxt < 0 or nxt == self.stored:
            return None
        return nxt


class OffsetTracker:
    """Per (topic, partition) bookkeeping for one consumer."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, int], PartitionOffsets] = {}

    def start(self, topic: str, partition: int, offset: int) -> None:
        self._parts.setdefault((topic, partition), PartitionOffsets()).start(offset)

    def finish(self, topic: str, partition: int, offset: int) -> None:
        part = self._parts.get((topic, partition))
        if part is not None:  # None: the partition was revoked meanwhile
            part.finish(offset)

    def pending(self, topic: str, partition: int) -> int:
        part = self._parts.get((topic, partition))
        return len(part.pending) if part else 0

    def to_store(self) -> list[tuple[str, int, int]]:
        out = []
        for (topic, partition), part in self._parts.items():
            nxt = part.committable()
            if nxt is not None:
                out.append((topic, partition, nxt))
        return out

    def stored(self, topic: str, partition: int, offset: int) -> None:
        part = self._parts.get((topic, partition))
        if part is not None:
            part.stored = offset

    def forget(self, topic: str, partition: int) -> None:
        self._parts.pop((topic, partition), None)
