"""The decision chain with in-memory stand-ins for Kafka and Cassandra: dedup states,
replays, releases, redelivered records, holds and the order of outputs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from processors.decisions import Device
from processors.enrichment import TemplateRow, UserView
from processors.pipeline import DEFERRED, DONE, Processor, Source
from processors.settings import ProcessorSettings, RateCap
from schemas import codec, ids
from schemas.events import now_ms

IOS_TOKEN = "ab" * 32


class FakeProducer:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Any = ()
    ) -> asyncio.Future[None]:
        self.records.append((topic, key, value, list(headers)))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def send_and_wait(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Any = ()
    ) -> None:
        await (await self.send(topic, value, key=key, headers=headers))

    def statuses(self) -> list[tuple[str, str | None, str | None]]:
        out = []
        for topic, _k, v, _h in self.records:
            if topic == "notifications.status":
                ev = codec.decode(v, codec.STATUS)
                out.append((ev["outcome"], ev["reason"], ev["channel"]))
        return out

    def deliveries(self) -> list[dict[str, Any]]:
        return [
            codec.decode(v, codec.DELIVERY)
            for topic, _k, v, _h in self.records
            if topic.startswith("notifications.")
            and topic.split(".")[1] in ("push", "sms", "email")
        ]


class FakeEnricher:
    def __init__(
        self, users: dict[str, UserView], templates: dict[str, tuple[TemplateRow, ...]]
    ) -> None:
        self.users = users
        self.templates = templates
        self.hit_rate = 0.0

    async def user(self, user_id: str) -> UserView | None:
        return self.users.get(user_id)

    async def template(self, template_id: str) -> tuple[TemplateRow, ...]:
        return self.templates.get(template_id, ())


class FakeDedup:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str]] = {}

    async def state(self, event_id: str) -> tuple[str, str | None] | None:
        return self.rows.get(event_id)

    async def mark(self, event_id: str, _nid: str, state: str, source: str) -> None:
        self.rows[event_id] = (state, source)


class FakeScheduler:
    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.canceled: set[str] = set()

    async def hold(
        self, *, event_id: str, user_id: str, payload: bytes, due_at_ms: int, reason: str
    ) -> bool:
        if event_id in self.canceled:
            return False
        self.held[event_id] = due_at_ms
        return True


def user(uid: str = "u1", **kw: Any) -> UserView:
    base: dict[str, Any] = dict(
        user_id=uid,
        email="a@example.com",
        phone="+14155550123",
        locale="ko-KR",
        timezone="UTC",
        quiet_start=None,
        quiet_end=None,
        unsubscribed_all=False,
        devices=(Device("d1", "ios", IOS_TOKEN), Device("d2", "ios", IOS_TOKEN)),
    )
    base.update(kw)
    return UserView(**base)


@pytest.fixture
def world() -> tuple[Processor, FakeProducer, FakeDedup, FakeScheduler, dict[str, UserView]]:
    producer, dedup, scheduler = FakeProducer(), FakeDedup(), FakeScheduler()
    users = {"u1": user()}
    templates = {
        "t": (
            TemplateRow("en", "sms", None, None, "Hi {{ name }}", None),
            TemplateRow("ko", "sms", None, None, "{{ name }}님", None),
        )
    }
    settings = ProcessorSettings(rate_caps={"marketing": RateCap(limit=1, window_s=60)})
    proc = Processor(
        settings,
        producer=producer,  # type: ignore[arg-type]
        enricher=FakeEnricher(users, templates),  # type: ignore[arg-type]
        dedup=dedup,  # type: ignore[arg-type]
        scheduler=scheduler,  # type: ignore[arg-type]
    )
    return proc, producer, dedup, scheduler, users


def request(event_id: str = "e1", **kw: Any) -> bytes:
    req = {
        "event_id": event_id,
        "notification_id": ids.notification_id(event_id),
        "source": "unit",
        "user_id": "u1",
        "category": "transactional",
        "content": {"sms": {"body": "hello"}, "push": {"title": "t", "body": "b"}},
        "created_at": now_ms(),
        **kw,
    }
    return codec.encode(codec.REQUEST, req)


def src(offset: int = 0, **headers: bytes) -> Source:
    return Source(
        "notifications.requested",
        0,
        offset,
        b"u1",
        {k.replace("_", "."): v for k, v in headers.items()},
    )


async def test_fan_out_then_duplicate(world: Any) -> None:
    proc, producer, dedup, _s, _u = world
    await proc.handle(request(channels=["push", "sms"]), src(0), {})
    assert sorted(d["channel"] for d in producer.deliveries()) == ["push.ios", "push.ios", "sms"]
    assert producer.statuses() == [("accepted", None, None)]
    assert dedup.rows["e1"] == (DONE, "notifications.requested:0:0")
    await proc.handle(request(channels=["push", "sms"]), src(5), {})
    assert producer.statuses()[-1] == ("dropped", "duplicate", None)
    assert len(producer.deliveries()) == 3


async def test_redelivered_record_is_silent(world: Any) -> None:
    proc, producer, _d, _s, _u = world
    await proc.handle(request(channels=["sms"]), src(7), {})
    before = len(producer.records)
    await proc.handle(request(channels=["sms"]), src(7), {})
    assert len(producer.records) == before


async def test_replay_skips_dedup_with_the_same_ids(world: Any) -> None:
    proc, producer, _d, _s, _u = world
    await proc.handle(request(channels=["sms"]), src(0), {})
    await proc.handle(request(channels=["sms"]), src(9, herald_replay=b"1"), {})
    ids_seen = [d["delivery_id"] for d in producer.deliveries()]
    assert len(ids_seen) == 2 and ids_seen[0] == ids_seen[1]


async def test_scheduled_then_released_once(world: Any) -> None:
    proc, producer, dedup, scheduler, _u = world
    raw = request(channels=["sms"], send_at=now_ms() + 60_000)
    await proc.handle(raw, src(0), {})
    assert producer.statuses() == [("deferred", "scheduled", None)]
    assert "e1" in scheduler.held and dedup.rows["e1"][0] == DEFERRED
    await proc.handle(raw, src(1), {})  # the original published again: a duplicate
    assert producer.statuses()[-1] == ("dropped", "duplicate", None)
    await proc.handle(raw, src(2, herald_released=b"1"), {})
    assert producer.statuses()[-1] == ("accepted", None, None)
    await proc.handle(raw, src(3, herald_released=b"1"), {})  # released twice: ignored
    assert len(producer.deliveries()) == 1
    assert producer.statuses().count(("accepted", None, None)) == 1


async def test_hold_after_cancel_drops(world: Any) -> None:
    proc, producer, _d, scheduler, _u = world
    scheduler.canceled.add("e1")
    await proc.handle(request(send_at=now_ms() + 60_000), src(0), {})
    assert producer.statuses() == [("dropped", "canceled", None)]


async def test_rate_table_counts_notifications(world: Any) -> None:
    proc, producer, _d, _s, _u = world
    table: dict[str, Any] = {}
    await proc.handle(request("m1", category="marketing", channels=["sms"]), src(0), table)
    await proc.handle(request("m2", category="marketing", channels=["sms"]), src(1), table)
    assert producer.statuses()[-1] == ("dropped", "rate_limited", "sms")
    assert list(table) == ["u1|marketing|sms"]


async def test_template_in_user_language_and_missing_param(world: Any) -> None:
    proc, producer, dedup, _s, _u = world
    await proc.handle(
        request(template_id="t", params={"name": "Kim"}, channels=["sms"]), src(0), {}
    )
    [d] = producer.deliveries()
    assert (d["body"], d["locale"]) == ("Kim님", "ko")
    await proc.handle(request("e2", template_id="t", params={}, channels=["sms"]), src(1), {})
    dlq = [h for t, _k, _v, h in producer.records if t == "notifications.requested.dlq"]
    assert dict(dlq[0])["herald.reason"] == b"missing_param:name"
    assert producer.statuses()[-1] == ("dropped", "missing_param:name", None)
    assert dedup.rows["e2"][0] == DONE


async def test_quiet_hours_hold_until_window_end(world: Any) -> None:
    proc, producer, _d, scheduler, users = world
    now = datetime.now(UTC)
    minute = now.hour * 60 + now.minute
    users["u1"] = user(quiet_start=(minute - 60) % 1440, quiet_end=(minute + 60) % 1440)
    await proc.handle(request(channels=["sms"]), src(0), {})
    assert producer.statuses() == [("deferred", "quiet_hours", None)]
    assert 3_500_000 < scheduler.held["e1"] - now_ms() <= 3_600_000
    await proc.handle(request("e2", channels=["sms"], priority="high"), src(1), {})
    assert producer.statuses()[-1] == ("accepted", None, None)


async def test_undecodable_goes_to_dlq(world: Any) -> None:
    proc, producer, _d, _s, _u = world
    await proc.handle(b"junk", src(3, trace=b"x"), {})
    [(topic, key, value, headers)] = producer.records
    h = dict(headers)
    assert (topic, key, value) == ("notifications.requested.dlq", b"u1", b"junk")
    assert h["herald.reason"] == b"bad_magic"
    assert h["herald.original_offset"] == b"3"
    assert h["trace"] == b"x"
