"""Through the send API into the real pipeline: a scheduled send arrives after its time and
not before, a canceled one never arrives, a resubmitted one arrives once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cassandra.cluster import Session

from herald.bench.scenario import start_pipeline
from herald.bench.services import Pipeline
from producers.api import Intake, create_app
from producers.clients import ClientStore, NewClient
from producers.settings import IntakeSettings
from schemas import ids
from tests.integration.producers.intakekit import KAFKA, uid

pytestmark = pytest.mark.e2e

PHONE = "+14155550188"
# Its own topic family: pipelines of concurrent test runs never see these requests.
PREFIX = "e2e-intake."


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    pipe = start_pipeline(KAFKA, "e2e-intake", topic_prefix=PREFIX)
    yield pipe
    pipe.stop()


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    intake = Intake(IntakeSettings(topic_prefix=PREFIX))
    await intake.start()
    transport = httpx.ASGITransport(app=create_app(intake.settings, intake))
    async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
        yield client
    await intake.close()


def _sms_ledger(pipeline: Pipeline, delivery_ids: set[str]) -> list[dict[str, Any]]:
    ledger = httpx.get(f"{pipeline.control_url}/ledger", timeout=10).json()
    return [e for e in ledger if e["delivery_id"] in delivery_ids]


async def test_scheduled_canceled_and_resubmitted_sends(
    pipeline: Pipeline, api: httpx.AsyncClient, session: Session
) -> None:
    client: NewClient = ClientStore(session).create(
        "e2e-intake-" + uid(), scopes={"contacts:write"}
    )
    h = {"X-Herald-App-Key": client.client.app_key, "X-Herald-App-Secret": client.secret}
    user = uid()
    r = await api.put(f"/v1/users/{user}", json={"phone": PHONE, "locale": "en"}, headers=h)
    assert r.status_code == 200, r.text

    send_at = datetime.now(UTC) + timedelta(seconds=6)

    def req(text: str) -> dict[str, Any]:
        return {
            "user_id": user,
            "category": "transactional",
            "channels": ["sms"],
            "content": {"sms": {"body": text}},
            "send_at": send_at.isoformat(),
        }

    kept_key, canceled_key = f"kept-{uuid.uuid4()}", f"canceled-{uuid.uuid4()}"
    for _ in range(2):  # the same Idempotency-Key twice: delivered once
        r = await api.post(
            "/v1/notifications", json=req("kept"), headers={**h, "Idempotency-Key": kept_key}
        )
        assert r.status_code == 202, r.text
    kept_id = r.json()["event_id"]
    r = await api.post(
        "/v1/notifications", json=req("canceled"), headers={**h, "Idempotency-Key": canceled_key}
    )
    assert r.status_code == 202, r.text
    canceled_id = r.json()["event_id"]

    # The processor holds it once it has read it; until then there is nothing to cancel.
    deadline = time.monotonic() + 20
    while True:
        r = await api.delete(f"/v1/notifications/{canceled_id}", headers=h)
        if r.status_code == 200:
            break
        assert r.status_code == 404 and time.monotonic() < deadline, r.text
        await asyncio.sleep(0.2)

    kept = ids.delivery_id(ids.notification_id(kept_id), "sms", "sms")
    canceled = ids.delivery_id(ids.notification_id(canceled_id), "sms", "sms")
    deadline = time.monotonic() + 60
    while not _sms_ledger(pipeline, {kept}):
        assert time.monotonic() < deadline, "the scheduled SMS never arrived"
        await asyncio.sleep(0.3)
    # Both were due at the same instant: a canceled one that slipped through would arrive
    # within the same few seconds.
    await asyncio.sleep(3)
    received = _sms_ledger(pipeline, {kept, canceled})
    assert [e["delivery_id"] for e in received] == [kept]
    assert received[0]["body"] == "kept"
    assert received[0]["address"] == PHONE
    assert received[0]["received_at_ms"] >= int(send_at.timestamp() * 1000)

    # The status endpoint tells the caller what happened to each.
    deadline = time.monotonic() + 20
    while True:
        status = (await api.get(f"/v1/notifications/{kept_id}", headers=h)).json()
        if [d["state"] for d in status["deliveries"]] == ["sent"]:
            break
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.3)
    assert status["scheduled"] == "released"
    assert status["deliveries"][0]["channel"] == "sms"
    status = (await api.get(f"/v1/notifications/{canceled_id}", headers=h)).json()
    assert status["scheduled"] == "canceled" and status["deliveries"] == []
