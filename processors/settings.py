"""The processor's settings: one class, read from `HERALD_*` variables at the entry point."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from infra import topics
from infra.links import LinkSettings
from infra.settings import ServiceSettings
from processors.tracking import TrackingSettings
from schemas.channels import Category
from schemas.contract import Topics


class RateCap(BaseModel):
    """At most `limit` deliveries per user, category and channel in any `window_s` seconds."""

    limit: int
    window_s: int


def _default_caps() -> dict[str, RateCap]:
    # Transactional and security messages are not capped: the user is waiting for them.
    return {
        Category.MARKETING: RateCap(limit=5, window_s=3600),
        Category.SOCIAL: RateCap(limit=20, window_s=3600),
    }


class ProcessorSettings(ServiceSettings):
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    # Unsubscribe and preference links in non-mandatory email (HERALD_LINKS__SECRET).
    links: LinkSettings = Field(default_factory=LinkSettings)

    # The standard library's loop here: under Faust and aiokafka, uvloop made no difference
    # measurable on `python -m herald.bench.processor` (warm: 518/552/524 µs of CPU per
    # request with it, 624/471/509 without, interleaved). HERALD_EVENT_LOOP=uvloop works.
    event_loop: Literal["uvloop", "asyncio"] = "asyncio"

    # Faust app id = consumer group and prefix of the rate-limit table's changelog topic.
    app_id: str = "herald-processor"
    requested_topic: str = topics.REQUESTED
    # Must equal the request topic's partition count (the changelog is co-partitioned).
    requested_partitions: int = 6
    # The lane for urgent requests (same partition count as the request topic), consumed by
    # its own agent; set it empty to have urgent requests share the request topic.
    requested_priority_topic: str | None = topics.REQUESTED_PRIORITY
    requested_dlq_topic: str = topics.REQUESTED_DLQ
    status_topic: str = topics.STATUS
    user_changes_topic: str = topics.USER_CHANGES
    template_changes_topic: str = topics.TEMPLATE_CHANGES

    metrics_port: int = 9401
    web_port: int | None = None  # Faust's own web server; off unless set
    datadir: Path | None = None  # default .run/processor/<pid>

    cache_ttl_s: float = 60.0
    cache_max_entries: int = 200_000
    default_locale: str = "en"
    rate_caps: dict[str, RateCap] = Field(default_factory=_default_caps)
    scheduler_interval_s: float = 1.0
    cassandra_retry_max_s: float = 5.0
    session_timeout_s: float = 10.0
    # Requests decided as one batch: one dedup read, one round of cache-miss reads, one
    # produce flush and one dedup write per batch. A batch is whatever has arrived (up to
    # this many) when the previous one is done, so a quiet topic still gets batches of one.
    batch_size: int = 500
    # Batches decided while earlier ones still wait for their acks and dedup write: the
    # next batch's reads and decisions overlap the previous one's round trips. 1 decides
    # one batch at a time. Acks (and so commits) stay in order whatever the depth.
    pipeline_depth: int = Field(default=2, ge=1, le=8)
    # A batch (or a round of digests) still unfinished after this long is logged with where
    # it waits, and again as long as it lasts: an outage is waited out, a hang is named.
    stall_report_s: float = 60.0
    # Digests (processors/digests.py): items rendered into a digest at most (the count
    # covers all), how often due digests are looked for, and how long the event ids of a
    # sent digest are remembered so a request replayed after a crash is not sent twice.
    digest_max_items: int = 10
    # A window of this many requests is sent at once (its entry, one changelog record of
    # every event id, stays far below Kafka's record limit).
    digest_max_ids: int = 1000
    digest_tick_s: float = 1.0
    digest_keep_prev_s: int = 86_400
    # Records larger than this are refused before Kafka would refuse them (its default
    # limit is 1,000,000 bytes per record, headers and framing included).
    max_record_bytes: int = 990_000

    def published_secrets(self) -> list[str]:
        """The tracking key signs links only when tracking is on."""
        tracking = self.tracking.published_secrets() if self.tracking.enabled else []
        return tracking + self.links.published_secrets("HERALD_LINKS__SECRET")

    @model_validator(mode="after")
    def _prefix_topics(self) -> ProcessorSettings:
        if self.topic_prefix:
            for name in (
                "requested_topic",
                "requested_priority_topic",
                "requested_dlq_topic",
                "status_topic",
                "user_changes_topic",
                "template_changes_topic",
            ):
                value = getattr(self, name)
                if value and not value.startswith(self.topic_prefix):
                    object.__setattr__(self, name, Topics(self.topic_prefix).of(value))
        return self

    def channel_topic(self, channel: str, *, priority: bool = False) -> str:
        return Topics(self.topic_prefix).channel(channel, priority=priority)

    def resolved_datadir(self) -> Path:
        return self.datadir or Path(".run") / "processor" / str(os.getpid())
