"""Dead-letter redrive against real topics and the real ledger."""

from __future__ import annotations

import uuid

import pytest
from cassandra.cluster import Session
from confluent_kafka import Producer

from herald.ops import dlq, slices
from herald.ops.common import topic_ref
from infra import topics
from infra.settings import KafkaSettings
from schemas import codec
from tests.integration.ops.opskit import (
    PREFIX,
    delivery,
    end_offsets,
    owns_topic,
    produce_records,
    read_since,
    set_ledger,
)

pytestmark = pytest.mark.integration
CHANNEL = "push.web"


def _dead_letter(producer: Producer, category: str) -> dict:  # type: ignore[type-arg]
    record = delivery(
        CHANNEL,
        category,
        attempt=5,
        last_error="503 from provider",
        address="https://push.example.test/endpoint/secret-token-value",
    )
    produce_records(
        producer,
        PREFIX + topics.dlq_topic(CHANNEL),
        [record],
        headers=[
            ("herald.reason", b"retries_exhausted"),
            ("herald.attempts", b"5"),
            ("herald.first_error", b"503 from provider"),
            ("herald.last_error", b"503 from provider"),
            ("herald.original_topic", (PREFIX + topics.retry_topic(CHANNEL, 3)).encode()),
            ("herald.failed_at", b"1764000000000"),
        ],
    )
    return record


@owns_topic(PREFIX + topics.channel_topic(CHANNEL))
def test_redrive_produces_once_then_guards_hold(
    kafka: KafkaSettings, session: Session, producer: Producer, category: str
) -> None:
    record = _dead_letter(producer, category)
    did = record["delivery_id"]
    set_ledger(session, record, "dead_lettered")
    ref = topic_ref(CHANNEL, dlq=True, prefix=PREFIX)
    main = PREFIX + topics.channel_topic(CHANNEL)
    pick = dlq.Selection(delivery_ids=frozenset({did}))

    (letter,) = [d for d in dlq.read(kafka, ref) if d.delivery_id == did]
    assert letter.reason == "retries_exhausted" and letter.attempts == 5
    shown = letter.detail()
    assert "secret-token-value" not in str(shown)
    assert shown["record"]["attempt"] == 5

    before = end_offsets(kafka, main)
    dry = dlq.redrive(kafka, session, ref, pick, dry_run=True)
    assert dry.outcome.total_produced == 1
    first = dlq.redrive(kafka, session, ref, pick)
    assert first.outcome.produced == {main: 1} and not first.outcome.errors
    second = dlq.redrive(kafka, session, ref, pick)
    assert second.outcome.total_produced == 0
    assert second.outcome.skipped == {"already_redriven": 1}

    back = read_since(kafka, main, before, lambda m: codec.decode(m.value())["delivery_id"] == did)
    assert len(back) == 1  # the dry run produced nothing, the second redrive neither
    redriven = codec.decode(back[0].value(), codec.DELIVERY)
    assert redriven["attempt"] == 1 and redriven["last_error"] is None
    hdrs = slices.headers(back[0])
    assert hdrs["herald.replay"] == b"1" and "herald.reason" not in hdrs

    # The sender delivered it: even a forced redrive is refused by the ledger.
    set_ledger(session, record, "sent")
    forced = dlq.redrive(kafka, session, ref, pick, force=True)
    assert forced.outcome.total_produced == 0
    assert forced.outcome.skipped == {"already_sent": 1}


def test_request_dead_letter_goes_back_to_requests(
    kafka: KafkaSettings, session: Session, producer: Producer
) -> None:
    junk = f"not avro at all {uuid.uuid4()}".encode()
    producer.produce(
        PREFIX + topics.REQUESTED_DLQ, junk, b"u-x", headers=[("herald.reason", b"bad_magic")]
    )
    assert producer.flush(10) == 0
    ref = topic_ref("requests", dlq=True, prefix=PREFIX)
    letters = dlq.read(kafka, ref)
    (last,) = [d for d in letters if d.value == junk]
    assert last.reason == "bad_magic" and last.record is None
    before = end_offsets(kafka, PREFIX + topics.REQUESTED)
    result = dlq.redrive(
        kafka, session, ref, dlq.Selection(refs=frozenset({last.ref})), letters=letters
    )
    assert result.outcome.produced == {PREFIX + topics.REQUESTED: 1}
    back = read_since(
        kafka,
        PREFIX + topics.REQUESTED,
        before,
        lambda m: slices.headers(m).get("herald.redriven_from", b"").endswith(last.ref.encode()),
    )
    assert [m.value() for m in back] == [junk]
    again = dlq.redrive(kafka, session, ref, dlq.Selection(refs=frozenset({last.ref})))
    assert again.outcome.total_produced == 0
    assert again.outcome.skipped == {"already_redriven": 1}
