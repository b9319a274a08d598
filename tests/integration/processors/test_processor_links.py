"""The real processor with the template and unsubscribe features: email carries signed
unsubscribe links (never security mail), the one-click POST makes the next request of that
category drop as opted_out, and a new template version is used by the next request, all
without restarting the processor."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from infra.links import LIST_UNSUBSCRIBE
from producers.api import Intake, create_app
from producers.publisher import AsyncPublisher
from producers.settings import IntakeSettings
from producers.templates import TemplateStore
from tests.conftest import KAFKA_SETTINGS
from tests.integration.processors.prockit import Harness
from tests.support import wait_for

pytestmark = pytest.mark.integration


def delivery(proc: Harness, nid: str) -> dict[str, Any]:
    found = wait_for(lambda: proc.watcher.delivered(nid), what="a delivery")
    return dict(found[0][1])


def post_one_click(url: str) -> int:
    async def go() -> int:
        intake = Intake(IntakeSettings())
        await intake.start()
        try:
            transport = httpx.ASGITransport(app=create_app(intake.settings, intake))
            async with httpx.AsyncClient(transport=transport, base_url="http://h") as client:
                r = await client.post(
                    urlsplit(url).path,
                    content=b"List-Unsubscribe=One-Click",
                    headers={"content-type": "application/x-www-form-urlencoded"},
                )
                return r.status_code
        finally:
            await intake.close()

    return asyncio.run(go())


def test_one_click_unsubscribe_drops_the_next_request_of_that_category(proc: Harness) -> None:
    uid = proc.user()
    email = {"channels": ["email"]}
    nid = proc.publish(proc.request(uid, category="marketing", **email))
    sent = delivery(proc, nid)
    url = sent["data"][LIST_UNSUBSCRIBE]
    assert "/u/" in url and "Unsubscribe" in sent["html"] and url in sent["body"]

    security = delivery(proc, proc.publish(proc.request(uid, category="security", **email)))
    assert LIST_UNSUBSCRIBE not in security["data"] and "/preferences/" not in security["body"]

    assert post_one_click(url) == 200
    nid = proc.publish(proc.request(uid, category="marketing", **email))
    wait_for(
        lambda: ("dropped", "opted_out", "email") in proc.watcher.outcomes(nid),
        what=f"opted_out in {proc.watcher.outcomes(nid)}",
    )
    # Another category is still sent.
    assert delivery(proc, proc.publish(proc.request(uid, category="social", **email)))


def test_a_new_template_version_is_used_by_the_next_request(proc: Harness) -> None:
    tid = f"it-{uuid.uuid4().hex[:8]}"

    def save(text: str, create: bool) -> None:
        body = {"variants": [{"channel": "sms", "locale": "en", "body": text}]}

        async def go() -> None:
            async with AsyncPublisher(KAFKA_SETTINGS, client="test") as pub:
                store = TemplateStore(proc.session, pub)
                await (store.create if create else store.add_version)(tid, body, author="t")

        asyncio.run(go())

    uid = proc.user()
    sms = {"channels": ["sms"], "template_id": tid, "content": {}}
    save("first", create=True)
    assert delivery(proc, proc.publish(proc.request(uid, **sms)))["body"] == "first"
    save("second", create=False)
    assert delivery(proc, proc.publish(proc.request(uid, **sms)))["body"] == "second"
    pinned = {**sms, "template_id": f"{tid}@1"}
    assert delivery(proc, proc.publish(proc.request(uid, **pinned)))["body"] == "first"
