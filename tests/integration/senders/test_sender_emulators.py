"""`python -m senders run` as a real process: real Kafka, Cassandra and provider emulators.

The emulators and the sender run on free ports with their own consumer groups (starting at
the topics' end), so a demo or another test on the same broker never shares their work.
"""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cassandra.cluster import Session

from herald.bench.services import emulator_spec, provider_env
from herald.services import Service, ServiceSpec, free_port, python_module, start
from infra.emulators.server import Ports
from tests.integration.senders.conftest import (
    PREFIX,
    TopicTap,
    ledger_row,
    make_delivery,
    wait_for,
)

pytestmark = pytest.mark.integration

CHANNELS = ("sms", "push.ios")
# One process gets every partition: main 3 + priority 3 + 3 retry tiers x 3, per channel.
ALL_PARTITIONS = len(CHANNELS) * (3 + 3 + 9)


class Stack:
    def __init__(self, ports: Ports, sender: Service, metrics_port: int) -> None:
        self.ports = ports
        self.sender = sender
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.control = httpx.Client(base_url=ports.control_url, timeout=10)

    def fault(self, **body: Any) -> None:
        self.control.post("/faults", json=body).raise_for_status()

    def accepted(self, delivery_id: str, provider: str | None = None) -> list[dict[str, Any]]:
        params = {"provider": provider} if provider else {}
        entries: list[dict[str, Any]] = self.control.get("/ledger", params=params).json()
        return [e for e in entries if e.get("delivery_id") == delivery_id]

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.metrics_url, timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir: Path = tmp_path_factory.mktemp("sender-emulators")
    ports = Ports.pick()
    emulators = start(emulator_spec(ports), log_dir)
    metrics_port = free_port()
    spec = ServiceSpec(
        name="senders",
        argv=python_module("senders", "run", *(a for ch in CHANNELS for a in ("--channel", ch))),
        ready_port=metrics_port,
        env={
            **provider_env(ports),
            "HERALD_GROUP_PREFIX": f"test-sender-emu-{uuid.uuid4().hex[:8]}",
            "HERALD_START_AT": "latest",
            "HERALD_TOPIC_PREFIX": PREFIX,
            "HERALD_METRICS_PORT": str(metrics_port),
            "HERALD_RETRY__DELAYS_S": "[0.3, 0.3]",
            "HERALD_RETRY__CLAIM_STALE_AFTER_S": "5",
            "HERALD_SESSION_TIMEOUT_MS": "6000",
            "HERALD_BREAKER__FAILURE_THRESHOLD": "1000",
        },
    )
    sender = start(spec, log_dir)
    s = Stack(ports, sender, metrics_port)
    try:
        wait_for(
            lambda: s.metric("herald_sender_assigned_partitions") == ALL_PARTITIONS,
            60,
            "sender assignment",
        )
        yield s
    finally:
        sender.stop()
        emulators.stop()


@pytest.fixture(scope="module")
def tap() -> Iterator[TopicTap]:
    t = TopicTap(["notifications.status", "notifications.push.ios.dlq"])
    yield t
    t.close()


def row(cassandra: Session, delivery: dict[str, Any]) -> dict[str, Any] | None:
    """The delivery's notification log row: what the sender recorded once published."""
    r: dict[str, Any] | None = cassandra.execute(
        "SELECT * FROM notification_log WHERE notification_id = %s AND delivery_id = %s",
        (delivery["notification_id"], delivery["delivery_id"]),
    ).one()
    return r


