"""The inapp sender on the real Kafka and Cassandra: a delivery lands in the user's feed
once, through the same delivery ledger as every channel; a redelivered record changes
nothing and the `sent` status event is published for it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cassandra.cluster import Session

from infra.settings import CassandraSettings, KafkaSettings
from schemas.channels import Channel
from senders.runtime import SenderRuntime
from senders.service import sender
from senders.settings import SenderSettings
from tests.conftest import CASSANDRA_PORT, KAFKA
from tests.integration.senders.conftest import (
    PREFIX,
    TopicTap,
    ledger_row,
    make_delivery,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
async def runtime() -> AsyncIterator[SenderRuntime]:
    settings = SenderSettings(
        kafka=KafkaSettings(bootstrap_servers=KAFKA),
        cassandra=CassandraSettings(port=CASSANDRA_PORT),
        group_prefix=f"test-sender-inapp-{uuid.uuid4().hex[:8]}",
        start_at="latest",
        topic_prefix=PREFIX,
        session_timeout_ms=6000,
        metrics_enabled=False,
    )
    async with sender(settings, [Channel.INAPP]) as rt:
        task = asyncio.create_task(rt.run())
        async with asyncio.timeout(60):
            await rt.wait_ready()
        yield rt
        rt.stop()
        await asyncio.wait_for(task, 30)


def feed(session: Session, user_id: str) -> list[dict[str, Any]]:
    return list(session.execute("SELECT * FROM inbox_items WHERE user_id = %s", (user_id,)))


async def test_an_inapp_delivery_is_written_to_the_feed_once(
    runtime: SenderRuntime, produce: Any, cassandra: Session
) -> None:
    tap = TopicTap(["notifications.status"])
    try:
        user_id = f"u-{uuid.uuid4().hex}"
        created = int(datetime.now(UTC).timestamp() * 1000)
        d = make_delivery(
            "inapp",
            user_id=user_id,
            address=user_id,
            title="Ann liked your post",
            body="Tap to see it",
            category="social",
            data={"post": "p-1"},
            created_at=created,
        )
        produce("notifications.inapp", d)
        produce("notifications.inapp", d)  # the same record again, e.g. after a replay
        [row] = await asyncio.to_thread(wait_for, lambda: feed(cassandra, user_id), 20, "feed")
        assert (row["item_id"], row["title"], row["body"], row["category"]) == (
            d["delivery_id"],
            "Ann liked your post",
            "Tap to see it",
            "social",
        )
        assert row["data"] == {"post": "p-1"}
        assert int(row["created_at"].replace(tzinfo=UTC).timestamp() * 1000) == created
        sent = await asyncio.to_thread(
            wait_for,
            lambda: tap.where(delivery_id=d["delivery_id"], outcome="sent"),
            20,
            "sent status",
        )
        assert {e["provider"] for _t, _k, _h, e in sent} == {"inapp"}
        await asyncio.to_thread(
            wait_for,
            lambda: (ledger_row(cassandra, d) or {}).get("published"),
            20,
            "ledger published",
        )
        row = ledger_row(cassandra, d)
        assert row is not None and row["state"] == "sent"
        await asyncio.sleep(1.0)  # the second record is handled by now
        assert len(feed(cassandra, user_id)) == 1
        assert (
            len({e["status_id"] for _t, _k, _h, e in tap.where(delivery_id=d["delivery_id"])}) == 1
        )
    finally:
        tap.close()
