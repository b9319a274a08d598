"""The sender runtime against the real Kafka and Cassandra, with scripted in-process providers.

Covers the Kafka side of delivery semantics: offsets, retry tiers that pause instead of
sleeping, the DLQ, failover and duplicates. The wire protocols are covered against the
emulators in test_sender_emulators.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cassandra.cluster import Session

from infra.settings import CassandraSettings, KafkaSettings
from schemas import codec
from schemas.channels import Channel
from senders.handler import DeliveryHandler
from senders.providers.base import DeliveryError, Message, Provider, SendResult
from senders.runtime import SenderRuntime
from senders.service import sender
from senders.settings import BreakerSettings, RetrySettings, SenderSettings
from tests.conftest import CASSANDRA_PORT, KAFKA
from tests.integration.senders.conftest import (
    PREFIX,
    TopicTap,
    ledger_row,
    make_delivery,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


class Scripted(Provider):
    """Answers per delivery id from a script; records every call."""

    def __init__(self, name: str, channels: list[str]) -> None:
        self.name = name
        self.channels = frozenset(channels)
        self.script: dict[str, list[Exception]] = defaultdict(list)
        self.calls: dict[str, int] = defaultdict(int)
        self.slow: dict[str, float] = {}
        self.order: list[str] = []

    async def send(self, message: Message) -> SendResult:
        self.calls[message.delivery_id] += 1
        if message.delivery_id in self.slow:
            await asyncio.sleep(self.slow[message.delivery_id])
        self.order.append(message.delivery_id)
        steps = self.script.get(message.delivery_id)
        if steps:
            raise steps.pop(0)
        return SendResult(self.name, f"{self.name}-{message.delivery_id[:8]}")


def err(provider: str, status: int, *, retry_after: float | None = None) -> DeliveryError:
    return DeliveryError(
        f"{provider}:{status}",
        provider=provider,
        retriable=True,
        status=status,
        retry_after=retry_after,
    )


class Harness:
    def __init__(self, runtime: SenderRuntime, providers: dict[str, Scripted]) -> None:
        self.runtime = runtime
        self.p = providers
        self.results: dict[str, list[str]] = defaultdict(list)
        handler: DeliveryHandler = runtime.handler
        original = handler.handle

        async def recording(delivery: dict[str, Any], consumed_from: str, **kw: Any) -> str:
            out = await original(delivery, consumed_from, **kw)
            self.results[delivery["delivery_id"]].append(out)
            return out

        handler.handle = recording  # type: ignore[method-assign]


@pytest.fixture(scope="module")
async def harness() -> AsyncIterator[Harness]:
    settings = SenderSettings(
        kafka=KafkaSettings(bootstrap_servers=KAFKA),
        cassandra=CassandraSettings(port=CASSANDRA_PORT),
        group_prefix=f"test-sender-{uuid.uuid4().hex[:8]}",
        start_at="latest",
        topic_prefix=PREFIX,
        retry=RetrySettings(delays_s=[0.3, 0.3], claim_stale_after_s=3),
        breaker=BreakerSettings(failure_threshold=1000),
        session_timeout_ms=6000,
        max_in_flight=16,
        metrics_enabled=False,
    )
    providers = {
        "twilio": Scripted("twilio", ["sms"]),
        "vonage": Scripted("vonage", ["sms"]),
        "apns": Scripted("apns", ["push.ios"]),
    }
    async with sender(settings, [Channel.SMS, Channel.PUSH_IOS], providers=providers) as rt:
        task = asyncio.create_task(rt.run())
        async with asyncio.timeout(60):
            await rt.wait_ready()
        yield Harness(rt, providers)
        rt.stop()
        await asyncio.wait_for(task, 30)


@pytest.fixture(scope="module")
def tap() -> Any:
    t = TopicTap(
        [
            "notifications.status",
            "notifications.sms.retry.1",
            "notifications.sms.retry.2",
            "notifications.sms.dlq",
            "notifications.push.ios.dlq",
            "users.changes",
        ]
    )
    yield t
    t.close()


async def until(check: Callable[[], Any], what: str, within: float = 20) -> Any:
    return await asyncio.to_thread(wait_for, check, within, what)


def outcomes(tap: TopicTap, delivery_id: str) -> list[str]:
    return [v["outcome"] for _, _, _, v in tap.where(delivery_id=delivery_id) if "outcome" in v]


async def test_delivery_is_sent_once_and_the_ledger_says_sent(
    harness: Harness, tap: TopicTap, produce: Any, cassandra: Session
) -> None:
    d = make_delivery("sms")
    produce("notifications.sms", d)
    row = await until(lambda: (r := ledger_row(cassandra, d)) and r["published"] and r, "published")
    assert row["state"] == "sent"
    assert row["provider"] == "twilio" and row["provider_message_id"].startswith("twilio-")
    events = await until(lambda: tap.where(delivery_id=d["delivery_id"], outcome="sent"), "status")
    _, key, _, event = events[0]
    assert key == d["notification_id"].encode()
    assert event["provider_message_id"] == row["provider_message_id"]
    log = cassandra.execute(
        "SELECT state FROM notification_log WHERE notification_id = %s AND delivery_id = %s",
        (d["notification_id"], d["delivery_id"]),
    ).one()
    assert log["state"] == "sent"
    assert harness.p["twilio"].calls[d["delivery_id"]] == 1


async def test_the_same_record_twice_makes_one_provider_call(
    harness: Harness, produce: Any
) -> None:
    d = make_delivery("sms")
    produce("notifications.sms", d)
    produce("notifications.sms.priority", d)  # another lane, processed concurrently
    produce("notifications.sms", d)
    await until(lambda: len(harness.results[d["delivery_id"]]) == 3, "three records handled")
    assert sorted(harness.results[d["delivery_id"]]) == ["duplicate", "duplicate", "sent"]
    assert harness.p["twilio"].calls[d["delivery_id"]] == 1


async def test_throttled_goes_to_a_retry_tier_then_succeeds(
    harness: Harness, tap: TopicTap, produce: Any, cassandra: Session
) -> None:
    d = make_delivery("sms")
    did = d["delivery_id"]
    harness.p["twilio"].script[did] = [err("twilio", 429, retry_after=1.0)]
    harness.p["vonage"].script[did] = [err("vonage", 503)]
    produce("notifications.sms", d)
    await until(lambda: (r := ledger_row(cassandra, d)) and r["state"] == "sent", "sent", 30)
    row = ledger_row(cassandra, d)
    assert row is not None and row["attempt"] == 2 and row["provider"] == "twilio"
    [(_, _, _, retry)] = tap.where(delivery_id=did, attempt=2, last_error="vonage:503")
    assert retry["not_before"] is not None
    await until(lambda: outcomes(tap, did) == ["retried", "sent"], "retried then sent")
    await until(lambda: harness.results[did] == ["retrying", "sent"], "handled twice")


async def test_main_lane_keeps_draining_while_a_retry_waits(
    harness: Harness, produce: Any, cassandra: Session
) -> None:
    slow = make_delivery("sms")
    harness.p["twilio"].script[slow["delivery_id"]] = [err("twilio", 429, retry_after=5)]
    harness.p["vonage"].script[slow["delivery_id"]] = [err("vonage", 503)]
    produce("notifications.sms", slow)
    await until(lambda: harness.results[slow["delivery_id"]] == ["retrying"], "retry queued")
    fresh = make_delivery("sms")
    produce("notifications.sms", fresh)
    await until(lambda: harness.results[fresh["delivery_id"]] == ["sent"], "fresh sent", 5)
    assert harness.results[slow["delivery_id"]] == ["retrying"]  # still not due
    await until(lambda: harness.results[slow["delivery_id"]] == ["retrying", "sent"], "due", 20)


async def test_exhausted_retries_go_to_the_dlq_with_reason_headers(
    harness: Harness, tap: TopicTap, produce: Any, cassandra: Session
) -> None:
    d = make_delivery("push.ios", device_id="dev-1")
    did = d["delivery_id"]
    harness.p["apns"].script[did] = [err("apns", 503) for _ in range(3)]
    produce("notifications.push.ios", d)
    found = await until(
        lambda: [m for m in tap.where(delivery_id=did) if m[0] == "notifications.push.ios.dlq"],
        "dead letter",
        30,
    )
    _, key, headers, value = found[0]
    assert key == d["user_id"].encode()
    assert headers["herald.reason"] == b"retries_exhausted"
    assert headers["herald.attempts"] == b"3"
    assert headers["herald.first_error"] == b"apns:503"
    assert headers["herald.last_error"] == b"apns:503"
    assert headers["herald.original_topic"] == (PREFIX + "notifications.push.ios").encode()
    assert int(headers["herald.failed_at"]) > 0
    assert value["attempt"] == 3
    assert harness.p["apns"].calls[did] == 3
    row = ledger_row(cassandra, d)
    assert row is not None and row["state"] == "dead_lettered"
    await until(lambda: outcomes(tap, did) == ["retried", "retried", "dead_lettered"], "statuses")


async def test_unregistered_token_removes_the_device_and_says_so_on_users_changes(
    harness: Harness, tap: TopicTap, produce: Any, cassandra: Session
) -> None:
    d = make_delivery("push.ios", device_id=f"dev-{uuid.uuid4().hex[:6]}")
    cassandra.execute(
        "INSERT INTO devices_by_user (user_id, device_id, platform, device_token)"
        " VALUES (%s, %s, 'ios', %s)",
        (d["user_id"], d["device_id"], d["address"]),
    )
    harness.p["apns"].script[d["delivery_id"]] = [
        DeliveryError(
            "apns:410 Unregistered",
            provider="apns",
            retriable=False,
            invalid_address=True,
            status=410,
        )
    ]
    produce("notifications.push.ios", d)
    await until(
        lambda: tap.where(delivery_id=d["delivery_id"], outcome="token_invalidated"), "event"
    )
    device = cassandra.execute(
        "SELECT * FROM devices_by_user WHERE user_id = %s AND device_id = %s",
        (d["user_id"], d["device_id"]),
    ).one()
    assert device is None
    assert "failed" in outcomes(tap, d["delivery_id"])
    # The processors cache the user's devices: the change makes them read it again.
    [(_, key, _, change)] = await until(
        lambda: [m for m in tap.where(user_id=d["user_id"]) if m[0] == "users.changes"],
        "user change",
    )
    assert key == d["user_id"].encode()
    assert change["kind"] == "device"


async def test_failing_primary_sms_uses_the_fallback_once(
    harness: Harness, produce: Any, cassandra: Session
) -> None:
    d = make_delivery("sms")
    did = d["delivery_id"]
    harness.p["twilio"].script[did] = [err("twilio", 500)]
    produce("notifications.sms", d)
    await until(lambda: (r := ledger_row(cassandra, d)) and r["state"] == "sent", "sent")
    row = ledger_row(cassandra, d)
    assert row is not None and row["provider"] == "vonage" and row["attempt"] == 1
    assert (harness.p["twilio"].calls[did], harness.p["vonage"].calls[did]) == (1, 1)


async def test_unprocessable_records_are_dead_lettered_as_they_are(
    harness: Harness, tap: TopicTap, kafka_producer: Any, produce: Any
) -> None:
    marker = uuid.uuid4().hex.encode()
    kafka_producer.produce(PREFIX + "notifications.sms", b"not avro " + marker, b"u-x")
    kafka_producer.flush(10)
    stray = make_delivery("email")  # an email delivery on the SMS topic
    produce("notifications.sms", stray)

    def letters() -> list[Any]:
        return [m for m in tap.messages if m[0] == "notifications.sms.dlq"]

    await until(lambda: len(letters()) >= 2, "two dead letters")
    reasons = {m[2]["herald.reason"] for m in letters()}
    assert {b"undecodable:bad_magic", b"wrong_channel"} <= reasons
    assert harness.p["twilio"].calls[stray["delivery_id"]] == 0


async def test_a_dead_letter_kafka_refuses_goes_truncated_with_the_reason(
    harness: Harness, tap: TopicTap, kafka_producer: Any
) -> None:
    # Just under the producer's message.max.bytes (1,000,000) as it came: with the
    # dead-letter headers it is over, and Kafka refuses it (MSG_SIZE_TOO_LARGE).
    value = b"not avro " + b"x" * 999_891
    user = f"user-{uuid.uuid4()}"
    kafka_producer.produce(PREFIX + "notifications.sms", value, user.encode())
    kafka_producer.flush(10)

    def truncated() -> list[Any]:
        size = str(len(value)).encode()
        return [
            m
            for m in tap.messages
            if m[0] == "notifications.sms.dlq" and m[2].get("herald.truncated_from") == size
        ]

    [(_, key, headers, _)] = await until(truncated, "truncated dead letter", 30)
    assert key == user.encode()
    assert headers["herald.reason"] == b"too_large"
    assert headers["herald.first_error"] == b"undecodable:bad_magic"
    assert headers["herald.last_error"] == b"MSG_SIZE_TOO_LARGE"


async def test_one_users_deliveries_go_out_in_order(harness: Harness, produce: Any) -> None:
    user = f"user-{uuid.uuid4()}"
    batch = [make_delivery("sms", user_id=user) for _ in range(5)]
    harness.p["twilio"].slow[batch[0]["delivery_id"]] = 0.5  # the others must not overtake
    for d in batch:
        produce("notifications.sms", d)
    ids = [d["delivery_id"] for d in batch]
    await until(lambda: all(harness.results[i] for i in ids), "all handled")
    assert [i for i in harness.p["twilio"].order if i in ids] == ids


async def test_a_users_other_devices_do_not_wait_for_each_other(
    harness: Harness, produce: Any
) -> None:
    """Order holds per device: the copy of a notification to a user's second phone goes
    while the first phone's is still in the provider call, and the next notification to
    the first phone still waits for it."""
    user = f"user-{uuid.uuid4()}"
    first = make_delivery("push.ios", user_id=user, device_id="phone-1")
    second = make_delivery("push.ios", user_id=user, device_id="phone-2")
    later = make_delivery("push.ios", user_id=user, device_id="phone-1")
    harness.p["apns"].slow[first["delivery_id"]] = 1.0
    for d in (first, second, later):
        produce("notifications.push.ios", d)
    ids = [d["delivery_id"] for d in (first, second, later)]
    await until(lambda: all(harness.results[i] for i in ids), "all handled")
    order = [i for i in harness.p["apns"].order if i in ids]
    assert order.index(second["delivery_id"]) < order.index(first["delivery_id"])
    assert order.index(first["delivery_id"]) < order.index(later["delivery_id"])


async def test_a_redriven_dead_letter_is_sent_and_a_plain_copy_is_not(
    harness: Harness, tap: TopicTap, kafka_producer: Any, cassandra: Session
) -> None:
    d = make_delivery("push.ios", device_id="dev-1")
    did = d["delivery_id"]
    harness.p["apns"].script[did] = [err("apns", 503) for _ in range(3)]
    kafka_producer.produce(
        PREFIX + "notifications.push.ios", codec.encode(codec.DELIVERY, d), d["user_id"].encode()
    )
    kafka_producer.flush(10)
    await until(
        lambda: (r := ledger_row(cassandra, d)) and r["state"] == "dead_lettered", "dlq", 30
    )
    await until(lambda: len(harness.results[did]) == 3, "three attempts")
    assert harness.p["apns"].calls[did] == 3

    fresh = {**d, "attempt": 1}
    # A replayed copy without the redrive header: the ledger says dead-lettered, no call.
    kafka_producer.produce(
        PREFIX + "notifications.push.ios",
        codec.encode(codec.DELIVERY, fresh),
        d["user_id"].encode(),
        headers=[("herald.replay", b"1")],
    )
    kafka_producer.flush(10)
    await until(lambda: len(harness.results[did]) == 4, "copy handled")
    assert harness.results[did][-1] == "duplicate"
    # The operator's redrive (`herald dlq redrive` sets herald.redriven_from): sent once.
    kafka_producer.produce(
        PREFIX + "notifications.push.ios",
        codec.encode(codec.DELIVERY, fresh),
        d["user_id"].encode(),
        headers=[("herald.replay", b"1"), ("herald.redriven_from", b"dlq:0:1")],
    )
    kafka_producer.flush(10)
    await until(lambda: (r := ledger_row(cassandra, d)) and r["state"] == "sent", "sent", 20)
    assert harness.p["apns"].calls[did] == 4
