"""Inspect dead-letter topics and send chosen records back once the cause is fixed.

A redriven delivery goes to its channel's main topic with the attempt count reset and
`herald.replay: 1`; a redriven request goes back to `notifications.requested`. Two guards
keep it from ever sending twice: the delivery ledger (a delivery already sent, failed
permanently or in flight is skipped) and `herald.dlq_redrives`, where each dead letter
is claimed with a lightweight transaction before it is produced. Senders treat
`dead_lettered` as final except for a record carrying `herald.redriven_from`: that one
they claim again, once, through the ledger's own conditional writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import Session

from herald.ops import ledger, slices
from herald.ops.common import ReplayReport, Republisher, TopicRef, topic_ref
from infra.logging import mask_address
from infra.settings import KafkaSettings
from schemas import codec
from schemas.contract import DEAD_LETTER_HEADERS, Header, Reason


@dataclass
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    record: dict[str, Any] | None  # None when the value cannot be decoded
    decode_error: str | None = None

    def header(self, name: str) -> str | None:
        """The value of header `name` (one of `schemas.contract.Header`)."""
        raw = self.headers.get(name)
        return raw.decode(errors="replace") if raw is not None else None

    @property
    def reason(self) -> str:
        return self.header(Header.REASON) or (self.decode_error and Reason.UNDECODABLE) or "unknown"

    @property
    def attempts(self) -> int | None:
        raw = self.header(Header.ATTEMPTS)
        return int(raw) if raw and raw.isdigit() else None

    @property
    def failed_at_ms(self) -> int:
        raw = self.header(Header.FAILED_AT)
        if raw:
            if raw.isdigit():
                return int(raw)
            try:
                return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1000)
            except ValueError:
                pass
        return self.timestamp_ms

    @property
    def delivery_id(self) -> str | None:
        return self.record.get("delivery_id") if self.record else None

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    def summary(self, now_ms: int | None = None) -> dict[str, Any]:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        return {
            "ref": self.ref,
            "delivery_id": self.delivery_id,
            "notification_id": self.record.get("notification_id") if self.record else None,
            "reason": self.reason,
            "attempts": self.attempts,
            "first_error": self.header(Header.FIRST_ERROR),
            "last_error": self.header(Header.LAST_ERROR),
            "original_topic": self.header(Header.ORIGINAL_TOPIC),
            "age_s": max(0, now - self.failed_at_ms) // 1000,
        }

    def detail(self) -> dict[str, Any]:
        """Everything an operator needs, with the contact address masked."""
        record = dict(self.record) if self.record else None
        if record and isinstance(record.get("address"), str):
            record["address"] = mask_address(record["address"])
        return {
            "topic": self.topic,
            **self.summary(),
            "timestamp": datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(),
            "headers": {k: v.decode(errors="replace") for k, v in self.headers.items()},
            "record": record,
            "decode_error": self.decode_error,
            "size_bytes": len(self.value),
        }


def read(kafka: KafkaSettings, ref: TopicRef) -> list[DeadLetter]:
    """Every record currently in the dead-letter topic, oldest first."""
    consumer = slices.ops_consumer(kafka, "ops-dlq")
    expect = codec.REQUEST if ref.is_request else codec.DELIVERY
    values = codec.codec_for(kafka.schema_registry_url)
    out: list[DeadLetter] = []
    try:
        ranges = slices.whole_topic(consumer, ref.name)
        for batch in slices.read_ranges(consumer, ref.name, ranges):
            for msg in batch:
                value = msg.value() or b""
                record, error = None, None
                try:
                    record = values.decode(value, expect)
                except codec.DecodeError as exc:
                    error = exc.reason
                out.append(
                    DeadLetter(
                        topic=ref.name,
                        partition=msg.partition() or 0,
                        offset=msg.offset() or 0,
                        timestamp_ms=msg.timestamp()[1],
                        key=msg.key(),
                        value=value,
                        headers=slices.headers(msg),
                        record=record,
                        decode_error=error,
                    )
                )
    finally:
        consumer.close()
    return sorted(out, key=lambda d: (d.timestamp_ms, d.partition, d.offset))


@dataclass(frozen=True)
class Selection:
    refs: frozenset[str] = frozenset()  # "offset" or "partition:offset"
    delivery_ids: frozenset[str] = frozenset()
    everything: bool = False
    reason: str | None = None

    def __post_init__(self) -> None:
        if not (self.refs or self.delivery_ids or self.everything):
            raise ValueError("choose records: --offset, --delivery-id or --all")

    def matches(self, d: DeadLetter) -> bool:
        if self.reason is not None and d.reason != self.reason:
            return False
        return (
            self.everything
            or d.ref in self.refs
            or str(d.offset) in self.refs
            or (d.delivery_id is not None and d.delivery_id in self.delivery_ids)
        )


@dataclass
class RedriveResult:
    outcome: ReplayReport
    redriven: list[str] = field(default_factory=list)  # refs


def target_topic(ref: TopicRef, d: DeadLetter) -> str:
    original = d.header(Header.ORIGINAL_TOPIC)
    if original and not ref.is_request:
        try:
            orig = topic_ref(original, prefix=ref.prefix)
        except ValueError:
            orig = None
        if orig is not None and orig.channel == ref.channel and orig.name == original:
            return orig.main
    return ref.main


def _fresh_value(ref: TopicRef, d: DeadLetter, values: codec.Codec, target: str) -> bytes:
    """A delivery starts its retries over; a request goes back byte for byte."""
    if ref.is_request or d.record is None:
        return d.value
    record = {**d.record, "attempt": 1, "not_before": None, "last_error": None}
    return values.encode(codec.DELIVERY, record, topic=target)


def redrive(
    kafka: KafkaSettings,
    session: Session,
    ref: TopicRef,
    selection: Selection,
    *,
    dry_run: bool = False,
    force: bool = False,
    letters: Iterable[DeadLetter] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RedriveResult:
    """Send the selected dead letters back; `force` ignores earlier redrives, not the ledger."""
    result = RedriveResult(ReplayReport(dry_run=dry_run))
    outcome = result.outcome
    chosen = [
        d for d in (letters if letters is not None else read(kafka, ref)) if selection.matches(d)
    ]
    outcome.scanned = len(chosen)
    if not ref.is_request:
        undecodable = [d for d in chosen if d.record is None]
        if undecodable:
            outcome.skipped["undecodable"] += len(undecodable)
        chosen = [d for d in chosen if d.record is not None]
        found = ledger.states(
            session,
            [
                (d.record["notification_id"], d.delivery_id)
                for d in chosen
                if d.delivery_id and d.record and d.record.get("notification_id")
            ],
        )
        kept = []
        for d in chosen:
            why = ledger.skip_reason(found.get(d.delivery_id or ""), ledger.REDRIVE_FINAL)
            if why is not None:
                outcome.skipped[why] += 1
            else:
                kept.append(d)
        chosen = kept

    ks = session.keyspace
    claim = session.prepare(
        f"INSERT INTO {ks}.dlq_redrives "
        "(topic, partition, offset, delivery_id, target, redriven_at) "
        "VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS"
    )
    exists = session.prepare(
        f"SELECT offset FROM {ks}.dlq_redrives WHERE topic = ? AND partition = ? AND offset = ?"
    )
    release = session.prepare(
        f"DELETE FROM {ks}.dlq_redrives WHERE topic = ? AND partition = ? AND offset = ? IF EXISTS"
    )
    values = codec.codec_for(kafka.schema_registry_url)
    out = Republisher(kafka, "ops-dlq", outcome)
    for d in chosen:
        if on_progress:
            on_progress(1)
        target = target_topic(ref, d)
        if not force:
            if dry_run:
                taken = session.execute(exists, (d.topic, d.partition, d.offset)).one() is not None
            else:
                row = session.execute(
                    claim,
                    (d.topic, d.partition, d.offset, d.delivery_id, target, datetime.now(UTC)),
                ).one()
                taken = not row["[applied]"]
            if taken:
                outcome.skipped["already_redriven"] += 1
                continue
        hdrs: slices.Headers = [
            (k, v)
            for k, v in d.headers.items()
            if k not in DEAD_LETTER_HEADERS and k not in (Header.REPLAY, Header.REDRIVEN_FROM)
        ]
        hdrs += [(Header.REPLAY, b"1"), (Header.REDRIVEN_FROM, f"{d.topic}:{d.ref}".encode())]

        def failed(d: DeadLetter = d) -> None:
            # Not produced: free the claim so the next redrive tries again.
            session.execute(release, (d.topic, d.partition, d.offset))

        out.send(
            target,
            d.key,
            _fresh_value(ref, d, values, target),
            hdrs,
            on_failed=failed,
            ident=d.delivery_id or d.ref,
        )
        result.redriven.append(d.ref)
    out.flush()
    return result
