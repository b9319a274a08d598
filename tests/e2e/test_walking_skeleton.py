"""One notification end to end through the real processes: processor, senders, emulators,
over the real Kafka and Cassandra."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cassandra.cluster import Session

from herald.bench.scenario import start_pipeline
from herald.bench.services import Pipeline
from herald.demo.collection import status_reader
from infra.cassandra import connect
from infra.inbox import InboxStore
from producers.contacts import SyncDirectory
from producers.publisher import AsyncPublisher, Publisher
from producers.request import Content, NotificationRequest
from schemas import codec, ids
from tests.conftest import CASSANDRA_SETTINGS, KAFKA_SETTINGS

pytestmark = pytest.mark.e2e

APNS_TOKEN = "a1" * 32
PHONE = "+14155550123"
EMAIL = "skeleton@example.com"


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    pipe = start_pipeline(KAFKA_SETTINGS, "e2e-skeleton")
    yield pipe
    pipe.stop()


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    s = connect(CASSANDRA_SETTINGS)
    yield s
    s.cluster.shutdown()


def _user(session: Session, *, opt_out: tuple[str, str] | None) -> tuple[str, str]:
    """A user with an iPhone, a phone number and an email; returns (user id, device id)."""
    user_id = f"e2e-{uuid.uuid4().hex[:10]}"
    directory = SyncDirectory(session, AsyncPublisher(KAFKA_SETTINGS), hmac_key=b"e2e")
    try:
        directory.set_user(user_id, email=EMAIL, phone=PHONE, locale="en", timezone="UTC")
        device_id = directory.register_device(
            user_id, platform="ios", token=APNS_TOKEN, app_id="e2e"
        )
        if opt_out:
            directory.set_preference(user_id, opt_out[0], opt_out[1], opt_in=False)
    finally:
        directory.close()
    return user_id, device_id


def _expected_ids(nid: str, device_id: str) -> dict[str, str]:
    """Delivery ids are deterministic: the test knows them before anything is sent."""
    return {
        "push.ios": ids.delivery_id(nid, "push.ios", device_id),
        "sms": ids.delivery_id(nid, "sms", "sms"),
        "email": ids.delivery_id(nid, "email", "email"),
    }


def _wait(
    pipeline: Pipeline, consumer: Any, nid: str, want: set[str], settle: float = 0.0
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Status events of `nid`, and this notification's emulator receipts by delivery id,
    once every delivery id in `want` is both reported sent and received (then `settle` s)."""
    events: list[dict[str, Any]] = []
    mine: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 90
    done_at: float | None = None
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None and msg.value():
            event = codec.decode(msg.value(), codec.STATUS)
            if event["notification_id"] == nid:
                events.append(event)
        ledger = httpx.get(f"{pipeline.control_url}/ledger", timeout=10).json()
        dids = {e["delivery_id"] for e in events if e["outcome"] == "sent"}
        mine = {e["delivery_id"]: e for e in ledger if e["delivery_id"] in dids | want}
        if done_at is None and want <= dids and want <= set(mine):
            done_at = time.monotonic()
        if done_at is not None and time.monotonic() - done_at >= settle:
            break
    return events, mine


def _send(
    pipeline: Pipeline, request: NotificationRequest, want: set[str], settle: float = 0.0
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Publish `request` on a clean emulator ledger and wait for `want` (see `_wait`)."""
    pipeline.reset()
    with status_reader(KAFKA_SETTINGS) as consumer:
        with Publisher(KAFKA_SETTINGS, client="e2e") as publisher:
            publisher.publish(request)
        return _wait(pipeline, consumer, request.notification_id, want, settle)


def test_one_request_reaches_push_sms_and_email(pipeline: Pipeline, session: Session) -> None:
    user_id, device_id = _user(session, opt_out=None)
    request = NotificationRequest(
        source="e2e",
        user_id=user_id,
        category="transactional",
        content={
            "push": Content(title="Parcel", body="Your parcel is out for delivery"),
            "sms": Content(body="Parcel out for delivery"),
            "email": Content(subject="Your parcel", body="It arrives today", html="<p>Today</p>"),
        },
    )
    expected = _expected_ids(request.notification_id, device_id)
    events, received = _send(pipeline, request, set(expected.values()))

    assert set(received) == set(expected.values()), events
    by_provider = {e["provider"]: e for e in received.values()}
    assert set(by_provider) == {"apns", "twilio", "smtp"}
    assert by_provider["apns"]["address"] == APNS_TOKEN
    assert by_provider["apns"]["title"] == "Parcel"
    assert by_provider["apns"]["body"] == "Your parcel is out for delivery"
    assert by_provider["twilio"]["address"] == PHONE
    assert by_provider["twilio"]["body"] == "Parcel out for delivery"
    assert by_provider["smtp"]["address"] == EMAIL
    assert by_provider["smtp"]["subject"] == "Your parcel"
    sent = {e["channel"]: e for e in events if e["outcome"] == "sent"}
    assert set(sent) == {"push.ios", "sms", "email"}
    assert {ch: e["delivery_id"] for ch, e in sent.items()} == expected


def test_opted_out_channel_is_dropped_with_its_reason(pipeline: Pipeline, session: Session) -> None:
    user_id, device_id = _user(session, opt_out=("sms", "marketing"))
    request = NotificationRequest(
        source="e2e",
        user_id=user_id,
        category="marketing",
        content={
            "push": Content(title="Sale", body="20% off today"),
            "sms": Content(body="20% off today"),
            "email": Content(subject="Sale", body="20% off today"),
        },
    )
    expected = _expected_ids(request.notification_id, device_id)
    wanted = {expected["push.ios"], expected["email"]}
    # A wrongly fanned-out SMS would reach the emulator within the settle margin.
    events, received = _send(pipeline, request, wanted, settle=3)

    assert set(received) == wanted, events
    assert sorted(e["provider"] for e in received.values()) == ["apns", "smtp"]
    dropped = [e for e in events if e["outcome"] == "dropped"]
    assert [(e["channel"], e["reason"]) for e in dropped] == [("sms", "opted_out")]
    assert not [e for e in events if e["outcome"] == "sent" and e["channel"] == "sms"]


def test_an_inapp_request_lands_in_the_users_feed(pipeline: Pipeline, session: Session) -> None:
    user_id, _device_id = _user(session, opt_out=None)
    request = NotificationRequest(
        source="e2e",
        user_id=user_id,
        category="social",
        channels=["inapp"],
        content={"inapp": Content(title="New follower", body="Ann followed you")},
    )
    did = ids.delivery_id(request.notification_id, "inapp", "inapp")
    with status_reader(KAFKA_SETTINGS) as consumer:
        with Publisher(KAFKA_SETTINGS, client="e2e") as publisher:
            publisher.publish(request)
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(e["outcome"] == "sent" for e in events):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.value():
                event = codec.decode(msg.value(), codec.STATUS)
                if event["notification_id"] == request.notification_id:
                    events.append(event)
    [sent] = [e for e in events if e["outcome"] == "sent"]
    assert (sent["channel"], sent["provider"], sent["delivery_id"]) == ("inapp", "inapp", did)
    [item] = asyncio.run(InboxStore(session).recent(user_id))
    assert (item.item_id, item.title, item.body, item.read_at) == (
        did,
        "New follower",
        "Ann followed you",
        None,
    )
