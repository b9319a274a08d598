"""The in-app feed API on the real Kafka and Cassandra: ordering and cursor pagination,
filters, read/seen/archive with their status events, counts, the cap, user tokens (another
user's is refused), and the live stream of a real API process (SSE)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cassandra.cluster import Session
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from herald.services import Service, ServiceSpec, free_port, python_module, start
from infra import topics
from infra.inbox import InboxSettings, InboxStore, NewItem
from producers.api import Intake, create_app
from producers.clients import ClientStore, NewClient
from producers.settings import IntakeSettings
from schemas import codec
from tests.conftest import KAFKA
from tests.integration.producers.intakekit import uid

pytestmark = pytest.mark.integration

# This module's own status topic: the read/seen events it checks are its own.
PREFIX = f"test.inbox.{uuid.uuid4().hex[:8]}."
STATUS = PREFIX + topics.STATUS
CHANGES = PREFIX + topics.USER_CHANGES  # written when the test creates its users


@pytest.fixture(scope="module", autouse=True)
def status_topic() -> Iterator[None]:
    admin = AdminClient({"bootstrap.servers": KAFKA})
    for fut in admin.create_topics([NewTopic(STATUS, 1, 1), NewTopic(CHANGES, 1, 1)]).values():
        fut.result(timeout=30)
    yield
    for fut in admin.delete_topics([STATUS, CHANGES]).values():
        fut.result(timeout=30)


@pytest.fixture(scope="module")
async def intake() -> AsyncIterator[Intake]:
    it = Intake(IntakeSettings(topic_prefix=PREFIX))
    await it.start()
    yield it
    await it.close()


@pytest.fixture
async def api(intake: Intake) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(intake.settings, intake))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
        yield client


def new_client(session: Session, *scopes: str) -> NewClient:
    return ClientStore(session).create(
        f"app-{uuid.uuid4().hex[:8]}", rate_per_s=1000, burst=1000, scopes=set(scopes)
    )


@pytest.fixture(scope="module")
def app(session: Session) -> NewClient:
    return new_client(session, "inbox:token")


def auth(c: NewClient) -> dict[str, str]:
    return {"X-Herald-App-Key": c.client.app_key, "X-Herald-App-Secret": c.secret}


async def new_user(intake: Intake) -> str:
    user_id = uid()
    await intake.directory.set_user(user_id, locale="en")
    return user_id


async def token_for(api: httpx.AsyncClient, app: NewClient, user_id: str) -> dict[str, str]:
    r = await api.post(f"/v1/users/{user_id}/feed/token", headers=auth(app))
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def fill(
    store: InboxStore, user_id: str, n: int, *, category: str = "social", same_ms: int = 0
) -> list[str]:
    """n items one second apart (the last `same_ms` share one timestamp); their ids,
    oldest first."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=n)
    items = []
    for i in range(n):
        at = base + timedelta(seconds=min(i, n - same_ms) if same_ms else i)
        items.append(
            NewItem(
                user_id=user_id,
                item_id=f"d-{i:02d}-{uuid.uuid4().hex[:6]}",
                created_at=at,
                notification_id=str(uuid.uuid4()),
                category=category,
                title=f"title {i}",
                body=f"body {i}",
                data={},
            )
        )
    await store.write(items)
    return [it.item_id for it in items]


def statuses(expected: int) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": KAFKA,
            "group.id": f"t-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([STATUS])
    out: list[dict[str, Any]] = []
    try:
        for _ in range(60):
            for msg in consumer.consume(100, timeout=0.5):
                if msg.error() is None:
                    out.append(codec.decode(msg.value(), codec.STATUS))
            if len(out) >= expected:
                break
    finally:
        consumer.close()
    return out


