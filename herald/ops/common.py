"""Pieces shared by replay and redrive: topic names, filters, re-producing records."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from herald.ops.slices import Headers, header_list
from infra import topics
from infra.settings import KafkaSettings
from schemas.channels import Channel
from schemas.contract import Header, Topics

SAMPLE_SIZE = 20
_CHANNEL_TOPIC = re.compile(
    r"^notifications\.(?P<channel>[a-z.]+?)(?P<lane>\.priority|\.retry\.\d+|\.dlq)?$"
)
_REQUEST_ALIASES = {"requests", "requested", "request", topics.REQUESTED}


@dataclass(frozen=True)
class TopicRef:
    name: str  # as on the broker, prefix included
    channel: Channel | None  # None: the request topic (or its DLQ)
    lane: str  # "main" | "priority" | "retry" | "dlq"
    # A topic family of its own (`HERALD_TOPIC_PREFIX`, as the senders take it).
    prefix: str = ""

    @property
    def is_request(self) -> bool:
        return self.channel is None

    @property
    def main(self) -> str:
        """Where records of this topic go to be processed again."""
        if self.channel is None:
            return Topics(self.prefix).requested
        if self.lane in ("main", "priority"):
            return self.name
        return Topics(self.prefix).channel(self.channel)


def topic_ref(text: str, *, dlq: bool = False, prefix: str = "") -> TopicRef:
    """`requests`, a channel name (`email`, `push.ios`) or a full topic name, with or
    without `prefix`."""
    if prefix and text.startswith(prefix):
        text = text[len(prefix) :]
    named = Topics(prefix)
    if text in _REQUEST_ALIASES or text == topics.REQUESTED_DLQ:
        if dlq or text == topics.REQUESTED_DLQ:
            return TopicRef(named.requested_dlq, None, "dlq", prefix)
        return TopicRef(named.requested, None, "main", prefix)
    if text in {c.value for c in Channel}:
        channel = Channel(text)
        name = named.dlq(channel) if dlq else named.channel(channel)
        return TopicRef(name, channel, "dlq" if dlq else "main", prefix)
    m = _CHANNEL_TOPIC.match(text)
    if m is None or m["channel"] not in {c.value for c in Channel}:
        raise ValueError(
            f"unknown topic {text!r}: use requests, a channel "
            f"({', '.join(c.value for c in Channel)}) or a notifications.* topic name"
        )
    lane = (m["lane"] or ".main").split(".")[1]
    return TopicRef(named.of(text), Channel(m["channel"]), lane, prefix)


def channel_matches(wanted: str | None, channel: str) -> bool:
    """`--channel push` covers every push platform; `push.ios` only iOS."""
    if wanted is None:
        return True
    return channel == wanted or channel.startswith(f"{wanted}.")


def request_matches(wanted: str | None, channels: Sequence[str]) -> bool:
    """A request names preference channels (push | sms | email); none means all of them."""
    if wanted is None or not channels:
        return True
    pref = Channel(wanted).preference.value if wanted in {c.value for c in Channel} else wanted
    return pref in channels


def replay_headers(msg: Message, extra: dict[str, str] | None = None) -> Headers:
    drop = {Header.REPLAY, *(extra or {})}
    kept: Headers = [(k, v) for k, v in header_list(msg) if k not in drop]
    kept.append((Header.REPLAY, b"1"))
    kept.extend((k, v.encode()) for k, v in (extra or {}).items())
    return kept


@dataclass
class ReplayReport:
    """What a replay or redrive did (or, dry, would do)."""

    dry_run: bool
    scanned: int = 0
    produced: Counter[str] = field(default_factory=Counter)  # by target topic
    skipped: Counter[str] = field(default_factory=Counter)  # by reason
    errors: list[str] = field(default_factory=list)
    # The first ids (delivery, or event for requests) produced, so a dry run shows which.
    sample: list[str] = field(default_factory=list)

    @property
    def total_produced(self) -> int:
        return sum(self.produced.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "would_send" if self.dry_run else "produced": self.total_produced,
            "by_topic": dict(self.produced),
            "skipped": dict(self.skipped),
            "errors": self.errors,
            "sample": self.sample,
        }


class Republisher:
    """Produces records back, counting broker acknowledgements and failures."""

    def __init__(self, kafka: KafkaSettings, client: str, outcome: ReplayReport) -> None:
        self.outcome = outcome
        self.producer = None if outcome.dry_run else Producer(kafka.producer_config(client))

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        hdrs: Headers,
        on_failed: Callable[[], None] | None = None,
        ident: str | None = None,
    ) -> None:
        self.outcome.produced[topic] += 1
        if ident is not None and len(self.outcome.sample) < SAMPLE_SIZE:
            self.outcome.sample.append(ident)
        if self.producer is None:
            return

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self.outcome.produced[topic] -= 1
                self.outcome.errors.append(f"{topic}: {err.str()}")
                if on_failed is not None:
                    on_failed()

        while True:
            try:
                self.producer.produce(topic, value, key, headers=hdrs, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.5)
        self.producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        if self.producer is not None and self.producer.flush(timeout) > 0:
            self.outcome.errors.append(
                f"{len(self.producer)} records not acknowledged within {timeout:.0f}s "
                "(retriable: run again, the ledger skips what got through)"
            )
