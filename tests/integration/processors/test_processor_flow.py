"""The real processor (`python -m processors`) against the real Kafka and Cassandra:
every decision with its status reason, rendering per locale, fan-out per device,
scheduling, dedup across a restart and dead letters."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from infra.cassandra import connect
from infra.scheduling import ScheduleStore
from schemas import codec, ids
from schemas.events import now_ms
from tests.conftest import CASSANDRA_SETTINGS
from tests.integration.processors.prockit import Harness
from tests.support import wait_for

pytestmark = pytest.mark.integration

ACCEPTED = ("accepted", None, None)


def test_fan_out_one_delivery_per_device_and_channel(proc: Harness) -> None:
    uid = proc.user(devices=(("iphone-1", "ios"), ("iphone-2", "ios"), ("pixel", "android")))
    nid = proc.publish(proc.request(uid))
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(nid), what="accepted")
    got = wait_for(lambda: len(proc.watcher.delivered(nid)) >= 5 and proc.watcher.delivered(nid))
    by_topic = sorted((topic, d["device_id"]) for topic, d in got)
    assert by_topic == [
        ("notifications.email", None),
        ("notifications.push.android", "pixel"),
        ("notifications.push.ios", "iphone-1"),
        ("notifications.push.ios", "iphone-2"),
        ("notifications.sms", None),
    ]
    expected = {
        ids.delivery_id(nid, "push.ios", "iphone-1"),
        ids.delivery_id(nid, "push.ios", "iphone-2"),
        ids.delivery_id(nid, "push.android", "pixel"),
        ids.delivery_id(nid, "sms", "sms"),
        ids.delivery_id(nid, "email", "email"),
    }
    assert {d["delivery_id"] for _t, d in got} == expected
    email = next(d for t, d in got if t == "notifications.email")
    assert "/o/" in email["html"]  # open pixel from the tracking rewrite


def test_high_priority_takes_the_priority_lane(proc: Harness) -> None:
    uid = proc.user(email=None, phone="+14155550100")
    nid = proc.publish(proc.request(uid, priority="high", channels=["sms"]))
    got = wait_for(lambda: proc.watcher.delivered(nid), what="delivery")
    assert [t for t, _d in got] == ["notifications.sms.priority"]


@pytest.mark.parametrize(
    ("user_kwargs", "req_kwargs", "expected"),
    [
        (
            {"opt_outs": (("push", "marketing"),), "devices": (("d", "ios"),)},
            {"category": "marketing", "channels": ["push", "sms"]},
            [("dropped", "opted_out", "push")],
        ),
        (
            {"opt_outs": (("sms", "*"),)},
            {"category": "social", "channels": ["sms", "email"]},
            [("dropped", "opted_out", "sms")],
        ),
        (
            {"unsubscribed_all": True},
            {"category": "social", "channels": ["sms", "email"]},
            [("dropped", "unsubscribed_all", "sms"), ("dropped", "unsubscribed_all", "email")],
        ),
        ({"phone": None}, {"channels": ["sms", "email"]}, [("dropped", "no_contact", "sms")]),
        ({}, {"channels": ["push", "email"]}, [("dropped", "no_device", "push")]),
    ],
    ids=["opted_out", "opted_out_wildcard", "unsubscribed_all", "no_contact", "no_device"],
)
def test_channel_drops_with_reason(
    proc: Harness, user_kwargs: dict, req_kwargs: dict, expected: list
) -> None:
    uid = proc.user(**user_kwargs)
    nid = proc.publish(proc.request(uid, **req_kwargs))
    wait_for(
        lambda: all(e in proc.watcher.outcomes(nid) for e in expected),
        what=f"{expected} in {proc.watcher.outcomes(nid)}",
    )
    dropped = {ch for _o, _r, ch in expected}
    wanted = {c for c in req_kwargs["channels"] if c not in dropped}
    if wanted:
        wait_for(lambda: ACCEPTED in proc.watcher.outcomes(nid), what="accepted")
        # the watcher reads the channel topics apart from the status topic: poll, not assert
        wait_for(
            lambda: {d["channel"] for _t, d in proc.watcher.delivered(nid)} == wanted,
            what=f"deliveries on {wanted}",
        )
    else:
        assert proc.watcher.delivered(nid) == []


def test_mandatory_category_ignores_opt_outs(proc: Harness) -> None:
    uid = proc.user(unsubscribed_all=True, opt_outs=(("sms", "*"), ("sms", "security")))
    nid = proc.publish(proc.request(uid, category="security", channels=["sms"]))
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(nid), what="accepted")
    wait_for(
        lambda: [d["channel"] for _t, d in proc.watcher.delivered(nid)] == ["sms"],
        what="one sms delivery",
    )


def test_unknown_user_and_expired(proc: Harness) -> None:
    unknown = proc.publish(proc.request(f"nobody-{uuid.uuid4().hex}"))
    uid = proc.user()
    late = proc.publish(proc.request(uid, expires_at=now_ms() - 1000))
    wait_for(lambda: ("dropped", "unknown_user", None) in proc.watcher.outcomes(unknown))
    wait_for(lambda: ("dropped", "expired", None) in proc.watcher.outcomes(late))
    assert proc.watcher.delivered(late) == []


def test_rate_limit_per_user_category_channel(proc: Harness) -> None:
    uid = proc.user()
    nids = [
        proc.publish(proc.request(uid, category="marketing", channels=["sms"])) for _ in range(3)
    ]
    wait_for(lambda: all(proc.watcher.outcomes(n) for n in nids), what="three decisions")
    assert ACCEPTED in proc.watcher.outcomes(nids[0])
    assert ACCEPTED in proc.watcher.outcomes(nids[1])
    assert proc.watcher.outcomes(nids[2]) == [("dropped", "rate_limited", "sms")]
    # The cap is per category: a transactional message still goes.
    other = proc.publish(proc.request(uid, category="transactional", channels=["sms"]))
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(other))


def test_quiet_hours_defer_normal_and_let_urgent_through(proc: Harness) -> None:
    now = datetime.now(UTC)
    minute = now.hour * 60 + now.minute
    quiet = ((minute - 60) % 1440, (minute + 60) % 1440)
    uid = proc.user(timezone="UTC", quiet=quiet)
    normal = proc.publish(proc.request(uid, channels=["sms"]))
    urgent = proc.publish(proc.request(uid, channels=["sms"], priority="high"))
    security = proc.publish(proc.request(uid, channels=["sms"], category="security"))
    wait_for(lambda: ("deferred", "quiet_hours", None) in proc.watcher.outcomes(normal))
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(urgent))
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(security))
    assert proc.watcher.delivered(normal) == []
    row = proc.session.execute(
        "SELECT state, due_at FROM scheduled_by_event WHERE event_id = %s",
        (_event_id(proc, normal),),
    ).one()
    assert row["state"] == "held"
    due = row["due_at"].replace(tzinfo=UTC)
    assert abs((due - now).total_seconds() - 3600) < 120  # end of the window


def _event_id(proc: Harness, nid: str) -> str:
    with proc.watcher.lock:
        return str(proc.watcher.statuses[nid][0]["event_id"])


def test_scheduled_request_is_released_when_due_and_cancel_wins(proc: Harness) -> None:
    uid = proc.user()
    due = now_ms() + 3000
    kept = proc.request(uid, channels=["sms"], send_at=due)
    canceled = proc.request(uid, channels=["email"], send_at=due)
    proc.publish(kept)
    proc.publish(canceled)
    for r in (kept, canceled):
        nid = r["notification_id"]
        wait_for(lambda nid=nid: ("deferred", "scheduled", None) in proc.watcher.outcomes(nid))
    session = connect(CASSANDRA_SETTINGS)
    try:
        store = ScheduleStore(session, scope=proc.topic)
        assert store.cancel(canceled["event_id"]) is True
        assert store.cancel(canceled["event_id"]) is False  # already canceled
        assert store.cancel(f"never-held-{uuid.uuid4().hex}") is False
    finally:
        session.cluster.shutdown()
    kept_nid = kept["notification_id"]
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(kept_nid), timeout=30, what="release")
    assert now_ms() >= due
    got = proc.watcher.delivered(kept_nid)
    assert [d["channel"] for _t, d in got] == ["sms"]
    assert proc.session.execute(
        "SELECT state FROM scheduled_by_event WHERE event_id = %s", (kept["event_id"],)
    ).one()["state"] in ("releasing", "released")
    # Released and done: the kept one is never released twice, the canceled one never.
    assert proc.watcher.outcomes(canceled["notification_id"]) == [("deferred", "scheduled", None)]


def test_release_is_idempotent(proc: Harness) -> None:
    """A request released twice (crash before `released` was written) fans out once."""
    uid = proc.user()
    req = proc.request(uid, channels=["sms"])
    released = [("herald.released", b"1")]
    nid = proc.publish(req, headers=released)
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(nid))
    proc.publish(req, headers=released)
    marker = proc.publish(proc.request(uid, channels=["sms"]))  # same partition, after it
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(marker))
    assert len(proc.watcher.delivered(nid)) == 1
    assert proc.watcher.outcomes(nid) == [ACCEPTED]


def test_rendering_per_locale_with_fallback(proc: Harness) -> None:
    tid = f"it.welcome.{uuid.uuid4().hex[:8]}"
    for locale, body in (("en", "Hello {{ name }}"), ("ko", "{{ name }}님 안녕하세요")):
        proc.session.execute(
            "INSERT INTO templates (template_id, locale, channel, title, body)"
            " VALUES (%s, %s, 'sms', null, %s)",
            (tid, locale, body),
        )
    proc.session.execute(
        "INSERT INTO templates (template_id, locale, channel, subject, body, html)"
        " VALUES (%s, 'en', 'email', 'Hi {{ name }}', 'text', %s)",
        (tid, "<p>{{ name }}</p>"),
    )
    korean = proc.user(locale="ko-KR")
    german = proc.user(locale="de")
    params = {"name": "<Kim>"}
    ko = proc.publish(proc.request(korean, template_id=tid, params=params, channels=["sms"]))
    override = proc.publish(
        proc.request(korean, template_id=tid, params=params, channels=["sms"], locale="en")
    )
    de = proc.publish(
        proc.request(german, template_id=tid, params=params, channels=["sms", "email"])
    )
    for nid in (ko, override, de):
        wait_for(lambda nid=nid: ACCEPTED in proc.watcher.outcomes(nid), what="accepted")
    wait_for(lambda: proc.watcher.delivered(ko), what="the delivery (read from its own topic)")
    [(_t, ko_d)] = proc.watcher.delivered(ko)
    assert (ko_d["body"], ko_d["locale"]) == ("<Kim>님 안녕하세요", "ko")
    [(_t, en_d)] = proc.watcher.delivered(override)
    assert (en_d["body"], en_d["locale"]) == ("Hello <Kim>", "en")
    de_d = {d["channel"]: d for _t, d in proc.watcher.delivered(de)}
    assert de_d["sms"]["body"] == "Hello <Kim>"
    assert de_d["email"]["subject"] == "Hi <Kim>"
    assert de_d["email"]["html"].startswith("<p>&lt;Kim&gt;</p>")  # escaped in HTML only


def test_missing_template_parameter_goes_to_dlq(proc: Harness) -> None:
    tid = f"it.code.{uuid.uuid4().hex[:8]}"
    proc.session.execute(
        "INSERT INTO templates (template_id, locale, channel, body) VALUES (%s, 'en', 'sms', %s)",
        (tid, "Your code is {{ code }}"),
    )
    uid = proc.user()
    nid = proc.publish(proc.request(uid, template_id=tid, params={}, channels=["sms"]))
    wait_for(lambda: ("dropped", "missing_param:code", None) in proc.watcher.outcomes(nid))
    [headers] = wait_for(lambda: proc.watcher.dead_letters(uid.encode()))
    assert headers["herald.reason"] == b"missing_param:code"
    assert proc.watcher.delivered(nid) == []


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not avro at all", b"bad_magic"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", b"unknown_fingerprint"),
        (
            codec.encode(
                codec.USER_CHANGE, {"user_id": "u", "kind": "user", "changed_at": now_ms()}
            ),
            b"wrong_schema",
        ),
    ],
    ids=["bad_magic", "unknown_fingerprint", "wrong_schema"],
)
def test_undecodable_records_go_to_dlq_and_processing_continues(
    proc: Harness, value: bytes, reason: bytes
) -> None:
    key = f"bad-{uuid.uuid4().hex}".encode()
    proc.publish_raw(key, value, headers=[("trace", b"t-1")])
    [headers] = wait_for(lambda: proc.watcher.dead_letters(key), what="dead letter")
    assert headers["herald.reason"] == reason
    assert headers["herald.original_topic"] == proc.topic.encode()
    assert headers["trace"] == b"t-1"
    assert {"herald.failed_at", "herald.original_partition", "herald.original_offset"} <= set(
        headers
    )
    uid = proc.user()
    nid = proc.publish(proc.request(uid, channels=["sms"]))
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(nid), what="still processing")


def test_user_change_invalidates_the_cache(proc: Harness) -> None:
    uid = proc.user()
    first = proc.publish(proc.request(uid, category="social", channels=["sms"]))
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(first))
    proc.session.execute(
        "INSERT INTO preferences (user_id, channel, category, opt_in)"
        " VALUES (%s, 'sms', '*', false)",
        (uid,),
    )
    change = codec.encode(
        codec.USER_CHANGE, {"user_id": uid, "kind": "preference", "changed_at": now_ms()}
    )
    proc.producer.produce("users.changes", change, uid.encode())
    proc.producer.flush(10)

    def dropped_after_change() -> bool:
        nid = proc.publish(proc.request(uid, category="social", channels=["sms"]))
        return bool(
            wait_for(lambda: proc.watcher.outcomes(nid), what="decision")
            == [("dropped", "opted_out", "sms")]
        )

    # The change travels through another topic: allow it a moment, far below the cache TTL.
    wait_for(dropped_after_change, timeout=10, what="opt-out seen after users.changes")


def test_replayed_request_skips_dedup_with_same_ids(proc: Harness) -> None:
    uid = proc.user()
    req = proc.request(uid, channels=["sms"])
    nid = proc.publish(req)
    wait_for(lambda: len(proc.watcher.delivered(nid)) == 1)
    proc.publish(req, headers=[("herald.replay", b"1")])
    got = wait_for(lambda: len(proc.watcher.delivered(nid)) == 2 and proc.watcher.delivered(nid))
    assert got[0][1]["delivery_id"] == got[1][1]["delivery_id"]


def test_dedup_holds_and_rate_limits_survive_a_restart(proc: Harness) -> None:
    uid = proc.user()
    req = proc.request(uid, channels=["sms"])
    nid = proc.publish(req)
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(nid))
    proc.publish(req)
    wait_for(lambda: ("dropped", "duplicate", None) in proc.watcher.outcomes(nid))
    due = now_ms() + 2000
    held = proc.publish(proc.request(uid, channels=["email"], send_at=due))
    wait_for(lambda: ("deferred", "scheduled", None) in proc.watcher.outcomes(held))
    capped = proc.user()
    for _ in range(2):  # fills the marketing cap (2 per hour in this module)
        nid_m = proc.publish(proc.request(capped, category="marketing", channels=["sms"]))
        wait_for(lambda nid_m=nid_m: ACCEPTED in proc.watcher.outcomes(nid_m))
    proc.stop()
    wait_for(lambda: now_ms() > due + 500, what="the hold to fall due while stopped")
    proc.start()
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(held), timeout=30, what="release")
    wait_for(lambda: proc.watcher.delivered(held), what="the delivery (read from its own topic)")
    assert [d["channel"] for _t, d in proc.watcher.delivered(held)] == ["email"]
    # The rate-limit window came back from the table's changelog.
    third = proc.publish(proc.request(capped, category="marketing", channels=["sms"]))
    wait_for(lambda: proc.watcher.outcomes(third) == [("dropped", "rate_limited", "sms")])
    proc.publish(req)
    wait_for(
        lambda: proc.watcher.outcomes(nid).count(("dropped", "duplicate", None)) == 2,
        timeout=30,
        what="duplicate after restart",
    )
    assert len(proc.watcher.delivered(nid)) == 1


def test_cancel_api_is_async_too() -> None:
    async def run() -> bool:
        session = connect(CASSANDRA_SETTINGS)
        try:
            return await ScheduleStore(session, "test.none").acancel(f"x-{uuid.uuid4().hex}")
        finally:
            session.cluster.shutdown()

    assert asyncio.run(run()) is False


def test_content_and_channel_gaps(proc: Harness) -> None:
    tid = f"it.smsonly.{uuid.uuid4().hex[:8]}"
    proc.session.execute(
        "INSERT INTO templates (template_id, locale, channel, body) VALUES (%s, 'en', 'sms', 'x')",
        (tid,),
    )
    uid = proc.user()
    no_template = proc.publish(proc.request(uid, template_id=tid, channels=["sms", "email"]))
    literal = proc.request(uid, channels=["sms", "email"])
    del literal["content"]["email"]
    no_content = proc.publish(literal)
    nobody = proc.user(email=None, phone=None)
    no_channel = proc.publish(proc.request(nobody))
    wait_for(lambda: ("dropped", "no_template", "email") in proc.watcher.outcomes(no_template))
    wait_for(lambda: ("dropped", "no_content", "email") in proc.watcher.outcomes(no_content))
    wait_for(lambda: proc.watcher.outcomes(no_channel) == [("dropped", "no_channel", None)])
    for nid in (no_template, no_content):
        wait_for(lambda nid=nid: ACCEPTED in proc.watcher.outcomes(nid))
        # The status and the delivery are read from two topics: the delivery may lag.
        wait_for(lambda nid=nid: proc.watcher.delivered(nid), what="the sms delivery")
        assert [d["channel"] for _t, d in proc.watcher.delivered(nid)] == ["sms"]


def test_malformed_stored_contacts_are_never_sent_to(proc: Harness) -> None:
    uid = proc.user(email="not-an-email", phone="12345", devices=(("good", "ios"),))
    proc.session.execute(
        "INSERT INTO devices_by_user (user_id, device_id, platform, device_token)"
        " VALUES (%s, 'bad', 'android', 'zz-not-a-token')",
        (uid,),
    )
    nid = proc.publish(proc.request(uid, channels=["email", "sms", "push"]))
    wait_for(lambda: ACCEPTED in proc.watcher.outcomes(nid))
    assert ("dropped", "invalid_contact", "email") in proc.watcher.outcomes(nid)
    assert ("dropped", "invalid_contact", "sms") in proc.watcher.outcomes(nid)
    assert [d["device_id"] for _t, d in proc.watcher.delivered(nid)] == ["good"]
    only_bad = proc.user(devices=())
    proc.session.execute(
        "INSERT INTO devices_by_user (user_id, device_id, platform, device_token)"
        " VALUES (%s, 'bad', 'ios', 'zz-not-a-token')",
        (only_bad,),
    )
    push = proc.publish(proc.request(only_bad, channels=["push"]))
    wait_for(lambda: proc.watcher.outcomes(push) == [("dropped", "invalid_token", "push")])
