"""The decision chain with in-memory stand-ins for Kafka and Cassandra: dedup states,
replays, releases, redelivered records, holds and the order of outputs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from processors import enrichment
from processors.decisions import Device
from processors.enrichment import TemplateRow, UserView
from processors.pipeline import DEFERRED, DONE, Incoming, Processor, Source
from processors.settings import ProcessorSettings, RateCap
from schemas import codec, ids
from schemas.events import now_ms

IOS_TOKEN = "ab" * 32


class FakeBatch:
    """Acks everything at once, like a broker that is up; refuses what is over `limit`."""

    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer
        self.failed: list[tuple[Any, KafkaError]] = []

    def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Any = (), tag: Any = None
    ) -> None:
        if len(value) > self.producer.limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.producer.records.append((topic, key, value, list(headers)))

    async def wait(self) -> None:
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
        self.limit = 1_000_000

    def batch(self) -> FakeBatch:
        return FakeBatch(self)

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
        self.known_users = users
        self.known_templates = templates
        self.hit_rate = 0.0

    async def users(self, user_ids: set[str]) -> dict[str, UserView | None]:
        return {uid: self.known_users.get(uid) for uid in user_ids}

    async def templates(self, template_ids: set[str]) -> dict[str, tuple[TemplateRow, ...]]:
        return {tid: self.known_templates.get(tid, ()) for tid in template_ids}


class FakeDedup:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str]] = {}

        self.reads = 0

    async def states(self, event_ids: set[str]) -> dict[str, tuple[str, str]]:
        self.reads += 1
        return {e: self.rows[e] for e in event_ids if e in self.rows}

    async def mark(self, rows: list[tuple[str, str, str, str]]) -> None:
        for event_id, _nid, state, source in rows:
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
        stored_email="a@example.com",
        stored_phone="+14155550123",
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


async def handle(proc: Processor, raw: bytes, source: Source, rates: dict[str, Any]) -> None:
    await proc.handle_batch([Incoming(raw, source)], rates)


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
    await handle(proc, request(channels=["push", "sms"]), src(0), {})
    assert sorted(d["channel"] for d in producer.deliveries()) == ["push.ios", "push.ios", "sms"]
    assert producer.statuses() == [("accepted", None, None)]
    assert dedup.rows["e1"] == (DONE, "notifications.requested:0:0")
    await handle(proc, request(channels=["push", "sms"]), src(5), {})
    assert producer.statuses()[-1] == ("dropped", "duplicate", None)
    assert len(producer.deliveries()) == 3


async def test_redelivered_record_is_silent(world: Any) -> None:
    proc, producer, _d, _s, _u = world
    await handle(proc, request(channels=["sms"]), src(7), {})
    before = len(producer.records)
    await handle(proc, request(channels=["sms"]), src(7), {})
    assert len(producer.records) == before


async def test_replay_skips_dedup_with_the_same_ids(world: Any) -> None:
    proc, producer, _d, _s, _u = world
    await handle(proc, request(channels=["sms"]), src(0), {})
    await handle(proc, request(channels=["sms"]), src(9, herald_replay=b"1"), {})
    ids_seen = [d["delivery_id"] for d in producer.deliveries()]
    assert len(ids_seen) == 2 and ids_seen[0] == ids_seen[1]


async def test_scheduled_then_released_once(world: Any) -> None:
    proc, producer, dedup, scheduler, _u = world
    raw = request(channels=["sms"], send_at=now_ms() + 60_000)
    await handle(proc, raw, src(0), {})
    assert producer.statuses() == [("deferred", "scheduled", None)]
    assert "e1" in scheduler.held and dedup.rows["e1"][0] == DEFERRED
    await handle(proc, raw, src(1), {})  # the original published again: a duplicate
    assert producer.statuses()[-1] == ("dropped", "duplicate", None)
    await handle(proc, raw, src(2, herald_released=b"1"), {})
    assert producer.statuses()[-1] == ("accepted", None, None)
    await handle(proc, raw, src(3, herald_released=b"1"), {})  # released twice: ignored
    assert len(producer.deliveries()) == 1
    assert producer.statuses().count(("accepted", None, None)) == 1


async def test_hold_after_cancel_drops(world: Any) -> None:
    proc, producer, _d, scheduler, _u = world
    scheduler.canceled.add("e1")
    await handle(proc, request(send_at=now_ms() + 60_000), src(0), {})
    assert producer.statuses() == [("dropped", "canceled", None)]


async def test_rate_table_counts_notifications(world: Any) -> None:
    proc, producer, _d, _s, _u = world
    table: dict[str, Any] = {}
    await handle(proc, request("m1", category="marketing", channels=["sms"]), src(0), table)
    await handle(proc, request("m2", category="marketing", channels=["sms"]), src(1), table)
    assert producer.statuses()[-1] == ("dropped", "rate_limited", "sms")
    assert list(table) == ["u1|marketing|sms"]


async def test_template_in_user_language_and_missing_param(world: Any) -> None:
    proc, producer, dedup, _s, _u = world
    await handle(
        proc, request(template_id="t", params={"name": "Kim"}, channels=["sms"]), src(0), {}
    )
    [d] = producer.deliveries()
    assert (d["body"], d["locale"]) == ("Kim님", "ko")
    await handle(proc, request("e2", template_id="t", params={}, channels=["sms"]), src(1), {})
    dlq = [h for t, _k, _v, h in producer.records if t == "notifications.requested.dlq"]
    assert dict(dlq[0])["herald.reason"] == b"missing_param:name"
    assert producer.statuses()[-1] == ("dropped", "missing_param:name", None)
    assert dedup.rows["e2"][0] == DONE


async def test_quiet_hours_hold_until_window_end(world: Any) -> None:
    proc, producer, _d, scheduler, users = world
    now = datetime.now(UTC)
    minute = now.hour * 60 + now.minute
    users["u1"] = user(quiet_start=(minute - 60) % 1440, quiet_end=(minute + 60) % 1440)
    await handle(proc, request(channels=["sms"]), src(0), {})
    assert producer.statuses() == [("deferred", "quiet_hours", None)]
    assert 3_500_000 < scheduler.held["e1"] - now_ms() <= 3_600_000
    await handle(proc, request("e2", channels=["sms"], priority="high"), src(1), {})
    assert producer.statuses()[-1] == ("accepted", None, None)


async def test_undecodable_goes_to_dlq(world: Any) -> None:
    proc, producer, _d, _s, _u = world
    await handle(proc, b"junk", src(3, trace=b"x"), {})
    [(topic, key, value, headers)] = producer.records
    h = dict(headers)
    assert (topic, key, value) == ("notifications.requested.dlq", b"u1", b"junk")
    assert h["herald.reason"] == b"bad_magic"
    assert h["herald.original_offset"] == b"3"
    assert h["trace"] == b"x"


async def test_a_batch_reads_dedup_once_and_sees_its_own_duplicates(world: Any) -> None:
    proc, producer, dedup, _s, _u = world
    raw = request(channels=["sms"])
    await proc.handle_batch([Incoming(raw, src(0)), Incoming(raw, src(1))], {})
    assert dedup.reads == 1
    assert producer.statuses() == [("accepted", None, None), ("dropped", "duplicate", None)]
    assert len(producer.deliveries()) == 1


async def test_too_large_fan_out_is_dead_lettered_and_the_user_moves_on(world: Any) -> None:
    proc, producer, dedup, _s, _u = world
    proc.settings.max_record_bytes = 2_000
    big = request("big", channels=["sms"], content={"sms": {"body": "x" * 3_000}})
    await proc.handle_batch(
        [Incoming(big, src(0)), Incoming(request("next", channels=["sms"]), src(1))], {}
    )
    assert producer.statuses() == [("dropped", "too_large", None), ("accepted", None, None)]
    [(_topic, _k, value, headers)] = [r for r in producer.records if r[0].endswith(".dlq")]
    assert dict(headers)["herald.reason"] == b"too_large"
    assert value == big  # under the limit itself: copied whole
    assert dedup.rows["big"][0] == DONE


async def test_a_record_librdkafka_refuses_is_dead_lettered_not_retried(world: Any) -> None:
    proc, producer, _d, _s, _u = world
    producer.limit = 80_000  # the broker's limit is below herald's own check
    big = request("big", channels=["sms"], content={"sms": {"body": "x" * 100_000}})
    await proc.handle_batch([Incoming(big, src(0))], {})
    assert producer.statuses() == [("dropped", "too_large", None)]
    [(_t, _k, value, headers)] = [r for r in producer.records if r[0].endswith(".dlq")]
    assert dict(headers)["herald.truncated_from"] == str(len(big)).encode()
    assert len(value) < len(big)


@pytest.mark.parametrize("send_at", [-1, -62135596800000])
async def test_send_at_before_the_epoch_is_refused(world: Any, send_at: int) -> None:
    proc, producer, _d, scheduler, _u = world
    await handle(proc, request(channels=["sms"], send_at=send_at), src(0), {})
    assert producer.statuses() == [("dropped", "invalid_send_at", None)]
    assert producer.deliveries() == [] and scheduler.held == {}


async def test_a_poison_request_is_dead_lettered_and_the_batch_goes_on(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, producer, _d, _s, users = world
    users["poison"] = user("poison")
    real = proc._channels

    def channels(req: dict[str, Any], u: UserView) -> Any:
        if u.user_id == "poison":
            raise ZeroDivisionError("a bug")
        return real(req, u)

    monkeypatch.setattr(proc, "_channels", channels)
    await proc.handle_batch(
        [
            Incoming(request("p", user_id="poison", channels=["sms"]), src(0)),
            Incoming(request("ok", channels=["sms"]), src(1)),
        ],
        {},
    )
    dlq = [dict(h) for t, _k, _v, h in producer.records if t.endswith(".dlq")]
    assert [h["herald.reason"] for h in dlq] == [b"processing_error:ZeroDivisionError"]
    assert producer.statuses() == [("accepted", None, None)]


async def test_contacts_are_validated_only_for_the_channels_a_request_uses(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, producer, _d, _s, users = world
    checked: list[str] = []
    real_email, real_phone = enrichment.validate_email, enrichment.normalize_phone

    def email(value: str) -> str:
        checked.append("email")
        return real_email(value)

    def phone(value: str) -> str:
        checked.append("phone")
        return real_phone(value)

    monkeypatch.setattr(enrichment, "validate_email", email)
    monkeypatch.setattr(enrichment, "normalize_phone", phone)
    users["u1"] = user()
    await handle(proc, request("e-push", channels=["push"]), src(0), {})
    assert checked == []
    await handle(proc, request("e-sms", channels=["sms"]), src(1), {})
    await handle(proc, request("e-sms-2", channels=["sms"]), src(2), {})
    assert checked == ["phone"]  # once per cached view
    assert [d["address"] for d in producer.deliveries() if d["channel"] == "sms"] == [
        "+14155550123",
        "+14155550123",
    ]


async def test_a_malformed_stored_contact_drops_with_invalid_contact(world: Any) -> None:
    proc, producer, _d, _s, users = world
    users["u1"] = user(stored_phone="not a number")
    await handle(proc, request(channels=["sms"]), src(0), {})
    assert producer.deliveries() == []
    assert producer.statuses() == [("dropped", "invalid_contact", "sms")]


async def test_a_batch_decided_while_the_previous_one_completes_sees_its_ids(
    world: Any,
) -> None:
    # Pipelined batches: the second is decided before the first has recorded its ids, so
    # its copy of the event id must still count as a duplicate.
    proc, producer, dedup, _s, _u = world
    raw = request(channels=["sms"])
    first = await proc.prepare_batch([Incoming(raw, src(0))], {})
    second = await proc.prepare_batch([Incoming(raw, src(1))], {})
    assert dedup.rows == {}  # nothing recorded yet
    assert producer.statuses() == [("accepted", None, None), ("dropped", "duplicate", None)]
    await proc.complete_batch(first)
    await proc.complete_batch(second)
    assert dedup.rows["e1"] == (DONE, "notifications.requested:0:0")
    assert proc.pending_marks == {}
    assert len(producer.deliveries()) == 1


async def test_a_batch_that_failed_to_complete_is_decided_again_in_full(world: Any) -> None:
    # Its ids must not count as processed for its own retry: that would read as "this very
    # record, already done" and skip the outputs that never became durable.
    proc, producer, dedup, _s, _u = world
    raw = request(channels=["sms"])

    async def outage(_rows: Any) -> None:
        raise OSError("cassandra down")

    real_mark, dedup.mark = dedup.mark, outage
    with pytest.raises(OSError):
        await proc.handle_batch([Incoming(raw, src(0))], {})
    assert proc.pending_marks == {}
    dedup.mark = real_mark
    await proc.handle_batch([Incoming(raw, src(0))], {})
    assert len(producer.deliveries()) == 2  # the same delivery, produced again
    assert producer.statuses() == [("accepted", None, None)] * 2
    assert dedup.rows["e1"] == (DONE, "notifications.requested:0:0")
