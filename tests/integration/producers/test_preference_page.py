"""The preference page over HTTP (no browser): signed link, CSRF, saving every cell."""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import httpx
import pytest
from cassandra.cluster import Session

from infra.links import Link, preferences_url, sign
from producers.api import Intake
from producers.contacts import Directory
from tests.integration.producers.intakekit import uid

pytestmark = pytest.mark.integration
FORM = {"content-type": "application/x-www-form-urlencoded"}


def cells(html: str) -> dict[str, bool]:
    return {
        m[1]: m[2] is not None
        for m in re.finditer(r'name="(pref:[a-z]+:[a-z]+)" value="on"( checked)?', html)
    }


async def test_page_shows_and_saves_preferences(
    api: httpx.AsyncClient, intake: Intake, directory: Directory, session: Session
) -> None:
    user = uid()
    await directory.set_user(user, email="ann@example.com", timezone="Asia/Seoul")
    await directory.set_preference(user, "sms", "marketing", False)
    path = urlsplit(preferences_url(user, intake.settings.links)).path

    page = await api.get(path)
    assert page.status_code == 200
    assert 'lang="en"' in page.text and "<caption>" in page.text
    assert "script" not in page.text  # works without JavaScript: there is none
    shown = cells(page.text)
    assert shown["pref:sms:marketing"] is False and shown["pref:email:marketing"] is True
    assert len(shown) == 12  # 4 channels (push, sms, email, in-app) x 3 categories
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf and api.cookies.get("herald_csrf") == csrf[1]

    keep = [k for k, on in shown.items() if on and k != "pref:email:marketing"]
    form = "&".join([f"csrf={csrf[1]}", *(f"{k}=on" for k in keep)])
    form += "&quiet_start=22:00&quiet_end=07:00"
    forged = await api.post(path, content=form.replace(csrf[1], "forged"), headers=FORM)
    assert forged.status_code == 403
    cross_site = await api.post(
        path, content=form, headers={**FORM, "origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403

    saved = await api.post(path, content=form, headers=FORM)
    assert saved.status_code == 303 and saved.headers["location"].endswith("?saved=1")
    stored = await directory.get_user(user)
    assert stored is not None and stored["quiet_hours"] == "22:00-07:00"
    prefs = {(p["channel"], p["category"]): p["opt_in"] for p in stored["preferences"]}
    assert prefs[("email", "marketing")] is False and prefs[("sms", "marketing")] is False
    assert prefs[("email", "transactional")] is True
    after = await api.get(saved.headers["location"])
    assert 'role="status">Your preferences are saved.' in after.text
    assert cells(after.text)["pref:email:marketing"] is False


async def test_expired_or_foreign_links_are_refused(api: httpx.AsyncClient, intake: Intake) -> None:
    secret = intake.settings.links.secret
    expired = sign(Link("preferences", uid(), int(time.time()) - 1), secret)
    r = await api.get(f"/preferences/{expired}")
    assert r.status_code == 400 and "expired" in r.text
    unsubscribe = sign(Link("unsubscribe", uid(), int(time.time()) + 60, "email", "x"), secret)
    assert (await api.get(f"/preferences/{unsubscribe}")).status_code == 400
