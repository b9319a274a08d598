"""An example analytics consumer of `notifications.status`: delivery funnel per category
and channel over a time window.

Events are de-duplicated by `status_id` (stable across reprocessing, so a request the
processor handled twice, or a pixel loaded ten times, counts once) and bucketed by
`occurred_at`. Request-level events carry no channel and land in the "-" row; requests
collected into a digest count as `digested` there (the digest itself is one request).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from herald.ops import slices
from herald.ops.common import channel_matches
from infra.settings import KafkaSettings
from schemas import codec
from schemas.channels import Outcome
from schemas.contract import Topics
from schemas.events import to_ms

# Status events are produced just after they occur; read this far past the window's end.
LATE_MS = 5 * 60 * 1000
COUNTED = {
    Outcome.ACCEPTED: "requested",
    Outcome.SENT: "sent",
    Outcome.FAILED: "failed",
    Outcome.DEAD_LETTERED: "dead_lettered",
    Outcome.DELIVERED: "delivered",
    Outcome.OPENED: "opened",
    Outcome.CLICKED: "clicked",
    Outcome.DIGESTED: "digested",
    Outcome.SEEN: "seen",
    Outcome.READ: "read",
}


@dataclass
class Row:
    category: str
    channel: str
    requested: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    failed: int = 0
    dead_lettered: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    digested: int = 0  # requests collected into a digest (sent later, as the digest)
    seen: int = 0  # in-app items shown to the user
    read: int = 0  # in-app items read

    @staticmethod
    def _rate(n: int, d: int) -> float | None:
        return round(n / d, 4) if d else None

    def rates(self) -> dict[str, float | None]:
        attempted = self.sent + self.failed + self.dead_lettered
        return {
            "failure_rate": self._rate(self.failed + self.dead_lettered, attempted),
            "delivery_rate": self._rate(self.delivered, self.sent),
            "open_rate": self._rate(self.opened, self.sent),
            "click_rate": self._rate(self.clicked, self.sent),
            "click_to_open_rate": self._rate(self.clicked, self.opened),
            "read_rate": self._rate(self.read, self.sent),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "channel": self.channel,
            "requested": self.requested,
            "dropped": sum(self.dropped.values()),
            "dropped_by_reason": dict(self.dropped),
            "sent": self.sent,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "delivered": self.delivered,
            "opened": self.opened,
            "clicked": self.clicked,
            "digested": self.digested,
            "seen": self.seen,
            "read": self.read,
            **self.rates(),
        }


def aggregate(
    events: Iterable[dict[str, Any]],
    *,
    start_ms: int,
    end_ms: int,
    category: str | None = None,
    channel: str | None = None,
) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    seen: set[str] = set()
    for e in events:
        at = to_ms(e["occurred_at"])  # decoded Avro timestamps are datetimes
        if at is None or not start_ms <= at < end_ms or e["status_id"] in seen:
            continue
        seen.add(e["status_id"])
        if category is not None and e["category"] != category:
            continue
        if (
            channel is not None
            and e["channel"] is not None
            and not channel_matches(channel, e["channel"])
        ):
            continue
        key = (e["category"], e["channel"] or "-")
        row = rows.setdefault(key, Row(*key))
        if e["outcome"] == Outcome.DROPPED:
            row.dropped[e["reason"] or "unspecified"] += 1
        elif (name := COUNTED.get(e["outcome"])) is not None:
            setattr(row, name, getattr(row, name) + 1)
    return [rows[k] for k in sorted(rows)]


def read_status(
    kafka: KafkaSettings,
    start_ms: int,
    end_ms: int,
    *,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    topic_prefix: str = "",
) -> Iterable[dict[str, Any]]:
    """Decoded status events produced in [start_ms, end_ms + LATE_MS); undecodable skipped."""
    values = codec.codec_for(kafka.schema_registry_url)
    consumer = slices.ops_consumer(kafka, "ops-stats")
    try:
        topic = Topics(topic_prefix).status
        ranges = slices.resolve_window(consumer, topic, start_ms, end_ms + LATE_MS)
        if on_total is not None:
            on_total(sum(r.size for r in ranges))
        for batch in slices.read_ranges(consumer, topic, ranges):
            for msg in batch:
                try:
                    yield values.decode(msg.value() or b"", codec.STATUS)
                except codec.DecodeError:
                    continue
            if on_progress is not None:
                on_progress(len(batch))
    finally:
        consumer.close()
