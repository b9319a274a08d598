"""One-click unsubscribe and the Twilio inbound webhook, through the send API against the
real Kafka and Cassandra."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
import pytest
from cassandra.cluster import Session
from pydantic import SecretStr

from infra.links import unsubscribe_url
from producers.api import Intake
from producers.contacts import Directory
from producers.pages import twilio_signature
from producers.settings import SmsInboundSection
from tests.integration.producers.intakekit import changes_for, uid

pytestmark = pytest.mark.integration

WEBHOOK = "http://herald/webhooks/twilio/sms"


def opt_ins(session: Session, user_id: str) -> dict[tuple[str, str], bool]:
    rows = session.execute(
        "SELECT channel, category, opt_in FROM preferences WHERE user_id = %s", (user_id,)
    )
    return {(r["channel"], r["category"]): r["opt_in"] for r in rows}


async def test_one_click_post_opts_out_idempotently(
    api: httpx.AsyncClient, intake: Intake, directory: Directory, session: Session
) -> None:
    user = uid()
    await directory.set_user(user, email="ann@example.com")
    path = urlsplit(unsubscribe_url(user, "email", "marketing", intake.settings.links)).path

    page = await api.get(path)
    assert page.status_code == 200 and 'method="post"' in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert opt_ins(session, user) == {}  # a GET (link scanner) never unsubscribes
    assert (await api.post(path, content=b"")).status_code == 400

    since = int(time.time() * 1000)
    one_click = {"content-type": "application/x-www-form-urlencoded"}
    for _ in range(2):
        r = await api.post(path, content=b"List-Unsubscribe=One-Click", headers=one_click)
        assert r.status_code == 200 and "no more marketing messages by Email" in r.text
    assert opt_ins(session, user) == {("email", "marketing"): False}
    multipart = (
        b'--b\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        b"One-Click\r\n--b--\r\n"
    )
    social = urlsplit(unsubscribe_url(user, "email", "social", intake.settings.links)).path
    r = await api.post(
        social, content=multipart, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert r.status_code == 200
    assert opt_ins(session, user)[("email", "social")] is False
    assert changes_for(user, since_ms=since, count=3)[0]["kind"] == "preference"

    forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert (await api.post(forged, content=b"List-Unsubscribe=One-Click")).status_code == 400


async def twilio(
    api: httpx.AsyncClient, params: dict[str, str], token: str = "tw-token"
) -> httpx.Response:
    sig = twilio_signature(WEBHOOK, list(params.items()), token)
    return await api.post("/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": sig})


async def test_sms_stop_start_help(
    api: httpx.AsyncClient,
    intake: Intake,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        intake.settings,
        "sms_inbound",
        SmsInboundSection(twilio_auth_token=SecretStr("tw-token"), public_url=WEBHOOK),
    )
    user = uid()
    phone = f"+1415555{int(time.time() * 1000) % 10000:04d}"
    await intake.directory.set_user(user, phone=phone)  # the API's contact key
    base = {"From": phone, "To": "+15005550006", "MessageSid": "SM1", "AccountSid": "AC1"}

    r = await twilio(api, {**base, "Body": " stop "})
    assert r.status_code == 200 and "<Message>You are unsubscribed" in r.text
    assert opt_ins(session, user) == {("sms", "*"): False}
    r = await twilio(api, {**base, "Body": "START"})
    assert "<Message>You are resubscribed" in r.text
    assert opt_ins(session, user) == {("sms", "*"): True}
    r = await twilio(api, {**base, "Body": "help"})
    assert "Reply STOP to unsubscribe" in r.text
    assert opt_ins(session, user) == {("sms", "*"): True}
    r = await twilio(api, {**base, "Body": "thanks!"})
    assert r.status_code == 200 and "<Message>" not in r.text

    assert (await twilio(api, {**base, "Body": "STOP"}, token="wrong")).status_code == 403
    assert opt_ins(session, user) == {("sms", "*"): True}
