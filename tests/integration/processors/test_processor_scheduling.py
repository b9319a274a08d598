"""The scheduler's store on the real Cassandra: bursts of holds, release order, cancel."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from infra.cassandra import connect
from infra.scheduling import ScheduleStore
from tests.conftest import CASSANDRA_SETTINGS

pytestmark = pytest.mark.integration


async def test_burst_of_holds_then_release_in_due_order_per_user() -> None:
    session = connect(CASSANDRA_SETTINGS)
    try:
        store = ScheduleStore(session, f"test.sched.{uuid.uuid4().hex[:10]}")
        now = int(time.time() * 1000)
        # 400 holds at once (a quiet-hours burst): the cursor row must not become a
        # point of contention (it did, with one lightweight transaction per hold).
        held = [
            (f"ev-{i}-{uuid.uuid4().hex[:6]}", f"user-{i % 40}", now + 1500 + (i % 7) * 10)
            for i in range(400)
        ]
        results = await asyncio.gather(
            *(
                store.hold(event_id=e, user_id=u, payload=e.encode(), due_at_ms=d, reason="s")
                for e, u, d in held
            )
        )
        assert all(results)
        canceled = held[0][0]
        assert await store.acancel(canceled) is True

        published: list[tuple[str, bytes]] = []

        async def publish(user_id: str, payload: bytes, _headers: object) -> None:
            published.append((user_id, payload))

        assert await store.release_due(publish, now_ms=now) == 0  # nothing due yet
        total = await store.release_due(publish, now_ms=now + 5000)
        assert total == len(held) - 1
        assert await store.release_due(publish, now_ms=now + 5000) == 0  # released once
        assert canceled.encode() not in {p for _u, p in published}
        due_of = {e.encode(): d for e, _u, d in held}
        for user in {u for _e, u, _d in held}:
            dues = [due_of[p] for u, p in published if u == user]
            assert dues == sorted(dues), f"{user} released out of due order"
        assert await store.state(held[1][0]) == "released"
        assert await store.state(canceled) == "canceled"
    finally:
        session.cluster.shutdown()
