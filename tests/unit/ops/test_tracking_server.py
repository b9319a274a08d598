"""The tracking server's HTTP contract, with an in-memory producer standing in for Kafka."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from herald.ops.settings import OpsSettings, TrackingServerSection
from herald.ops.tracking import create_app
from processors.tracking import Claim, TrackingSettings, sign
from schemas import codec

SECRET = SecretStr("unit-secret")


class FakeProducer:
    def __init__(self, fail: bool = False) -> None:
        self.records: list[dict[str, Any]] = []
        self.keys: list[bytes] = []
        self.fail = fail
        self._pending: list[Callable[[], None]] = []

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        on_delivery: Callable[..., None],
        headers: Any = None,
    ) -> None:
        assert topic == "notifications.status"
        self.records.append(codec.decode(value, codec.STATUS))
        self.keys.append(key)
        err = _Err() if self.fail else None
        self._pending.append(lambda: on_delivery(err, None))

    def poll(self, _timeout: float) -> int:
        pending, self._pending = self._pending, []
        for ack in pending:
            ack()
        return len(pending)

    def flush(self, _timeout: float) -> int:
        self.poll(0)
        return 0


class _Err:
    def str(self) -> str:
        return "broker down"


def client_for(producer: FakeProducer) -> Iterator[TestClient]:
    settings = OpsSettings(
        tracking=TrackingSettings(secret=SECRET),
        tracking_server=TrackingServerSection(app_keys=[SecretStr("k1")]),
    )
    with TestClient(create_app(settings, producer)) as client:  # type: ignore[arg-type]
        yield client


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def client(producer: FakeProducer) -> Iterator[TestClient]:
    yield from client_for(producer)


def test_click_redirects_to_signed_target_and_records(
    client: TestClient, producer: FakeProducer
) -> None:
    token = sign(
        Claim("click", "d1", "n1", "https://x.example/a?b=1", "u1", "social", "e1"), SECRET
    )
    r = client.get(f"/c/{token}", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "https://x.example/a?b=1"
    assert "no-store" in r.headers["cache-control"]
    (event,) = producer.records
    assert (event["outcome"], event["delivery_id"], event["user_id"], event["category"]) == (
        "clicked",
        "d1",
        "u1",
        "social",
    )
    assert producer.keys == [b"n1"]


def test_open_pixel(client: TestClient, producer: FakeProducer) -> None:
    r = client.get(f"/o/{sign(Claim('open', 'd1', 'n1'), SECRET)}")
    assert r.status_code == 200 and r.content.startswith(b"GIF89a")
    (event,) = producer.records
    assert event["outcome"] == "opened" and event["category"] == "unknown"  # no log to ask


def test_bad_tokens_get_400_and_no_event(client: TestClient, producer: FakeProducer) -> None:
    forged = sign(Claim("click", "d", "n", "https://evil.example/"), SecretStr("other"))
    for path in (
        f"/c/{forged}",
        "/c/abc.def",
        f"/o/{sign(Claim('click', 'd', 'n', 'https://a/'), SECRET)}",
    ):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 400 and "location" not in r.headers
    assert producer.records == []


def test_push_events_auth_validation_and_ack(client: TestClient, producer: FakeProducer) -> None:
    ok = {"event": "delivered", "delivery_id": "d", "notification_id": "n", "channel": "push.ios"}
    assert client.post("/v1/push/events", json=ok).status_code == 401
    assert (
        client.post("/v1/push/events", json=ok, headers={"X-Herald-App-Key": "nope"}).status_code
        == 401
    )
    for bad in (
        {**ok, "event": "boom"},
        {**ok, "channel": "sms"},
        {"events": []},
        {**ok, "delivery_id": ""},
        {**ok, "occurred_at": "yesterday"},
    ):
        r = client.post("/v1/push/events", json=bad, headers={"X-Herald-App-Key": "k1"})
        assert r.status_code == 400 and r.json()["retriable"] is False, bad
    r = client.post(
        "/v1/push/events",
        json={"events": [ok, {**ok, "event": "opened"}]},
        headers={"X-Herald-App-Key": "k1"},
    )
    assert r.status_code == 202 and r.json() == {"accepted": 2}
    assert [e["outcome"] for e in producer.records] == ["delivered", "opened"]


def test_push_events_unacknowledged_are_retriable() -> None:
    for client in client_for(FakeProducer(fail=True)):
        ok = {"event": "opened", "delivery_id": "d", "notification_id": "n"}
        r = client.post("/v1/push/events", json=ok, headers={"X-Herald-App-Key": "k1"})
        assert r.status_code == 503 and r.json()["retriable"] is True
