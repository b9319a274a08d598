"""The in-app channel's fan-out and digests, with the in-memory stand-ins of
test_processor_pipeline: what is collected, when a window is emitted, what the digest
renders, and that a re-emission or a replay never puts an item in two digests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from processors import digests
from processors.enrichment import TemplateRow
from processors.pipeline import Incoming, Processor, Source
from processors.settings import ProcessorSettings, RateCap
from schemas import codec, ids
from schemas.events import now_ms
from tests.unit.processors.test_processor_pipeline import (
    FakeDedup,
    FakeEnricher,
    FakeProducer,
    FakeScheduler,
    user,
)

WINDOW_S = 60


@pytest.fixture
def proc() -> Processor:
    templates = {
        "liked": (TemplateRow("en", "push", "Like", None, "{{ who }} liked your post", None),),
        "likes": (
            TemplateRow(
                "en",
                "push",
                "Likes",
                None,
                "{{ count }} new: {% for i in items %}{{ i.params.who }}"
                "{% if not loop.last %}, {% endif %}{% endfor %}",
                None,
            ),
        ),
        "feed-only": (TemplateRow("en", "inapp", "Hi", None, "In the app", None),),
        # A template that declares its digest: its requests wait without naming one.
        "liked-digested": (
            TemplateRow(
                "en", "push", "Like", None, "{{ who }} liked your post", None,
                "social", WINDOW_S, "likes",
            ),
        ),
    }  # fmt: skip
    return Processor(
        ProcessorSettings(rate_caps={}, digest_max_items=2),
        producer=FakeProducer(),  # type: ignore[arg-type]
        enricher=FakeEnricher({"u1": user()}, templates),  # type: ignore[arg-type]
        dedup=FakeDedup(),  # type: ignore[arg-type]
        scheduler=FakeScheduler(),  # type: ignore[arg-type]
    )


def produced(proc: Processor) -> FakeProducer:
    return proc.producer  # type: ignore[return-value]


def request(event_id: str, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "notification_id": ids.notification_id(event_id),
        "source": "unit",
        "user_id": "u1",
        "category": "social",
        "channels": ["push"],
        "template_id": "liked",
        "created_at": now_ms(),
        **kw,
    }


def social(event_id: str, who: str, **kw: Any) -> dict[str, Any]:
    return request(
        event_id,
        params={"who": who},
        digest={"key": "social", "window_s": WINDOW_S, "template_id": "likes"},
        **kw,
    )


def src(offset: int, partition: int = 2) -> Source:
    return Source("notifications.requested", partition, offset, b"u1", {})


async def decide(
    proc: Processor, reqs: list[dict[str, Any]], table: dict[str, Any], offset: int = 0
) -> None:
    batch = [Incoming(codec.encode(codec.REQUEST, r), src(offset + i)) for i, r in enumerate(reqs)]
    await proc.handle_batch(batch, {}, None, table)


def outputs(proc: Processor, topic: str) -> list[dict[str, Any]]:
    schema = {
        "notifications.status": codec.STATUS,
        "notifications.requested": codec.REQUEST,
    }.get(topic, codec.DELIVERY)
    return [codec.decode(v, schema) for t, _k, v, _h in produced(proc).records if t == topic]


async def emit(proc: Processor, table: dict[str, Any], at_ms: int, monkeypatch: Any) -> int:
    monkeypatch.setattr("processors.pipeline.now_ms", lambda: at_ms)
    entered: list[int] = []
    n = await proc.emit_digests(table, lambda p: p == 2, entered.append)
    assert all(p == 2 for p in entered)
    return n


# -- in-app fan-out -----------------------------------------------------------------------


async def test_inapp_named_gets_one_delivery_to_the_users_feed_with_the_push_text(
    proc: Processor,
) -> None:
    await decide(proc, [request("e1", channels=["inapp"], params={"who": "Ann"})], {})
    [d] = outputs(proc, "notifications.inapp")
    assert (d["address"], d["title"], d["body"]) == ("u1", "Like", "Ann liked your post")
    assert d["delivery_id"] == ids.delivery_id(ids.notification_id("e1"), "inapp", "inapp")


async def test_every_channel_includes_the_feed_only_when_there_is_inapp_content(
    proc: Processor,
) -> None:
    await decide(proc, [request("e1", channels=[], params={"who": "Ann"})], {})
    assert outputs(proc, "notifications.inapp") == []
    await decide(proc, [request("e2", channels=[], template_id="feed-only")], {}, offset=1)
    [d] = outputs(proc, "notifications.inapp")
    assert d["body"] == "In the app"


# -- digests ------------------------------------------------------------------------------


async def test_requests_wait_in_the_digest_and_the_window_close_sends_one(
    proc: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    table: dict[str, Any] = {}
    start = now_ms()
    await decide(proc, [social(f"s{i}", who) for i, who in enumerate("ABC")], table)
    assert outputs(proc, "notifications.push.ios") == []
    statuses = outputs(proc, "notifications.status")
    assert [(s["outcome"], s["reason"]) for s in statuses] == [("digested", "social")] * 3
    entry = table["u1|social"]
    assert (entry["count"], entry["p"], len(entry["items"])) == (3, 2, 2)  # first N kept

    assert await emit(proc, table, start + 1000, monkeypatch) == 0  # window still open
    assert await emit(proc, table, entry["due"], monkeypatch) == 1
    [digest] = outputs(proc, "notifications.requested")
    assert digest["event_id"] == f"digest:u1:social:{entry['start']}"
    assert digest["template_id"] == "likes" and digest["digest"] is None
    assert table["u1|social"]["ids"] == [] and table["u1|social"]["prev"] == ["s0", "s1", "s2"]

    monkeypatch.undo()
    await decide(proc, [digest], table, offset=10)
    [d] = outputs(proc, "notifications.push.ios")[:1]
    assert d["body"] == "3 new: A, B"
    assert digests.DIGEST_META not in d["data"]


async def test_a_digest_emitted_again_after_a_crash_has_the_same_id_and_is_dropped(
    proc: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    table: dict[str, Any] = {}
    await decide(proc, [social("s1", "A"), social("s2", "B")], table)
    before = json.loads(json.dumps(table))  # the changelog's state before the clear
    due = table["u1|social"]["due"]
    await emit(proc, table, due, monkeypatch)
    await emit(proc, before, due + 500, monkeypatch)  # restarted from the older state
    first, second = outputs(proc, "notifications.requested")
    assert first["event_id"] == second["event_id"]
    monkeypatch.undo()
    await decide(proc, [first, second], table, offset=10)
    assert len(outputs(proc, "notifications.push.ios")) == 2  # one digest, two iPhones
    assert ("dropped", "duplicate") in [
        (s["outcome"], s["reason"]) for s in outputs(proc, "notifications.status")
    ]


async def test_an_item_replayed_after_its_digest_left_is_not_collected_again(
    proc: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    table: dict[str, Any] = {}
    await decide(proc, [social("s1", "A")], table)
    await emit(proc, table, table["u1|social"]["due"], monkeypatch)
    monkeypatch.undo()
    # Its batch was never acknowledged: the record comes again under a new position.
    proc.dedup.rows.clear()  # type: ignore[attr-defined]
    await decide(proc, [social("s1", "A")], table, offset=20)
    assert table["u1|social"]["ids"] == []


async def test_items_after_the_window_closed_open_the_next_window(
    proc: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    table: dict[str, Any] = {}
    await decide(proc, [social("s1", "A")], table)
    due = table["u1|social"]["due"]
    monkeypatch.setattr("processors.pipeline.now_ms", lambda: due + 1)
    await decide(proc, [social("s2", "B")], table, offset=1)
    assert [i["event_id"] for i in table["u1|social"]["late"]] == ["s2"]
    await emit(proc, table, due + 2, monkeypatch)
    entry = table["u1|social"]
    assert entry["ids"] == ["s2"] and entry["start"] == due + 2
    [digest] = outputs(proc, "notifications.requested")
    assert [
        i["event_id"] for i in json.loads(digest["metadata"][digests.DIGEST_META])["items"]
    ] == ["s1"]


@pytest.mark.parametrize(
    "urgent", [{"priority": "high"}, {"category": "security"}], ids=["high", "mandatory"]
)
async def test_urgent_requests_never_wait_in_a_digest(
    proc: Processor, urgent: dict[str, Any]
) -> None:
    table: dict[str, Any] = {}
    await decide(proc, [social("s1", "A", **urgent)], table)
    assert table == {}
    sent = outputs(proc, "notifications.push.ios") + outputs(
        proc, "notifications.push.ios.priority"
    )
    assert [d["body"] for d in sent] == ["A liked your post"] * 2


async def test_a_digest_obeys_opt_outs_when_it_is_sent(
    proc: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    table: dict[str, Any] = {}
    await decide(proc, [social("s1", "A")], table)
    await emit(proc, table, table["u1|social"]["due"], monkeypatch)
    monkeypatch.undo()
    proc.enricher.known_users["u1"] = user(  # type: ignore[attr-defined]
        preferences={("push", "social"): False}
    )
    [digest] = outputs(proc, "notifications.requested")
    await decide(proc, [digest], table, offset=5)
    assert outputs(proc, "notifications.push.ios") == []
    assert ("dropped", "opted_out") in [
        (s["outcome"], s["reason"]) for s in outputs(proc, "notifications.status")
    ]


async def test_entries_of_partitions_owned_elsewhere_are_left_alone(
    proc: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    table: dict[str, Any] = {}
    await decide(proc, [social("s1", "A")], table)
    table["u1|social"]["p"] = 4
    assert await emit(proc, table, table["u1|social"]["due"] + 1, monkeypatch) == 0
    assert table["u1|social"]["count"] == 1


async def test_a_template_that_declares_a_digest_collects_its_requests(
    proc: Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    table: dict[str, Any] = {}
    reqs = [
        request(f"t{i}", template_id="liked-digested", params={"who": w})
        for i, w in enumerate("XY")
    ]
    await decide(proc, reqs, table)
    assert table["u1|social"]["count"] == 2
    await emit(proc, table, table["u1|social"]["due"], monkeypatch)
    [digest] = outputs(proc, "notifications.requested")
    assert digest["template_id"] == "likes"
    monkeypatch.undo()
    await decide(proc, [digest], table, offset=10)
    assert [d["body"] for d in outputs(proc, "notifications.push.ios")] == ["2 new: X, Y"] * 2


def test_a_full_window_closes_at_once_and_the_next_item_waits_for_the_next() -> None:
    entry = None
    for i in range(3):
        item = {"event_id": f"f{i}", "window_s": 3600, "head": {}}
        entry, _ = digests.add(entry, "u1", "k", 0, item, 1_000 + i, max_items=2, max_ids=2)
    assert entry is not None
    assert entry["ids"] == ["f0", "f1"] and entry["due"] == 1_001
    assert [i["event_id"] for i in entry["late"]] == ["f2"]
    nxt = digests.after_emit(entry, 2_000, keep_prev_s=60, max_items=2, max_ids=2)
    assert nxt["ids"] == ["f2"] and nxt["prev"] == ["f0", "f1"] and nxt["due"] == 2_000 + 3_600_000


async def test_quiet_hours_and_rate_caps_apply_to_the_digest_as_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    liked = TemplateRow("en", "push", "Like", None, "{{ who }} liked your post", None)
    likes = TemplateRow("en", "push", "Likes", None, "{{ count }} new", None)
    scheduler = FakeScheduler()
    now = datetime.now(UTC)
    minute = now.hour * 60 + now.minute  # quiet from an hour ago to an hour from now
    quiet = {"quiet_start": (minute - 60) % 1440, "quiet_end": (minute + 60) % 1440}
    users = {"u1": user(), "u2": user("u2", **quiet)}
    proc = Processor(
        ProcessorSettings(rate_caps={"social": RateCap(limit=1, window_s=3600)}),
        producer=FakeProducer(),  # type: ignore[arg-type]
        enricher=FakeEnricher(users, {"liked": (liked,), "likes": (likes,)}),  # type: ignore[arg-type]
        dedup=FakeDedup(),  # type: ignore[arg-type]
        scheduler=scheduler,  # type: ignore[arg-type]
    )
    table: dict[str, Any] = {}
    # u1: two keys, so two digests against a cap of one; u2: a digest in quiet hours.
    reqs = [
        social("a", "A"),
        request(
            "b",
            params={"who": "B"},
            digest={"key": "other", "window_s": 60, "template_id": "likes"},
        ),
        social("c", "C", user_id="u2"),
    ]
    await decide(proc, reqs, table)
    for entry in table.values():
        entry["p"] = 2
    due = max(e["due"] for e in table.values())
    assert await emit(proc, table, due, monkeypatch) == 3
    monkeypatch.undo()
    sent = outputs(proc, "notifications.requested")
    await decide(proc, sent, table, offset=10)
    statuses = [
        (s["user_id"], s["outcome"], s["reason"]) for s in outputs(proc, "notifications.status")
    ]
    assert ("u1", "dropped", "rate_limited") in statuses
    assert len(outputs(proc, "notifications.push.ios")) == 2  # one digest, two iPhones
    assert [eid for eid in scheduler.held if eid.startswith("digest:u2:")]  # held till morning


async def test_an_items_table_write_is_durable_before_its_event_id_is_recorded(
    proc: Processor,
) -> None:
    # A crash between recording the id and the changelog flush would lose the item: its
    # redelivered copy is skipped as already done (same id, same position).
    order: list[str] = []
    dedup = proc.dedup
    record = dedup.mark

    async def mark(rows: Any) -> None:
        order.append("event ids recorded")
        await record(rows)

    async def flush() -> None:
        order.append("tables durable")

    dedup.mark = mark  # type: ignore[method-assign]
    batch = [Incoming(codec.encode(codec.REQUEST, social("e1", "ann")), src(0))]
    await proc.handle_batch(batch, {}, None, {}, tables_durable=flush)
    assert order == ["tables durable", "event ids recorded"]
