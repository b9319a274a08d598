"""The tracking server, run as its real entry point, writing to the real status topic."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from cassandra.cluster import Session
from pydantic import SecretStr

from herald.services import ServiceSpec, free_port, python_module, running
from infra import topics
from infra.settings import KafkaSettings
from processors.tracking import TrackingSettings, rewrite_html
from schemas import codec
from tests.conftest import KAFKA
from tests.integration.ops.opskit import end_offsets, read_since
from tests.support import wait_for

pytestmark = pytest.mark.integration
SECRET = "ops-test-secret"
APP_KEY = "ops-test-app-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    spec = ServiceSpec(
        "tracking",
        python_module("herald.ops.tracking"),
        ready_port=port,
        env={
            "HERALD_KAFKA__BOOTSTRAP_SERVERS": KAFKA,
            "HERALD_TRACKING__SECRET": SECRET,
            "HERALD_TRACKING_SERVER__PORT": str(port),
            "HERALD_TRACKING_SERVER__HOST": "127.0.0.1",
            "HERALD_TRACKING_SERVER__APP_KEYS": f'["{APP_KEY}"]',
        },
    )
    with running([spec], tmp_path_factory.mktemp("tracking")):
        yield f"http://127.0.0.1:{port}"


def _status_for(kafka: KafkaSettings, since: dict[int, int], delivery_id: str, n: int) -> list:  # type: ignore[type-arg]
    def found() -> list:  # type: ignore[type-arg]
        msgs = read_since(
            kafka,
            topics.STATUS,
            since,
            lambda m: codec.decode(m.value())["delivery_id"] == delivery_id,
        )
        return msgs if len(msgs) >= n else []

    return [
        codec.decode(m.value(), codec.STATUS)
        for m in wait_for(found, 15, f"{n} status events of {delivery_id}")
    ]


def test_open_and_click_become_status_events(server: str, kafka: KafkaSettings) -> None:
    delivery_id, notification_id = str(uuid.uuid4()), str(uuid.uuid4())
    settings = TrackingSettings(base_url=server, secret=SecretStr(SECRET))
    html = rewrite_html(
        '<p><a href="https://shop.example.com/o/1">order</a></p>',
        delivery_id=delivery_id,
        notification_id=notification_id,
        settings=settings,
        user_id="u-1",
        category="transactional",
        event_id="ev-1",
    )
    click = html.split('href="')[1].split('"')[0]
    pixel = html.split('src="')[1].split('"')[0]
    since = end_offsets(kafka, topics.STATUS)

    with httpx.Client() as client:
        r = client.get(pixel)
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
        r = client.get(click, follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"] == "https://shop.example.com/o/1"

    events = _status_for(kafka, since, delivery_id, 2)
    assert sorted(e["outcome"] for e in events) == ["clicked", "opened"]
    for e in events:
        assert e["notification_id"] == notification_id
        assert (e["user_id"], e["category"], e["event_id"], e["channel"]) == (
            "u-1",
            "transactional",
            "ev-1",
            "email",
        )


def test_tampered_link_is_refused_without_redirect(server: str) -> None:
    settings = TrackingSettings(base_url=server, secret=SecretStr(SECRET))
    html = rewrite_html(
        '<a href="https://shop.example.com/">x</a>',
        delivery_id="d",
        notification_id="n",
        settings=settings,
    )
    click = html.split('href="')[1].split('"')[0]
    payload, sig = click.rsplit("/", 1)[1].split(".")
    forged = TrackingSettings(base_url=server, secret=SecretStr("attacker"))
    evil = (
        rewrite_html(
            '<a href="https://evil.example/">x</a>',
            delivery_id="d",
            notification_id="n",
            settings=forged,
        )
        .split('href="')[1]
        .split('"')[0]
    )
    with httpx.Client() as client:
        for url in (
            f"{server}/c/{payload}.{sig[:-1]}A",
            evil,
            f"{server}/c/garbage",
            f"{server}/o/{payload}.{sig}",
        ):
            r = client.get(url, follow_redirects=False)
            assert r.status_code == 400, url
            assert "location" not in r.headers


def test_push_reports_need_the_app_key(server: str, kafka: KafkaSettings) -> None:
    delivery_id, notification_id = str(uuid.uuid4()), str(uuid.uuid4())
    body = {
        "events": [
            {
                "event": "delivered",
                "delivery_id": delivery_id,
                "notification_id": notification_id,
                "channel": "push.android",
                "user_id": "u-2",
                "category": "social",
            },
            {
                "event": "opened",
                "delivery_id": delivery_id,
                "notification_id": notification_id,
                "channel": "push.android",
                "user_id": "u-2",
                "category": "social",
            },
        ]
    }
    since = end_offsets(kafka, topics.STATUS)
    with httpx.Client() as client:
        assert client.post(f"{server}/v1/push/events", json=body).status_code == 401
        bad = client.post(
            f"{server}/v1/push/events",
            json={"event": "exploded"},
            headers={"X-Herald-App-Key": APP_KEY},
        )
        assert bad.status_code == 400
        r = client.post(
            f"{server}/v1/push/events", json=body, headers={"X-Herald-App-Key": APP_KEY}
        )
        assert r.status_code == 202 and r.json() == {"accepted": 2}
    events = _status_for(kafka, since, delivery_id, 2)
    assert sorted(e["outcome"] for e in events) == ["delivered", "opened"]
    assert {e["channel"] for e in events} == {"push.android"}


def test_context_missing_from_the_token_comes_from_the_notification_log(
    server: str, kafka: KafkaSettings, session: Session
) -> None:
    delivery_id, notification_id = str(uuid.uuid4()), str(uuid.uuid4())
    session.execute(
        "INSERT INTO notification_log (notification_id, delivery_id, user_id, channel, category,"
        " state) VALUES (%s, %s, 'u-log', 'email', 'marketing', 'sent')",
        (notification_id, delivery_id),
    )
    settings = TrackingSettings(base_url=server, secret=SecretStr(SECRET))
    html = rewrite_html(
        "<p>hi</p>", delivery_id=delivery_id, notification_id=notification_id, settings=settings
    )
    pixel = html.split('src="')[1].split('"')[0]
    since = end_offsets(kafka, topics.STATUS)
    assert httpx.get(pixel).status_code == 200
    (event,) = _status_for(kafka, since, delivery_id, 1)
    assert (event["user_id"], event["category"], event["channel"]) == (
        "u-log",
        "marketing",
        "email",
    )