async def test_feed_is_newest_first_and_the_cursor_walks_it_without_gaps(
    api: httpx.AsyncClient, intake: Intake, app: NewClient
) -> None:
    user_id = await new_user(intake)
    # Seven items, the last three in the same millisecond: ties are ordered by id.
    ids = await fill(intake.inbox, user_id, 7, same_ms=3)
    headers = await token_for(api, app, user_id)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        r = await api.get(f"/v1/users/{user_id}/feed", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [it["item_id"] for it in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    newest_tie = sorted(ids[4:])  # same timestamp: ascending id
    assert seen == newest_tie + ids[3::-1]
    assert pages == 3
    assert body["counts"] == {"total": 7, "unread": 7, "unseen": 7}
    bad = await api.get(f"/v1/users/{user_id}/feed?cursor=nope", headers=headers)
    assert (bad.status_code, bad.json()["field"]) == (400, "cursor")


async def test_read_seen_and_archive_change_the_feed_and_announce_read_and_seen(
    api: httpx.AsyncClient, intake: Intake, app: NewClient
) -> None:
    user_id = await new_user(intake)
    ids = await fill(intake.inbox, user_id, 3, category="social")
    ids += await fill(intake.inbox, user_id, 1, category="marketing")
    headers = await token_for(api, app, user_id)
    base = f"/v1/users/{user_id}/feed"

    r = await api.post(f"{base}/seen", json={"all": True}, headers=headers)
    assert r.status_code == 200 and r.json()["counts"]["unseen"] == 0
    r = await api.post(f"{base}/read", json={"item_ids": [ids[0], "not-mine"]}, headers=headers)
    assert r.json() == {"updated": [ids[0]], "counts": {"total": 4, "unread": 3, "unseen": 0}}
    await api.post(f"{base}/read", json={"item_ids": [ids[0]]}, headers=headers)  # again

    unread = (await api.get(base, params={"unread": "true"}, headers=headers)).json()["items"]
    assert ids[0] not in {it["item_id"] for it in unread} and len(unread) == 3
    social = (await api.get(base, params={"category": "marketing"}, headers=headers)).json()
    assert [it["item_id"] for it in social["items"]] == [ids[3]]

    r = await api.post(f"{base}/archive", json={"item_ids": [ids[1]]}, headers=headers)
    assert r.json()["counts"] == {"total": 3, "unread": 2, "unseen": 0}
    feed = (await api.get(base, headers=headers)).json()["items"]
    assert ids[1] not in {it["item_id"] for it in feed}
    archived = (await api.get(base, params={"archived": "true"}, headers=headers)).json()
    assert [it["item_id"] for it in archived["items"]] == [ids[1]]
    counts = await api.get(f"{base}/counts", headers=headers)
    assert counts.json() == {"total": 3, "unread": 2, "unseen": 0}

    events = await asyncio.to_thread(statuses, 5)
    mine = [(e["outcome"], e["delivery_id"]) for e in events if e["user_id"] == user_id]
    assert sorted(mine) == sorted([("read", ids[0])] + [("seen", i) for i in ids])
    assert {e["channel"] for e in events if e["user_id"] == user_id} == {"inapp"}


async def test_tokens_open_only_their_own_users_feed(
    api: httpx.AsyncClient, intake: Intake, app: NewClient, session: Session
) -> None:
    alice, bob = await new_user(intake), await new_user(intake)
    await fill(intake.inbox, alice, 1)
    alices = await token_for(api, app, alice)
    r = await api.get(f"/v1/users/{bob}/feed", headers=alices)
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    r = await api.post(f"/v1/users/{bob}/feed/read", json={"all": True}, headers=alices)
    assert r.status_code == 403
    r = await api.get(f"/v1/users/{bob}/feed/stream", params={"token": alices["Authorization"][7:]})
    assert r.status_code == 403
    r = await api.get(f"/v1/users/{alice}/feed", headers={"Authorization": "Bearer x.y"})
    assert r.status_code == 401

    # Minting needs the scope and a known user; a server reads a feed only with inbox:read.
    plain = new_client(session)
    r = await api.post(f"/v1/users/{alice}/feed/token", headers=auth(plain))
    assert r.status_code == 403
    r = await api.post(f"/v1/users/{uid()}/feed/token", headers=auth(app))
    assert r.status_code == 404
    assert (await api.get(f"/v1/users/{alice}/feed", headers=auth(plain))).status_code == 403
    reader = new_client(session, "inbox:read")
    r = await api.get(f"/v1/users/{alice}/feed", headers=auth(reader))
    assert r.status_code == 200 and len(r.json()["items"]) == 1
    r = await api.post(f"/v1/users/{alice}/feed/read", json={"all": True}, headers=auth(reader))
    assert r.status_code == 403  # reading is not writing


async def test_a_feed_keeps_only_its_newest_items(intake: Intake, session: Session) -> None:
    user_id = await new_user(intake)
    store = InboxStore(session, InboxSettings(max_items=3))
    ids = await fill(store, user_id, 5)
    assert [it.item_id for it in await store.recent(user_id)] == ids[:1:-1]
    left = session.execute("SELECT item_id FROM inbox_items WHERE user_id = %s", (user_id,))
    assert sorted(r["item_id"] for r in left) == sorted(ids[2:])  # older ones deleted


# -- the live stream, from a real API process ------------------------------------------


@pytest.fixture(scope="module")
def api_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {
        "HERALD_API__PORT": str(port),
        "HERALD_TOPIC_PREFIX": PREFIX,
        "HERALD_INBOX__STREAM_POLL_S": "0.2",
    }
    svc: Service = start(
        ServiceSpec("send-api-inbox", python_module("producers", "api"), ready_port=port, env=env),
        Path(tmp_path_factory.mktemp("send-api-inbox")),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        svc.stop()


async def events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    name, data = "", ""
    async for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and name:
            yield name, json.loads(data)
            name, data = "", ""


async def test_a_new_item_arrives_on_the_stream(
    api_process: str, intake: Intake, app: NewClient
) -> None:
    user_id = await new_user(intake)
    await fill(intake.inbox, user_id, 2)  # already there: not streamed
    async with httpx.AsyncClient(base_url=api_process, timeout=30) as client:
        headers = await token_for(client, app, user_id)
        token = headers["Authorization"][7:]
        async with client.stream(
            "GET", f"/v1/users/{user_id}/feed/stream", params={"token": token}
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            stream = events(r.aiter_lines())
            assert await anext(stream) == ("counts", {"total": 2, "unread": 2, "unseen": 2})
            [new] = await fill(intake.inbox, user_id, 1)
            async with asyncio.timeout(20):
                name, item = await anext(stream)
                assert (name, item["item_id"], item["read"]) == ("item", new, False)
                assert await anext(stream) == ("counts", {"total": 3, "unread": 3, "unseen": 3})
        other = await new_user(intake)
        r = await client.get(f"/v1/users/{other}/feed/stream", params={"token": token})
        assert r.status_code == 403
