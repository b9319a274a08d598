"""Replay a time window of the request topic or a channel topic without double sends.

Channel topics: each delivery in the window is checked against the ledger; only those
with no final state are produced again, to the channel's main (or priority) topic, with
`herald.replay: 1`. Request topic: requests are produced again with `herald.replay: 1`;
the processor skips its request dedup for them and fans out to the same deterministic
delivery ids, so the senders' ledger drops whatever was already delivered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cassandra.cluster import Session
from confluent_kafka import Message

from herald.ops import ledger, slices
from herald.ops.common import (
    ReplayReport,
    Republisher,
    TopicRef,
    channel_matches,
    replay_headers,
    request_matches,
)
from infra.settings import KafkaSettings
from schemas import codec


@dataclass(frozen=True)
class ReplayRequest:
    topic: TopicRef
    start_ms: int
    end_ms: int
    channel: str | None = None
    category: str | None = None
    dry_run: bool = False
    run_id: str | None = None


def plan(kafka: KafkaSettings, req: ReplayRequest) -> list[slices.PartitionRange]:
    consumer = slices.ops_consumer(kafka, "replay", req.run_id)
    try:
        return slices.resolve_window(consumer, req.topic.name, req.start_ms, req.end_ms)
    finally:
        consumer.close()


def replay(
    kafka: KafkaSettings,
    session: Session | None,
    req: ReplayRequest,
    *,
    ranges: list[slices.PartitionRange] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Re-produce what the window lost downstream; `session` is needed for channel topics."""
    if req.topic.lane == "dlq":
        raise ValueError("dead-letter topics are redriven, not replayed: use `herald dlq redrive`")
    if not req.topic.is_request and session is None:
        raise ValueError("replaying a channel topic needs the Cassandra ledger")
    outcome = ReplayReport(dry_run=req.dry_run)
    values = codec.codec_for(kafka.schema_registry_url)
    out = Republisher(kafka, "ops-replay", outcome)
    consumer = slices.ops_consumer(kafka, "replay", req.run_id)
    seen: set[str] = set()
    try:
        if ranges is None:
            ranges = slices.resolve_window(consumer, req.topic.name, req.start_ms, req.end_ms)
        for batch in slices.read_ranges(consumer, req.topic.name, ranges):
            outcome.scanned += len(batch)
            if req.topic.is_request:
                _requests(batch, req, out, values)
            else:
                assert session is not None
                _deliveries(batch, req, out, values, session, seen)
            if on_progress is not None:
                on_progress(len(batch))
    finally:
        consumer.close()
        out.flush()
    return outcome


def _requests(
    batch: list[Message], req: ReplayRequest, out: Republisher, values: codec.Codec
) -> None:
    for msg in batch:
        try:
            request = values.decode(msg.value() or b"", codec.REQUEST)
        except codec.DecodeError:
            out.outcome.skipped["undecodable"] += 1
            continue
        if req.category is not None and request["category"] != req.category:
            out.outcome.skipped["other_category"] += 1
        elif not request_matches(req.channel, request["channels"]):
            out.outcome.skipped["other_channel"] += 1
        else:
            out.send(
                req.topic.main,
                msg.key(),
                msg.value() or b"",
                replay_headers(msg),
                ident=request["event_id"],
            )


def _deliveries(
    batch: list[Message],
    req: ReplayRequest,
    out: Republisher,
    values: codec.Codec,
    session: Session,
    seen: set[str],
) -> None:
    candidates: list[tuple[Message, str, str]] = []
    for msg in batch:
        try:
            delivery = values.decode(msg.value() or b"", codec.DELIVERY)
        except codec.DecodeError:
            out.outcome.skipped["undecodable"] += 1
            continue
        if req.category is not None and delivery["category"] != req.category:
            out.outcome.skipped["other_category"] += 1
        elif not channel_matches(req.channel, delivery["channel"]):
            out.outcome.skipped["other_channel"] += 1
        elif delivery["delivery_id"] in seen:
            # The processor may have fanned the same request out twice (at-least-once).
            out.outcome.skipped["duplicate_in_window"] += 1
        else:
            seen.add(delivery["delivery_id"])
            candidates.append((msg, delivery["notification_id"], delivery["delivery_id"]))
    found = ledger.states(session, [(n, d) for _, n, d in candidates])
    for msg, _nid, delivery_id in candidates:
        reason = ledger.skip_reason(found.get(delivery_id), ledger.REPLAY_FINAL)
        if reason is not None:
            out.outcome.skipped[reason] += 1
        else:
            out.send(
                req.topic.main,
                msg.key(),
                msg.value() or b"",
                replay_headers(msg),
                ident=delivery_id,
            )
