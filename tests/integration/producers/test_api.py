"""The send API against the real Kafka and Cassandra: every endpoint, every error code."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cassandra.cluster import Session
from confluent_kafka import Producer

from infra import topics
from infra.settings import KafkaSettings
from producers.api import Intake, create_app
from producers.clients import ClientStore, NewClient
from producers.publisher import AsyncPublisher
from schemas import codec
from schemas.ids import notification_id
from tests.integration.producers.intakekit import changes_for, records_for, uid

pytestmark = pytest.mark.integration

APNS = "0f" * 32


@pytest.fixture(scope="module")
def billing(session: Session) -> NewClient:
    return ClientStore(session).create(
        f"billing-{uuid.uuid4().hex[:8]}",
        sources=set(),
        rate_per_s=1000,
        burst=1000,
        scopes={"contacts:read", "contacts:write"},
    )


def auth(c: NewClient) -> dict[str, str]:
    return {"X-Herald-App-Key": c.client.app_key, "X-Herald-App-Secret": c.secret}


@pytest.fixture(scope="module")
async def user(intake: Intake) -> str:
    user_id = uid()
    await intake.directory.set_user(user_id, email="u@example.com", locale="en")
    return user_id


@pytest.fixture(scope="module")
def template(session: Session) -> str:
    template_id = f"t-{uuid.uuid4()}"
    session.execute(
        "INSERT INTO templates (template_id, locale, channel, body) VALUES (%s, 'en', 'sms', 'hi')",
        (template_id,),
    )
    return template_id


def body(user: str, **over: Any) -> dict[str, Any]:
    return {
        "user_id": user,
        "category": "transactional",
        "channels": ["sms"],
        "content": {"sms": {"body": "Your code is 1234"}},
        **over,
    }


async def test_send_one_lands_on_the_request_topic(
    api: httpx.AsyncClient, billing: NewClient, user: str
) -> None:
    since = int(time.time() * 1000) - 1000
    r = await api.post("/v1/notifications", json=body(user), headers=auth(billing))
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["notification_id"] == notification_id(out["event_id"])
    [record] = records_for(topics.REQUESTED, user, since_ms=since, count=1, expect=codec.REQUEST)
    assert record["event_id"] == out["event_id"]
    assert record["source"] == billing.client.name
    assert record["content"]["sms"]["body"] == "Your code is 1234"


async def test_idempotency_key_scoped_to_the_client_is_the_event_id_and_replay_keeps_ids(
    api: httpx.AsyncClient, billing: NewClient, template: str
) -> None:
    target = uid()
    await api.put("/v1/users/" + target, json={"locale": "en"}, headers=auth(billing))
    since = int(time.time() * 1000) - 1000
    key = f"order-{uuid.uuid4()}"
    headers = {**auth(billing), "Idempotency-Key": key}
    req = body(target, template_id=template, content={}, params={"code": "1"})
    first = await api.post("/v1/notifications", json=req, headers=headers)
    again = await api.post("/v1/notifications", json=req, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    event_id = f"{billing.client.client_id}:{key}"
    assert first.json()["event_id"] == event_id
    records = records_for(topics.REQUESTED, target, since_ms=since, count=2)
    assert [r["event_id"] for r in records] == [event_id, event_id]


async def test_batch_and_basic_auth(api: httpx.AsyncClient, billing: NewClient, user: str) -> None:
    basic = base64.b64encode(f"{billing.client.app_key}:{billing.secret}".encode()).decode()
    r = await api.post(
        "/v1/notifications",
        json={"notifications": [body(user), body(user, priority="high")]},
        headers={"Authorization": f"Basic {basic}", "Idempotency-Key": "k-" + uid()},
    )
    assert r.status_code == 202, r.text
    ids = [n["event_id"] for n in r.json()["notifications"]]
    assert len(ids) == 2 and ids[0].endswith(":0") and ids[1].endswith(":1")


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda u, t: body(""), "user_id"),
        (lambda u, t: body(uid()), "user_id"),
        (lambda u, t: body(u, template_id="no-such-" + uid(), content={}), "template_id"),
        (lambda u, t: body(u, content={}), "template_id"),
        (lambda u, t: body(u, category="Bad Category"), "category"),
        (lambda u, t: body(u, channels=["fax"]), "channels.0"),
        (lambda u, t: body(u, content={"sms": {"body": "x" * 70_000}}), "payload"),
        (lambda u, t: body(u, send_at="yesterday"), "send_at"),
        (
            lambda u, t: {"notifications": [body(u), body(u, user_id="")]},
            "notifications[1].user_id",
        ),
        (
            lambda u, t: {"notifications": [body(u), body(u), body(uid())]},
            "notifications[2].user_id",
        ),
        (
            lambda u, t: {
                "notifications": [body(u, template_id=t), body(u, template_id="nope-" + uid())]
            },
            "notifications[1].template_id",
        ),
    ],
)
async def test_invalid_requests_are_400_naming_the_field(
    api: httpx.AsyncClient, billing: NewClient, user: str, template: str, make: Any, field: str
) -> None:
    r = await api.post("/v1/notifications", json=make(user, template), headers=auth(billing))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid"
    assert r.json()["field"] == field


@pytest.mark.parametrize("user_id", ["jane@example.com", "+14155550123"])
async def test_a_contact_as_user_id_is_400(
    api: httpx.AsyncClient, billing: NewClient, user_id: str
) -> None:
    put = await api.put(f"/v1/users/{user_id}", json={"locale": "en"}, headers=auth(billing))
    send = await api.post("/v1/notifications", json=body(user_id), headers=auth(billing))
    for r in (put, send):
        assert (r.status_code, r.json()["field"]) == (400, "user_id"), r.text
        assert "email address or phone number" in r.json()["message"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"user_id": "u-\\ud800", "content": {"sms": {"body": "x"}}}', "user_id"),
        (
            b'{"notifications": [{"user_id": "u", "content": {"sms": {"body": "\\ud800"}}}]}',
            "notifications[0].content.sms.body",
        ),
    ],
)
async def test_a_lone_surrogate_is_400_naming_the_field(
    api: httpx.AsyncClient, billing: NewClient, user: str, raw: bytes, field: str
) -> None:
    r = await api.post("/v1/notifications", content=raw, headers=auth(billing))
    assert (r.status_code, r.json()["field"]) == (400, field), r.text
    bad_tz = b'{"timezone": "\\udfff"}'
    r = await api.put(f"/v1/users/{user}", content=bad_tz, headers=auth(billing))
    assert (r.status_code, r.json()["field"]) == (400, "timezone"), r.text


async def test_a_line_break_in_a_param_the_template_puts_in_a_header_is_400(
    api: httpx.AsyncClient, billing: NewClient, user: str, session: Session
) -> None:
    template_id = f"t-{uuid.uuid4()}"
    session.execute(
        "INSERT INTO templates (template_id, locale, channel, subject, body)"
        " VALUES (%s, 'en', 'email', 'Order {{ order }}', '{{ address }}')",
        (template_id,),
    )
    req = body(user, template_id=template_id, content={}, channels=["email"])
    bad = {**req, "params": {"order": "1\r\nBcc: x@example.com", "address": "a"}}
    r = await api.post("/v1/notifications", json=bad, headers=auth(billing))
    assert (r.status_code, r.json()["field"]) == (400, "params.order"), r.text
    fine = {**req, "params": {"order": "1", "address": "1 Main St\nSpringfield"}}
    r = await api.post("/v1/notifications", json=fine, headers=auth(billing))
    assert r.status_code == 202, r.text


async def test_malformed_json_is_400(api: httpx.AsyncClient, billing: NewClient) -> None:
    r = await api.post("/v1/notifications", content=b"{nope", headers=auth(billing))
    assert (r.status_code, r.json()["field"]) == (400, "body")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Herald-App-Key": "hk_unknown", "X-Herald-App-Secret": "x"},
        {"Authorization": "Basic !!!"},
    ],
)
async def test_missing_or_unknown_credentials_are_401(
    api: httpx.AsyncClient, user: str, headers: dict[str, str]
) -> None:
    r = await api.post("/v1/notifications", json=body(user), headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthenticated"
    assert r.headers["WWW-Authenticate"].startswith("Basic")


async def test_wrong_secret_is_401(api: httpx.AsyncClient, billing: NewClient, user: str) -> None:
    headers = {**auth(billing), "X-Herald-App-Secret": billing.secret + "x"}
    r = await api.get(f"/v1/users/{user}", headers=headers)
    assert r.status_code == 401


async def test_failed_logins_are_throttled_per_address_with_retry_after(
    intake: Intake, billing: NewClient, user: str
) -> None:
    app = create_app(intake.settings, intake)
    transport = httpx.ASGITransport(app=app, client=(f"10.{uuid.uuid4().int % 250}.0.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald") as attacker:
        for i in range(intake.settings.api.failed_logins_burst):
            wrong = {"X-Herald-App-Key": f"hk_guess{i}", "X-Herald-App-Secret": "x"}
            r = await attacker.get(f"/v1/users/{user}", headers=wrong)
            assert r.status_code == 401
        r = await attacker.get(f"/v1/users/{user}", headers=wrong)
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1


async def test_disallowed_category_or_source_is_403(
    api: httpx.AsyncClient, session: Session, user: str
) -> None:
    shop = ClientStore(session).create(
        "shop-" + uid(), sources={"shop", "shop-batch"}, categories={"transactional"}
    )
    r = await api.post("/v1/notifications", json=body(user, source="shop"), headers=auth(shop))
    assert r.status_code == 202, r.text
    r = await api.post(
        "/v1/notifications",
        json=body(user, source="shop", category="marketing"),
        headers=auth(shop),
    )
    assert (r.status_code, r.json()["field"]) == (403, "category")
    r = await api.post("/v1/notifications", json=body(user, source="billing"), headers=auth(shop))
    assert (r.status_code, r.json()["field"]) == (403, "source")


async def test_quota_exceeded_is_429_with_retry_after(
    api: httpx.AsyncClient, session: Session, user: str
) -> None:
    tiny = ClientStore(session).create("tiny-" + uid(), rate_per_s=0.1, burst=2)
    codes = [
        (await api.post("/v1/notifications", json=body(user), headers=auth(tiny))).status_code
        for _ in range(3)
    ]
    assert codes == [202, 202, 429]
    r = await api.post("/v1/notifications", json=body(user), headers=auth(tiny))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"] == "rate_limited"
    big = {"notifications": [body(user)] * 3}
    r = await api.post("/v1/notifications", json=big, headers=auth(tiny))
    assert (r.status_code, r.json()["field"]) == (400, "notifications")


async def test_contacts_endpoints(
    api: httpx.AsyncClient, billing: NewClient, session: Session
) -> None:
    h = auth(billing)
    u = uid()
    since = int(time.time() * 1000) - 1000
    r = await api.put(
        f"/v1/users/{u}",
        json={
            "email": "ada@example.com",
            "phone": "+1 202-555-0143",
            "timezone": "Asia/Seoul",
            "locale": "ko-KR",
            "quiet_hours": "22:00-07:00",
        },
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert r.json()["phone"] == "+12025550143"
    for bad, field in [
        ({"email": "ada@"}, "email"),
        ({"phone": "+1 555"}, "phone"),
        ({"timezone": "Nowhere"}, "timezone"),
        ({"locale": "english please"}, "locale"),
        ({"quiet_hours": "7am"}, "quiet_hours"),
        ({"unsubscribed_all": "yes"}, "unsubscribed_all"),
        ({"nickname": "x"}, "nickname"),
    ]:
        r = await api.put(f"/v1/users/{u}", json=bad, headers=h)
        assert (r.status_code, r.json()["field"]) == (400, field), r.text

    r = await api.post(
        f"/v1/users/{u}/devices",
        json={"platform": "ios", "token": "not-hex", "app_id": "app"},
        headers=h,
    )
    assert (r.status_code, r.json()["field"]) == (400, "token")
    r = await api.post(
        f"/v1/users/{u}/devices",
        json={"platform": "ios", "token": APNS, "app_id": "app"},
        headers=h,
    )
    assert r.status_code == 201
    device_id = r.json()["device_id"]

    r = await api.put(
        f"/v1/users/{u}/preferences",
        json={"preferences": [{"channel": "sms", "category": "marketing", "opt_in": False}]},
        headers=h,
    )
    assert r.status_code == 200
    r = await api.put(
        f"/v1/users/{u}/preferences",
        json={"preferences": [{"channel": "pigeon", "opt_in": False}]},
        headers=h,
    )
    assert (r.status_code, r.json()["field"]) == (400, "preferences[0].channel")

    assert (await api.delete(f"/v1/users/{u}/phone", headers=h)).status_code == 204
    got = (await api.get(f"/v1/users/{u}", headers=h)).json()
    assert got["phone"] is None and got["quiet_hours"] == "22:00-07:00"
    assert [d["device_id"] for d in got["devices"]] == [device_id]
    assert "device_token" not in got["devices"][0]
    assert got["preferences"] == [{"channel": "sms", "category": "marketing", "opt_in": False}]

    assert (await api.delete(f"/v1/users/{u}/devices/{device_id}", headers=h)).status_code == 204
    assert (await api.delete(f"/v1/users/{u}/devices/{device_id}", headers=h)).status_code == 404
    assert (await api.delete(f"/v1/users/{u}", headers=h)).status_code == 204
    assert (await api.get(f"/v1/users/{u}", headers=h)).status_code == 404
    row = session.execute("SELECT * FROM users WHERE user_id = %s", (u,)).one()
    assert row is None

    kinds = [c["kind"] for c in changes_for(u, since_ms=since, count=6)]
    assert kinds == ["contact", "device", "preference", "contact", "device", "deleted"]


async def test_schedules_endpoints(api: httpx.AsyncClient, billing: NewClient, user: str) -> None:
    h = auth(billing)
    sid = "s-" + uid()
    spec = {
        "schedule_id": sid,
        "cron": "0 9 * * mon",
        "timezone": "Asia/Seoul",
        "request": body(user),
    }
    r = await api.post("/v1/schedules", json=spec, headers=h)
    assert r.status_code == 201, r.text
    assert (await api.post("/v1/schedules", json=spec, headers=h)).status_code == 409
    r = await api.post("/v1/schedules", json={**spec, "cron": "61 * * * *"}, headers=h)
    assert (r.status_code, r.json()["field"]) == (400, "cron")
    r = await api.post(
        "/v1/schedules", json={**spec, "request": {**body(user), "event_id": "x"}}, headers=h
    )
    assert (r.status_code, r.json()["field"]) == (400, "request.event_id")
    r = await api.post("/v1/schedules", json={**spec, "owner": "someone-else"}, headers=h)
    assert (r.status_code, r.json()["field"]) == (403, "owner")

    listed = (await api.get("/v1/schedules", headers=h)).json()["schedules"]
    assert sid in [s["schedule_id"] for s in listed]
    assert (await api.get(f"/v1/schedules/{sid}", headers=h)).json()["cron"] == "0 9 * * mon"
    assert (await api.delete(f"/v1/schedules/{sid}", headers=h)).status_code == 204
    assert (await api.get(f"/v1/schedules/{sid}", headers=h)).status_code == 404


async def test_cancel_a_held_request(
    api: httpx.AsyncClient, billing: NewClient, intake: Intake
) -> None:
    h = auth(billing)
    assert intake.held is not None, "infra.scheduling is part of the tree"
    r = await api.delete(f"/v1/notifications/unknown-{uuid.uuid4()}", headers=h)
    assert (r.status_code, r.json()["field"]) == (404, "event_id")
    event_id = f"{billing.client.client_id}:{uuid.uuid4()}"
    due = datetime.now(UTC) + timedelta(hours=1)
    assert await intake.held.hold(
        event_id=event_id,
        user_id=uid(),
        payload=b"x",
        due_at_ms=int(due.timestamp() * 1000),
        reason="send_at",
    )
    r = await api.get(f"/v1/notifications/{event_id}", headers=h)
    assert r.json()["scheduled"] == "held" and r.json()["deliveries"] == []
    r = await api.delete(f"/v1/notifications/{event_id}", headers=h)
    assert r.status_code == 200 and r.json()["canceled"] is True
    r = await api.delete(f"/v1/notifications/{event_id}", headers=h)
    assert r.status_code == 409
    assert await intake.held.state(event_id) == "canceled"


async def test_kafka_unreachable_is_503_with_retry_after(
    intake: Intake, billing: NewClient, user: str
) -> None:
    dead = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    producer = Producer(
        {**dead.producer_config("test-dead"), "message.timeout.ms": 1500, "log_level": 0}
    )
    broken = Intake(intake.settings)
    broken.__dict__.update(intake.__dict__)
    broken.publisher = AsyncPublisher(dead, producer=producer)
    transport = httpx.ASGITransport(app=create_app(intake.settings, broken))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald") as api:
        r = await api.post("/v1/notifications", json=body(user), headers=auth(billing))
    await broken.publisher.close(flush_timeout=0)
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "1"
    assert r.json()["error"] == "unavailable"


# --- tenants: one client never sees, suppresses or cancels another's work -----------


@pytest.fixture(scope="module")
def marketing(session: Session) -> NewClient:
    return ClientStore(session).create(
        f"marketing-{uuid.uuid4().hex[:8]}", categories={"marketing"}, rate_per_s=1000, burst=1000
    )


async def test_idempotency_keys_are_scoped_per_client(
    api: httpx.AsyncClient, billing: NewClient, session: Session, user: str
) -> None:
    other = ClientStore(session).create("other-" + uid(), rate_per_s=1000, burst=1000)
    since = int(time.time() * 1000) - 1000
    key = f"order-{uuid.uuid4()}"
    first = await api.post(
        "/v1/notifications", json=body(user), headers={**auth(billing), "Idempotency-Key": key}
    )
    second = await api.post(
        "/v1/notifications", json=body(user), headers={**auth(other), "Idempotency-Key": key}
    )
    assert first.status_code == second.status_code == 202, second.text
    assert first.json()["event_id"] != second.json()["event_id"]
    assert first.json()["notification_id"] != second.json()["notification_id"]
    records = records_for(
        topics.REQUESTED,
        user,
        since_ms=since,
        count=2,
        until=lambda r: r["event_id"] == second.json()["event_id"],
    )
    assert {first.json()["event_id"], second.json()["event_id"]} <= {r["event_id"] for r in records}


async def test_same_key_with_another_body_is_409_in_either_lane(
    api: httpx.AsyncClient, billing: NewClient, user: str
) -> None:
    headers = {**auth(billing), "Idempotency-Key": f"k-{uuid.uuid4()}"}
    r = await api.post("/v1/notifications", json=body(user), headers=headers)
    assert r.status_code == 202, r.text
    for changed in (
        body(user, content={"sms": {"body": "Your code is 9999"}}),
        body(user, priority="high"),  # the priority lane: it must not win either
        {"notifications": [body(user)]},
    ):
        r = await api.post("/v1/notifications", json=changed, headers=headers)
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "idempotency_key_reused"
        assert r.json()["field"] == "Idempotency-Key"


async def test_event_id_in_the_body_is_400(
    api: httpx.AsyncClient, billing: NewClient, user: str
) -> None:
    r = await api.post("/v1/notifications", json=body(user, event_id="x"), headers=auth(billing))
    assert (r.status_code, r.json()["field"]) == (400, "event_id")
    batch = {"notifications": [body(user), body(user, event_id="y")]}
    r = await api.post("/v1/notifications", json=batch, headers=auth(billing))
    assert (r.status_code, r.json()["field"]) == (400, "notifications[1].event_id")


async def test_a_client_sees_and_cancels_only_its_own_notifications(
    api: httpx.AsyncClient, billing: NewClient, marketing: NewClient, user: str, intake: Intake
) -> None:
    assert intake.held is not None
    due = datetime.now(UTC) + timedelta(hours=1)
    r = await api.post(
        "/v1/notifications", json=body(user, send_at=due.isoformat()), headers=auth(billing)
    )
    event_id = r.json()["event_id"]
    # What the processor does with a future send_at; not waited for here.
    await intake.held.hold(
        event_id=event_id,
        user_id=user,
        payload=b"x",
        due_at_ms=int(due.timestamp() * 1000),
        reason="scheduled",
    )
    for call in (api.get, api.delete):
        r = await call(f"/v1/notifications/{event_id}", headers=auth(marketing))
        assert (r.status_code, r.json()["field"]) == (404, "event_id"), r.text
    assert await intake.held.state(event_id) == "held"
    r = await api.get(f"/v1/notifications/{event_id}", headers=auth(billing))
    assert (r.status_code, r.json()["scheduled"]) == (200, "held")
    r = await api.delete(f"/v1/notifications/{event_id}", headers=auth(billing))
    assert r.status_code == 200, r.text


async def test_contacts_need_the_contacts_scopes(
    api: httpx.AsyncClient, marketing: NewClient, user: str
) -> None:
    h = auth(marketing)
    r = await api.get(f"/v1/users/{user}", headers=h)
    assert (r.status_code, r.json()["error"]) == (403, "forbidden"), r.text
    assert "contacts:read" in r.json()["message"]
    for method, path, payload in [
        ("PUT", f"/v1/users/{user}", {"email": "evil@example.com"}),
        ("DELETE", f"/v1/users/{user}/email", None),
        ("POST", f"/v1/users/{user}/devices", {"platform": "ios", "token": APNS, "app_id": "a"}),
        ("DELETE", f"/v1/users/{user}/devices/d-1", None),
        ("PUT", f"/v1/users/{user}/preferences", {"preferences": []}),
        ("DELETE", f"/v1/users/{user}", None),
    ]:
        r = await api.request(method, path, json=payload, headers=h)
        assert r.status_code == 403, f"{method} {path}: {r.text}"
        assert "contacts:write" in r.json()["message"]


async def test_racing_bodies_under_one_key_accept_exactly_one(
    api: httpx.AsyncClient, billing: NewClient, user: str
) -> None:
    headers = {**auth(billing), "Idempotency-Key": f"race-{uuid.uuid4()}"}
    texts = [f"Your code is {n}" for n in range(4)]
    answers = await asyncio.gather(
        *(
            api.post(
                "/v1/notifications", json=body(user, content={"sms": {"body": t}}), headers=headers
            )
            for t in texts
        )
    )
    assert sorted(r.status_code for r in answers) == [202, 409, 409, 409]


async def test_contacts_write_does_not_grant_read(
    api: httpx.AsyncClient, session: Session, user: str
) -> None:
    signup = ClientStore(session).create("signup-" + uid(), scopes={"contacts:write"})
    r = await api.put(f"/v1/users/{user}", json={"locale": "en"}, headers=auth(signup))
    assert r.status_code == 200, r.text
    r = await api.get(f"/v1/users/{user}", headers=auth(signup))
    assert r.status_code == 403 and "contacts:read" in r.json()["message"]
