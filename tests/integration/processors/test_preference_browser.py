"""The preference page in a real headless Chromium (Debian's, installed by `make install`),
with JavaScript disabled: open the signed link, untick marketing by email, save; the next
marketing email to that user is dropped as opted_out by the running processor."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from herald.services import Service, ServiceSpec, free_port, python_module, start
from infra.links import LinkSettings, preferences_url
from infra.settings import DEV_PROFILE
from tests.browser import chromium
from tests.integration.processors.prockit import Harness
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture(scope="module")
def send_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "HERALD_API__PORT": str(port),
        "HERALD_LINKS__BASE_URL": base,
        "HERALD_PROFILE": DEV_PROFILE,
    }
    svc: Service = start(
        ServiceSpec("send-api", python_module("producers", "api"), ready_port=port, env=env),
        tmp_path_factory.mktemp("send-api"),
    )
    try:
        yield base
    finally:
        svc.stop()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    # The page must work without JavaScript, so the test runs without it.
    with chromium(javascript=False) as driver:
        yield driver


def test_unticking_marketing_email_drops_the_next_marketing_email(
    proc: Harness, send_api: str, browser: webdriver.Chrome
) -> None:
    uid = proc.user()
    email = {"channels": ["email"], "category": "marketing"}
    nid = proc.publish(proc.request(uid, **email))
    wait_for(lambda: proc.watcher.delivered(nid), what="a marketing email before opting out")

    browser.get(preferences_url(uid, LinkSettings(base_url=send_api)))
    assert browser.title == "Your notification preferences"
    box = browser.find_element(By.ID, "pref-email-marketing")
    label = browser.find_element(By.CSS_SELECTOR, "label[for='pref-email-marketing']")
    assert label.get_attribute("textContent") == "Marketing by Email"  # named for screen readers
    assert box.is_selected()
    box.click()
    assert not box.is_selected()
    browser.find_element(By.XPATH, "//button[normalize-space()='Save preferences']").click()

    WebDriverWait(browser, 15).until(
        expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "[role=status]"), "Your preferences are saved."
        )
    )
    assert not browser.find_element(By.ID, "pref-email-marketing").is_selected()
    assert browser.find_element(By.ID, "pref-email-transactional").is_selected()

    nid = proc.publish(proc.request(uid, **email))
    wait_for(
        lambda: ("dropped", "opted_out", "email") in proc.watcher.outcomes(nid),
        what=f"opted_out in {proc.watcher.outcomes(nid)}",
    )
