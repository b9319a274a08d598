"""The embeddable inbox page in a real headless Chromium (Debian's, installed by `make
install`), JavaScript on: the server-rendered feed and unread badge, a new item arriving
live over SSE, "seen" for what was shown, and a click marking an item read."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cassandra.cluster import Session
from confluent_kafka.admin import AdminClient, NewTopic
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from herald.services import Service, ServiceSpec, free_port, python_module, start
from infra import topics
from infra.inbox import InboxStore, NewItem
from producers.clients import ClientStore
from tests.browser import chromium
from tests.conftest import KAFKA

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# Read and seen events go to this module's own status topic.
PREFIX = f"test.inbox-browser.{uuid.uuid4().hex[:8]}."


@pytest.fixture(scope="module")
def send_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    admin = AdminClient({"bootstrap.servers": KAFKA})
    names = [PREFIX + topics.STATUS]
    for fut in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        fut.result(timeout=30)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "HERALD_API__PORT": str(port),
        "HERALD_LINKS__BASE_URL": base,
        "HERALD_TOPIC_PREFIX": PREFIX,
        "HERALD_INBOX__STREAM_POLL_S": "0.2",
    }
    svc: Service = start(
        ServiceSpec(
            "send-api-inbox-page", python_module("producers", "api"), ready_port=port, env=env
        ),
        Path(tmp_path_factory.mktemp("send-api-inbox-page")),
    )
    try:
        yield base
    finally:
        svc.stop()
        for fut in admin.delete_topics(names).values():
            fut.result(timeout=30)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


def write(session: Session, user_id: str, title: str, at: datetime) -> str:
    item_id = f"d-{uuid.uuid4().hex}"
    item = NewItem(user_id, item_id, at, str(uuid.uuid4()), "social", title, "body", {})
    asyncio.run(InboxStore(session).write([item]))
    return item_id


def wait(browser: webdriver.Chrome, what: str, check: Any) -> Any:
    return WebDriverWait(browser, 20).until(lambda _d: check(), message=what)


def test_the_page_shows_the_feed_live_and_marks_read_on_click(
    send_api: str, browser: webdriver.Chrome, session: Session
) -> None:
    user_id = f"u-{uuid.uuid4().hex}"
    session.execute("INSERT INTO users (user_id, locale) VALUES (%s, 'en')", (user_id,))
    app = ClientStore(session).create(
        f"web-{uuid.uuid4().hex[:8]}", rate_per_s=100, burst=100, scopes={"inbox:token"}
    )
    now = datetime.now(UTC)
    older = [write(session, user_id, f"Old {i}", now - timedelta(minutes=5 - i)) for i in range(2)]
    minted = httpx.post(
        f"{send_api}/v1/users/{user_id}/feed/token",
        headers={"X-Herald-App-Key": app.client.app_key, "X-Herald-App-Secret": app.secret},
        timeout=10,
    )
    assert minted.status_code == 201, minted.text
    token = minted.json()["token"]

    browser.get(minted.json()["page_url"])
    assert browser.title == "Notifications"
    badge = browser.find_element(By.ID, "unread-badge")
    assert badge.text == "2"
    shown = [
        li.get_attribute("data-item-id")
        for li in browser.find_elements(By.CSS_SELECTOR, "#feed li")
    ]
    assert shown == older[::-1]

    wait(
        browser,
        "the stream to connect",
        lambda: browser.execute_script(
            "return document.querySelector('herald-inbox').source.readyState === 1"
        ),
    )
    new = write(session, user_id, "Ann liked your post", datetime.now(UTC))
    first = wait(
        browser,
        "the new item at the top",
        lambda: (
            (li := browser.find_element(By.CSS_SELECTOR, "#feed li")).get_attribute("data-item-id")
            == new
            and li
        ),
    )
    assert "Ann liked your post" in first.text
    wait(browser, "the badge to count it", lambda: badge.text == "3")

    first.click()
    wait(browser, "the badge after the click", lambda: badge.text == "2")
    assert "read" in (first.get_attribute("class") or "").split()

    def counts() -> dict[str, int]:
        r = httpx.get(
            f"{send_api}/v1/users/{user_id}/feed/counts",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert r.status_code == 200
        body: dict[str, int] = r.json()
        return body

    wait(
        browser, "read and seen stored", lambda: counts() == {"total": 3, "unread": 2, "unseen": 0}
    )