def settled(cassandra: Session, delivery: dict[str, Any], state: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        r = row(cassandra, delivery)
        return r if r and r["state"] == state and r["published"] else None

    result: dict[str, Any] = wait_for(check, 30, f"{delivery['delivery_id']} {state}")
    return result


def phone() -> str:
    return "+1555" + str(uuid.uuid4().int)[:7]


def token() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def test_sms_is_sent_once_and_the_ledger_says_sent(
    stack: Stack, produce: Any, cassandra: Session
) -> None:
    d = make_delivery("sms", address=phone())
    produce("notifications.sms", d)
    r = settled(cassandra, d, "sent")
    assert r["provider"] == "twilio" and r["provider_message_id"]
    [accepted] = stack.accepted(d["delivery_id"])
    assert accepted["provider"] == "twilio"


def test_the_same_record_twice_reaches_the_provider_once(
    stack: Stack, produce: Any, cassandra: Session
) -> None:
    before = stack.metric("herald_deliveries_total", channel="sms", outcome="duplicate")
    d = make_delivery("sms", address=phone())
    produce("notifications.sms", d)
    produce("notifications.sms", d)
    settled(cassandra, d, "sent")
    wait_for(
        lambda: (
            stack.metric("herald_deliveries_total", channel="sms", outcome="duplicate")
            >= before + 1
        ),
        20,
        "the copy handled",
    )
    assert len(stack.accepted(d["delivery_id"])) == 1


def test_throttled_then_5xx_goes_through_a_retry_tier_then_succeeds(
    stack: Stack, produce: Any, cassandra: Session, tap: TopicTap
) -> None:
    d = make_delivery("sms", address=phone())
    stack.fault(provider="twilio", mode="throttle", status=429, retry_after=1, count=1,
                addresses=[d["address"]])  # fmt: skip
    stack.fault(provider="vonage", mode="error", status=503, count=1, addresses=[d["address"]])
    produce("notifications.sms", d)
    r = settled(cassandra, d, "sent")
    assert r["attempt"] == 2
    assert len(stack.accepted(d["delivery_id"])) == 1
    outcomes = [v["outcome"] for *_, v in tap.where(delivery_id=d["delivery_id"])]
    assert outcomes == ["retried", "sent"]


def test_exhausted_retries_are_dead_lettered_with_reason_headers(
    stack: Stack, produce: Any, cassandra: Session, tap: TopicTap
) -> None:
    d = make_delivery("push.ios", address=token(), device_id="dev-x")
    stack.fault(provider="apns", mode="error", status=503, addresses=[d["address"]])
    produce("notifications.push.ios", d)
    settled(cassandra, d, "dead_lettered")
    letters = wait_for(
        lambda: [m for m in tap.where(delivery_id=d["delivery_id"]) if m[0].endswith(".dlq")],
        20,
        "dead letter",
    )
    headers = letters[0][2]
    assert headers["herald.reason"] == b"retries_exhausted"
    assert headers["herald.attempts"] == b"3"
    assert re.match(rb"apns:.*503", headers["herald.last_error"]), headers
    assert headers["herald.original_topic"] == (PREFIX + "notifications.push.ios").encode()
    assert stack.accepted(d["delivery_id"]) == []


def test_unregistered_token_removes_the_device(
    stack: Stack, produce: Any, cassandra: Session, tap: TopicTap
) -> None:
    d = make_delivery("push.ios", address=token(), device_id=f"dev-{uuid.uuid4().hex[:8]}")
    cassandra.execute(
        "INSERT INTO devices_by_user (user_id, device_id, platform, device_token)"
        " VALUES (%s, %s, 'ios', %s)",
        (d["user_id"], d["device_id"], d["address"]),
    )
    stack.fault(provider="apns", mode="unregistered", addresses=[d["address"]])
    produce("notifications.push.ios", d)
    wait_for(
        lambda: tap.where(delivery_id=d["delivery_id"], outcome="token_invalidated"),
        20,
        "token_invalidated",
    )
    device = cassandra.execute(
        "SELECT * FROM devices_by_user WHERE user_id = %s AND device_id = %s",
        (d["user_id"], d["device_id"]),
    ).one()
    assert device is None
    assert ledger_row(cassandra, d)["state"] == "failed"  # type: ignore[index]


def test_failing_primary_sms_uses_the_fallback_once(
    stack: Stack, produce: Any, cassandra: Session
) -> None:
    d = make_delivery("sms", address=phone())
    stack.fault(provider="twilio", mode="error", status=500, addresses=[d["address"]])
    produce("notifications.sms", d)
    r = settled(cassandra, d, "sent")
    assert r["provider"] == "vonage" and r["attempt"] == 1
    [accepted] = stack.accepted(d["delivery_id"])
    assert accepted["provider"] == "vonage"


def test_sigterm_finishes_and_exits_cleanly(stack: Stack) -> None:
    stack.sender.proc.send_signal(signal.SIGTERM)
    assert stack.sender.proc.wait(timeout=30) == 0, stack.sender.log_tail()
    assert "sender stopped" in stack.sender.log_path.read_text()
