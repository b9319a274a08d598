"""Recurring schedules fire with deterministic event ids and never twice across restarts."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cassandra.cluster import Session

from herald.services import ServiceSpec, python_module, start
from infra import topics
from producers.publisher import AsyncPublisher
from producers.schedules import RecurringScheduler, RecurringStore, event_id_for
from schemas import codec
from tests.integration.producers.intakekit import KAFKA, records_for, uid

pytestmark = pytest.mark.integration


def _request(user: str) -> dict[str, Any]:
    return {
        "user_id": user,
        "category": "marketing",
        "channels": ["email"],
        "content": {"email": {"subject": "Digest", "body": "This week"}},
    }


async def test_firings_are_deterministic_and_survive_restart(
    session: Session, apublisher: AsyncPublisher
) -> None:
    owner, user = uid("owner"), uid()
    store = RecurringStore(session)
    t0 = datetime(2026, 3, 2, 9, 0, 20, tzinfo=UTC)
    s = await store.create(
        owner, "* * * * *", _request(user), now=t0 - timedelta(minutes=10), schedule_id="every-min"
    )
    first = RecurringScheduler(store, apublisher, owners=[owner])

    # Ten minutes were missed: only the latest firing is sent.
    [fired] = await first.tick(now=t0)
    assert fired.event_id == event_id_for(owner, s.schedule_id, t0.replace(second=0))
    assert fired.event_id == f"cron:{owner}:every-min:2026-03-02T09:00:00+00:00"
    assert await first.tick(now=t0 + timedelta(seconds=5)) == []

    # A restarted scheduler (new objects, state from Cassandra) does not fire it again.
    restarted = RecurringScheduler(RecurringStore(session), apublisher, owners=[owner])
    assert await restarted.tick(now=t0 + timedelta(seconds=10)) == []
    [next_one] = await restarted.tick(now=t0 + timedelta(seconds=45))
    assert next_one.event_id == f"cron:{owner}:every-min:2026-03-02T09:01:00+00:00"

    # Down for an hour: the latest missed firing is older than the grace, so it is skipped.
    late = t0 + timedelta(hours=1, minutes=20)
    strict = RecurringScheduler(
        store, apublisher, owners=[owner], misfire_grace=timedelta(seconds=10)
    )
    assert await strict.tick(now=late) == []
    stored = await store.get(owner, s.schedule_id)
    assert stored is not None and stored.last_fired_at == late.replace(second=0)

    since = int(time.time() * 1000) - 5000
    records = records_for(topics.REQUESTED, user, since_ms=since, count=2, expect=codec.REQUEST)
    assert [r["event_id"] for r in records] == [fired.event_id, next_one.event_id]
    assert records[0]["source"] == owner
    assert records[0]["metadata"]["herald.schedule_id"] == "every-min"
    await store.delete(owner, s.schedule_id)


async def test_crash_before_recording_republishes_the_same_event_id(
    session: Session, apublisher: AsyncPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, user = uid("owner"), uid()
    store = RecurringStore(session)
    t0 = datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC)
    await store.create(owner, "*/5 * * * *", _request(user), now=t0 - timedelta(minutes=1))

    async def crash(*_: Any) -> bool:
        raise ConnectionError("Cassandra went away")

    crashing = RecurringScheduler(RecurringStore(session), apublisher, owners=[owner])
    monkeypatch.setattr(crashing.store, "mark_fired", crash)
    [before] = await crashing.tick(now=t0)
    [after] = await RecurringScheduler(store, apublisher, owners=[owner]).tick(now=t0)
    assert before.event_id == after.event_id
    assert before.notification_id == after.notification_id


async def test_deleted_schedule_does_not_fire(session: Session, apublisher: AsyncPublisher) -> None:
    owner = uid("owner")
    store = RecurringStore(session)
    t0 = datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC)
    s = await store.create(owner, "* * * * *", _request(uid()), now=t0 - timedelta(minutes=1))
    assert await store.delete(owner, s.schedule_id)
    assert await RecurringScheduler(store, apublisher, owners=[owner]).tick(now=t0) == []
    assert await store.get(owner, s.schedule_id) is None


async def test_scheduler_process_killed_and_restarted_fires_once(
    session: Session, tmp_path: Path
) -> None:
    owner, user = uid("owner"), uid()
    store = RecurringStore(session)
    since = int(time.time() * 1000) - 1000
    # Created two minutes ago: the current minute's firing is due as soon as it starts.
    past = datetime.now(UTC) - timedelta(minutes=2)
    a = await store.create(owner, "* * * * *", _request(user), now=past, schedule_id="a")
    spec = ServiceSpec(
        "scheduler",
        python_module("producers", "scheduler"),
        env={
            "HERALD_SCHEDULER__OWNERS": json.dumps([owner]),
            "HERALD_SCHEDULER__INTERVAL_S": "0.2",
            "HERALD_KAFKA__BOOTSTRAP_SERVERS": KAFKA.bootstrap_servers,
        },
    )
    svc = start(spec, tmp_path)
    try:
        got = records_for(topics.REQUESTED, user, since_ms=since, count=1, timeout=30)
        assert got, svc.log_tail()
        first = got[0]
        assert first["event_id"].startswith(f"cron:{owner}:a:")
        deadline = time.monotonic() + 20
        while (await store.get(owner, "a")).last_fired_at is None:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, svc.log_tail()
            await asyncio.sleep(0.1)
    finally:
        svc.kill()

    # Schedule "b" sorts after "a": once b fired, the restarted process has passed over a.
    await store.create(owner, "* * * * *", _request(user), now=past, schedule_id="b")
    svc = start(spec, tmp_path)
    try:
        records = records_for(
            topics.REQUESTED,
            user,
            since_ms=since,
            count=100,
            timeout=30,
            until=lambda r: r["event_id"].startswith(f"cron:{owner}:b:"),
        )
    finally:
        svc.stop()
    ids = [r["event_id"] for r in records]
    assert any(i.startswith(f"cron:{owner}:b:") for i in ids), svc.log_tail()
    # A firing of a later minute is fine; the same firing twice is not.
    assert len(ids) == len(set(ids)), ids
    await store.delete(owner, a.schedule_id)
    await store.delete(owner, "b")
