"""The oracle follows the real topics: what it reads from Kafka decides the verdict."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from confluent_kafka import Producer

from herald.bench.oracle import Oracle
from herald.bench.scenario import make_request
from infra import topics
from schemas import codec
from schemas.events import status_event
from tests.conftest import KAFKA_SETTINGS
from tests.support import wait_for

pytestmark = pytest.mark.integration


class LedgerStub(Oracle):
    receipts: Counter[str] = Counter()

    def ledger(self) -> Counter[str]:
        return self.receipts


def test_oracle_reads_status_channel_and_dlq_topics() -> None:
    kafka = KAFKA_SETTINGS
    oracle = LedgerStub(kafka, "http://unused")
    oracle.receipts = Counter()
    producer = Producer(kafka.producer_config("oracle-test"))
    try:
        user = f"oracle-{uuid.uuid4()}"
        sent, dropped = make_request(user, "email"), make_request(user, "sms")
        oracle.expect([sent, dropped])
        bad_key = f"oracle-bad-{uuid.uuid4()}".encode()
        oracle.expect_rejected(bad_key)
        did = str(uuid.uuid4())
        delivery = {
            "delivery_id": did,
            "notification_id": sent["notification_id"],
            "event_id": sent["event_id"],
            "user_id": user,
            "channel": "email",
            "category": "transactional",
            "address": "a@example.com",
            "body": "hi",
            "requested_at": 1,
            "created_at": 1,
        }
        value = codec.encode(codec.DELIVERY, delivery)
        producer.produce(topics.channel_topic("email"), key=user.encode(), value=value)
        for nid, outcome, d, reason in (
            (sent["notification_id"], "sent", did, None),
            (dropped["notification_id"], "dropped", None, "opted_out"),
        ):
            ev = status_event(
                notification_id=nid,
                event_id="e",
                user_id=user,
                category="transactional",
                outcome=outcome,
                reason=reason,
                delivery_id=d,
            )
            producer.produce(topics.STATUS, key=nid.encode(), value=codec.encode(codec.STATUS, ev))
        producer.produce(
            topics.REQUESTED_DLQ, key=bad_key, value=b"junk", headers={"herald.reason": "bad_magic"}
        )
        assert producer.flush(30) == 0

        # Sent but not yet in the ledger: not settled.
        wait_for(lambda: did in oracle.seen.fanned, 20, "the delivery to be seen")
        assert not oracle.settled()
        oracle.receipts = Counter({did: 1})
        verdict = oracle.wait(timeout=20, quiet_s=0)
        assert not verdict.problems, verdict.summary()
        assert verdict.counts["delivered"] == 1 and verdict.counts["dropped"] == 1
        assert verdict.rejected == {bad_key: ["bad_magic"]}

        oracle.receipts = Counter({did: 2})
        assert any(p.startswith("doubled") for p in oracle.wait(timeout=1, quiet_s=0).problems)
    finally:
        oracle.stop()
